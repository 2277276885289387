package payment

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ProviderName names a payment provider on the wire ("wxpay", "alipay").
type ProviderName string

// The providers kioskpay supports.
const (
	WxPay  ProviderName = "wxpay"
	Alipay ProviderName = "alipay"
)

// Provider is one payment provider account (one merchant at one provider),
// reached through the provider's official SDK.
//
// Every method either returns a definite answer or an error. An error is a
// *RejectedError when the provider definitely refused the call; any other
// error (network, timeout, 5xx, rate limit, bad response signature) means the
// outcome is unknown and the caller must ask again later. IsUnknown tells
// the two apart.
type Provider interface {
	// Name reports which provider this is.
	Name() ProviderName

	// Create places a scan-to-pay order (WeChat Pay Native, Alipay precreate)
	// and returns the content to encode in the QR code. Creating the same
	// out_trade_no again with identical parameters returns a valid QR for
	// the same order; different parameters are rejected by the provider.
	Create(ctx context.Context, o Order) (Created, error)

	// Query reports the order's state at the provider.
	Query(ctx context.Context, outTradeNo string) (Status, error)

	// Close invalidates the order's QR code (WeChat close, Alipay cancel or
	// close). When the order turned out to be paid in the meantime, the
	// result says so instead of returning an error: WeChat ORDERPAID sets
	// Paid; an Alipay cancel that refunded a payment sets Refunded.
	Close(ctx context.Context, outTradeNo string) (Closed, error)

	// Refund returns money for a paid order. It is idempotent by
	// OutRefundNo: repeating a refund with the same number never pays out
	// twice. Partial amounts are allowed.
	Refund(ctx context.Context, r RefundRequest) (RefundStatus, error)

	// QueryRefund reports the progress of a refund made with Refund.
	QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (RefundStatus, error)

	// ParseNotify verifies a raw provider notification (the HTTP headers and
	// body the provider POSTed to notify_url) and decodes it. A notification
	// that fails verification returns an error and must be ignored; a valid
	// one is still only a hint, to be confirmed with Query.
	ParseNotify(ctx context.Context, header http.Header, body []byte) (Notification, error)
}

// Order is what the daemon asks a provider to create.
type Order struct {
	OutTradeNo string
	Total      Fen
	Subject    string
	// Type is the order's type (the request's data.type). Providers never
	// see it; paygate checks it against the device's catalog.
	Type string
	// NotifyURL is where the provider posts notifications; empty means
	// poll only (the adapter may then fill in a placeholder the provider
	// accepts, since WeChat requires one).
	NotifyURL string
	// ExpireAt bounds the QR code's life at the provider.
	ExpireAt time.Time
	// Other is merged into the provider request body verbatim (seed
	// "other"). Keys the daemon sets itself are refused by the adapter.
	Other map[string]any
}

// Created is the provider's answer to Create.
type Created struct {
	// CodeURL is what the QR code must encode: WeChat code_url
	// ("weixin://wxpay/bizpayurl?pr=…") or Alipay qr_code.
	CodeURL string
}

// State is an order's state as the provider reports it.
type State int

// Order states at the provider.
const (
	// StateUnknown is never returned with a nil error; it is the zero value.
	StateUnknown State = iota
	// StateNotCreated: the provider has no trade (Alipay before the buyer
	// scans; WeChat ORDER_NOT_EXIST). Definitely not paid.
	StateNotCreated
	// StateWaiting: the trade exists and is unpaid (WeChat NOTPAY, Alipay
	// WAIT_BUYER_PAY). Definitely not paid yet.
	StateWaiting
	// StatePaid: paid (WeChat SUCCESS, Alipay TRADE_SUCCESS/TRADE_FINISHED).
	StatePaid
	// StateRefunded: was paid and has been (partly) refunded (WeChat REFUND).
	// Alipay reports a fully refunded trade as TRADE_CLOSED with a trade_no
	// and a send_pay_date, which the adapter maps here too.
	StateRefunded
	// StateClosed: closed without payment. Definitely not paid.
	StateClosed
)

