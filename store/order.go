package store

import (
	"encoding/json"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// State is an order's lifecycle state (SPEC §5). The engine in package
// device decides the transitions; the store only needs to know which states
// are terminal, to keep the live index.
type State string

// Order states.
const (
	// Creating: persisted, provider orders being created; no QR shown yet.
	Creating State = "creating"
	// Pending: QR shown, waiting for payment.
	Pending State = "pending"
	// Closing: final query / close / final query in progress (deadline,
	// cancel, superseded, or a create that failed with an unknown outcome).
	Closing State = "closing"
	// Paid: payment verified, result published, waiting for the ack.
	Paid State = "paid"
	// Refunding: money of the order's payment is being returned.
	Refunding State = "refunding"

	// Delivered: the controller acknowledged the unlock.
	Delivered State = "delivered"
	// Held: no ack within ack_timeout and on_no_ack = "hold".
	Held State = "held"
	// Refunded: refunds completed (fully, or partly for operator refunds).
	Refunded State = "refunded"
	// RefundFailed: the provider closed a refund for good; needs a human.
	RefundFailed State = "refund_failed"
	// Expired, Cancelled: closed unpaid.
	Expired   State = "expired"
	Cancelled State = "cancelled"
	// Failed: the provider order could not be created.
	Failed State = "failed"
)

// Terminal reports whether no further action is scheduled for the order.
// Terminal orders can still become live again (a late payment, an operator
// refund).
func (s State) Terminal() bool {
	switch s {
	case Creating, Pending, Closing, Paid, Refunding:
		return false
	}
	return true
}

// Seed numeric statuses (vk-uni-pay): kept beside the state name.
const (
	StatusClosed         = -1
	StatusUnpaid         = 0
	StatusPaid           = 1
	StatusPartlyRefunded = 2
	StatusRefunded       = 3
)

// LegState is the state of one provider order of an order.
type LegState string

// Leg states.
const (
	LegCreating LegState = "creating" // Create called, outcome not yet known
	LegOpen     LegState = "open"     // QR valid, payable
	LegAbandon  LegState = "abandon"  // must be closed (create outcome unknown, or another leg won)
	LegClosed   LegState = "closed"   // closed unpaid at the provider
	LegPaid     LegState = "paid"     // the provider reports it paid
	LegRefunded LegState = "refunded" // closing refunded it (Alipay cancel action=refund)
	LegFailed   LegState = "failed"   // the provider rejected Create: no order exists
)

// Leg is one provider order: in "any" mode an order has two.
type Leg struct {
	Provider payment.ProviderName `json:"provider"`
	State    LegState             `json:"state"`
	CodeURL  string               `json:"code_url,omitempty"`
	Scanned  bool                 `json:"scanned,omitempty"`
	// Paid is what the buyer paid at this provider (may differ from the
	// order total: then it is never delivered).
	Paid          payment.Fen `json:"paid,omitempty"`
	TransactionID string      `json:"transaction_id,omitempty"`
	PaidAt        time.Time   `json:"paid_at,omitzero"`
	Error         string      `json:"error,omitempty"`
}

// RefundState is a refund's progress as recorded locally.
type RefundState string

// Refund states.
const (
	RefundPending    RefundState = "pending"    // recorded, Refund not yet answered
	RefundProcessing RefundState = "processing" // accepted by the provider
	RefundSuccess    RefundState = "success"
	RefundClosed     RefundState = "closed" // failed for good
)

// Refund is one refund of one leg. OutRefundNo is fixed when the record is
// written, before the provider is called, so a retry after a crash reuses it
// and the provider never pays out twice.
type Refund struct {
	OutRefundNo string               `json:"out_refund_no"`
	Provider    payment.ProviderName `json:"provider"`
	Amount      payment.Fen          `json:"amount"`
	Reason      string               `json:"reason"`
	State       RefundState          `json:"state"`
	RefundID    string               `json:"refund_id,omitempty"`
	RequestID   string               `json:"request_id,omitempty"`
	// Main is true for refunds of the order's own payment (they drive the
	// order's refunding state); false for duplicate payments in "any" mode.
	Main      bool      `json:"main,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Settled reports whether the refund needs no more provider calls.
func (r Refund) Settled() bool { return r.State == RefundSuccess || r.State == RefundClosed }

// Transition is one recorded state change.
type Transition struct {
	From   State     `json:"from"`
	To     State     `json:"to"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// Order is the full persistent record of one order.
type Order struct {
	OutTradeNo string `json:"out_trade_no"`
	RequestID  string `json:"request_id,omitempty"`
	// Fingerprint identifies the create parameters: a re-create with the
	// same fingerprint gets the same QR, a different one DUPLICATE_CONFLICT.
	Fingerprint string `json:"fingerprint"`
	// Provider is what was asked for: wxpay, alipay or any.
	Provider string          `json:"provider"`
	PID      string          `json:"pid"`
	TotalFee payment.Fen     `json:"total_fee"`
	Subject  string          `json:"subject"`
	Type     string          `json:"type"`
	Custom   json.RawMessage `json:"custom,omitempty"`
	Other    json.RawMessage `json:"other,omitempty"`
	Expire   time.Duration   `json:"expire"`

	State  State `json:"state"`
	Status int   `json:"status"`
	// CloseReason says why the order is (or was) closing: expire, cancel,
	// supersede, create_failed.
	CloseReason string `json:"close_reason,omitempty"`

	Legs []Leg `json:"legs"`
	// Winner is the provider whose payment the order delivers ("" until paid).
	Winner        payment.ProviderName `json:"winner,omitempty"`
	PaidFee       payment.Fen          `json:"paid_fee,omitempty"`
	RefundedFee   payment.Fen          `json:"refunded_fee,omitempty"`
	TransactionID string               `json:"transaction_id,omitempty"`
	PaidAt        time.Time            `json:"paid_at,omitzero"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// ExpiresAt is the wall-clock QR deadline. While running the engine uses
	// monotonic timers; after a restart it recomputes them from this.
	ExpiresAt   time.Time `json:"expires_at"`
	AckDeadline time.Time `json:"ack_deadline,omitzero"`
	Acked       bool      `json:"acked,omitempty"`

	// Result is the last result published for the order ("" = none), with
	// its seq: seq is assigned once, in the transaction that creates the
	// result, so a re-publish never carries a new one.
	Result    string `json:"result,omitempty"`
	ResultSeq uint64 `json:"result_seq,omitempty"`

	Transitions []Transition `json:"transitions"`
	Refunds     []Refund     `json:"refunds,omitempty"`
	Flags       []string     `json:"flags,omitempty"`
	// Attempts counts consecutive unknown outcomes, for backoff.
	Attempts int `json:"attempts,omitempty"`
	// LastError is the last provider error, for operators.
	LastError string `json:"last_error,omitempty"`
}

// Flag records a condition once.
func (o *Order) Flag(f string) {
	for _, g := range o.Flags {
		if g == f {
			return
		}
	}
	o.Flags = append(o.Flags, f)
}

// HasFlag reports whether f was recorded.
func (o *Order) HasFlag(f string) bool {
	for _, g := range o.Flags {
		if g == f {
			return true
		}
	}
	return false
}

// Leg returns the leg of provider p, nil when the order has none.
func (o *Order) Leg(p payment.ProviderName) *Leg {
	for i := range o.Legs {
		if o.Legs[i].Provider == p {
			return &o.Legs[i]
		}
	}
	return nil
}

// Refund returns the refund with the given number, nil when none.
func (o *Order) Refund(outRefundNo string) *Refund {
	for i := range o.Refunds {
		if o.Refunds[i].OutRefundNo == outRefundNo {
			return &o.Refunds[i]
		}
	}
	return nil
}