var stateNames = [...]string{"unknown", "not_created", "waiting", "paid", "refunded", "closed"}

func (s State) String() string { return enumString(stateNames[:], s, "State") }

// WasPaid reports whether money reached the merchant at some point.
func (s State) WasPaid() bool { return s == StatePaid || s == StateRefunded }

// Status is the answer to Query.
type Status struct {
	State State
	// Scanned is true once an Alipay buyer scanned the code (the trade
	// exists). Always true for WeChat orders, which exist from creation.
	Scanned bool
	// Amount is the money of the trade, set when State.WasPaid(). Whether
	// it may be delivered is Amount.Matches (the money rule).
	Amount        Amounts
	TransactionID string
	PaidAt        time.Time
}

// Amounts is what a provider reports about the money of a paid trade.
//
// The money rule: delivery is decided by Total, the order total the
// provider holds (WeChat amount.total, Alipay total_amount), and nothing
// else. It must equal the local order's total_fee; a different total is a
// different order (an out_trade_no collision, an order created elsewhere
// with other parameters) and is never delivered. What the buyer paid and
// what the merchant receives are lower whenever a coupon or an instant
// discount applied, real Alipay answers often carry them as "0.00", and
// they never decide delivery: they are recorded and reported.
type Amounts struct {
	// Total is the order total at the provider; always > 0 in a paid
	// answer (an adapter refuses a paid answer without one).
	Total Fen
	// PayerTotal is what the buyer paid (WeChat payer_total, Alipay
	// buyer_pay_amount); 0 when the provider did not say.
	PayerTotal Fen
	// Receipt is what the merchant receives (Alipay receipt_amount; for
	// WeChat the total less non-cash coupons); 0 when not known.
	Receipt Fen
	// Discount is what coupons and discounts took off the buyer's price,
	// whoever funded them; 0 when none or not reported.
	Discount Fen
}

// Matches reports whether a paid trade with these amounts may deliver an
// order of orderTotal: the money rule, stated once.
func (a Amounts) Matches(orderTotal Fen) bool { return a.Total > 0 && a.Total == orderTotal }

// Payer is what the buyer paid: PayerTotal when the provider reported it,
// otherwise the total less the reported discount.
func (a Amounts) Payer() Fen {
	if a.PayerTotal > 0 {
		return a.PayerTotal
	}
	return max(a.Total-a.Discount, 0)
}

// Closed is the answer to Close.
type Closed struct {
	// Paid: the provider refused to close because the order is paid
	// (WeChat ORDERPAID). The payment happened in time.
	Paid bool
	// Refunded: closing refunded a payment that had already happened
	// (Alipay cancel with action=refund). No money was kept.
	Refunded bool
}

// RefundRequest asks for money back.
type RefundRequest struct {
	OutTradeNo  string
	OutRefundNo string
	Total       Fen // the order total at the provider (WeChat requires it)
	Refund      Fen // the amount to return, 1..Total
	Reason      string
	NotifyURL   string
}

// RefundState is a refund's progress.
type RefundState int

// Refund states.
const (
	RefundUnknown    RefundState = iota
	RefundProcessing             // accepted, money not yet back
	RefundSuccess                // money returned
	RefundClosed                 // failed for good; needs a human
	RefundNotFound               // no refund with this number exists
	// RefundAbnormal: the money could not reach the buyer (WeChat
	// ABNORMAL: a cancelled or frozen bank card). It waits for a human at
	// the merchant platform and may still end SUCCESS or CLOSED.
	RefundAbnormal
)

var refundStateNames = [...]string{"unknown", "processing", "success", "closed", "not_found", "abnormal"}

func (s RefundState) String() string { return enumString(refundStateNames[:], s, "RefundState") }

// RefundStatus is the answer to Refund and QueryRefund.
type RefundStatus struct {
	State    RefundState
	RefundID string
	Amount   Fen
}

// NotifyKind says what a notification reports.
type NotifyKind int

// Notification kinds.
const (
	NotifyPayment NotifyKind = iota + 1
	NotifyRefund
	NotifyClosed
)

// Notification is a verified, decoded provider notification.
type Notification struct {
	Kind          NotifyKind
	OutTradeNo    string
	State         State   // for payment notifications
	Amount        Amounts // set when State.WasPaid()
	TransactionID string
	OutRefundNo   string      // for refund notifications
	RefundState   RefundState // for refund notifications
	// ID identifies the notification for deduplication (Alipay
	// notify_id, WeChat event id).
	ID string
}

// RejectedError is a definite refusal by the provider: the request reached it
// and it answered with a business error code. It is the only provider error
// that is not an unknown outcome.
type RejectedError struct {
	Provider ProviderName
	Op       string // "create", "query", …
	Code     string // provider code, e.g. ORDER_NOT_EXIST, ACQ.TRADE_HAS_CLOSE
	Message  string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("%s %s rejected: %s: %s", e.Provider, e.Op, e.Code, e.Message)
}

// CodeInvalidRefundAmount is the code of the *RejectedError an adapter
// returns, without calling the provider, for a refund amount it cannot send
// (≤ 0, or above the order total): no retry can make such a request valid.
const CodeInvalidRefundAmount = "KIOSKPAY_INVALID_REFUND_AMOUNT"

// CheckAmount refuses, as a definite *RejectedError with
// CodeInvalidRefundAmount, a refund that cannot be sent: a refund of ≤ 0
// fen, or of more than the order total at the provider.
func (r RefundRequest) CheckAmount(p ProviderName) error {
	if r.Refund >= 1 && r.Total >= 1 && r.Refund <= r.Total {
		return nil
	}
	return &RejectedError{Provider: p, Op: "refund", Code: CodeInvalidRefundAmount,
		Message: fmt.Sprintf("refund %s of %d fen for an order total of %d fen: want 1..total", r.OutRefundNo, int64(r.Refund), int64(r.Total))}
}

// ErrRateLimited marks an unknown outcome caused by the provider's rate limit
// (WeChat 429 FREQUENCY_LIMITED, Alipay 40005); callers back off harder.
var ErrRateLimited = errors.New("rate limited by provider")

// ErrOtherOverride is returned (wrapped, naming the key) by Create when
// Order.Other tries to set a request field the daemon sets itself, such as
// the amount or out_trade_no: "other" may add to a provider request, never
// change what the order is.
var ErrOtherOverride = errors.New("other: key is set by kioskpay and cannot be overridden")

// IsUnknown reports whether err leaves the provider-side outcome unknown:
// true for every non-nil error that is not a *RejectedError.
func IsUnknown(err error) bool {
	if err == nil {
		return false
	}
	var r *RejectedError
	return !errors.As(err, &r)
}

// IsRejected reports whether err is a provider rejection with the given code
// (any code when code is empty).
func IsRejected(err error, code string) bool {
	var r *RejectedError
	if !errors.As(err, &r) {
		return false
	}
	return code == "" || r.Code == code
}

// Beijing is both providers' time zone: every timestamp on either wire is
// UTC+8 (WeChat's RFC 3339 times end in +08:00, e.g. time_expire; Alipay's
// have no zone and are Beijing time). A fixed zone needs no tzdata on the
// device.
var Beijing = time.FixedZone("CST", 8*3600)

// enumString is the String of e, a value of the enum typ: its name in
// names, or typ(n) for a value without one.
func enumString[E ~int](names []string, e E, typ string) string {
	if e >= 0 && int(e) < len(names) {
		return names[e]
	}
	return fmt.Sprintf("%s(%d)", typ, int(e))
}
