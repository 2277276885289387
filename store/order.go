package store

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// State is an order's lifecycle state (docs/contract.md §4). The states and
// the table of legal moves between them are defined here, together; the
// engine in package device decides which move to take (device/lifecycle.go,
// one step function per state), and the store needs to know which states
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

// transitions is the order state machine (docs/contract.md §4): every
// allowed state change, in one place.
var transitions = map[State][]State{
	"":           {Creating},
	Creating:     {Pending, Closing, Failed, Paid, Refunding},
	Pending:      {Paid, Closing, Refunding},
	Closing:      {Paid, Refunding, Expired, Cancelled, Failed, Refunded},
	Paid:         {Delivered, Held, Refunding},
	Held:         {Delivered, Refunding},
	Delivered:    {Refunding},
	Refunding:    {Refunded, RefundFailed},
	Refunded:     {Refunding},
	RefundFailed: {Refunding},
	Expired:      {Refunding},
	Cancelled:    {Refunding},
	Failed:       {Refunding},
}

// CanMove reports whether the state machine allows s → next; the engine
// refuses any other move.
func (s State) CanMove(next State) bool { return slices.Contains(transitions[s], next) }

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

// Live reports whether the order has work left, which keeps it in the
// live index: a non-terminal state, or a terminal one with a provider order
// still to close or a refund not yet settled (a duplicate payment's, an
// operator's on a delivered order). Startup and every engine pass read the
// live index, never the history.
func (o *Order) Live() bool {
	if !o.State.Terminal() {
		return true
	}
	for _, l := range o.Legs {
		if l.State == LegAbandon {
			return true
		}
	}
	for _, r := range o.Refunds {
		if !r.Settled() {
			return true
		}
	}
	return false
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
	// The money of a paid leg as the provider reported it (see
	// payment.Amounts). Total, the order total at the provider, decided
	// delivery; the others are recorded for people and results.
	Total         payment.Fen `json:"total,omitempty"`
	PayerTotal    payment.Fen `json:"payer_total,omitempty"`
	Receipt       payment.Fen `json:"receipt,omitempty"`
	Discount      payment.Fen `json:"discount,omitempty"`
	TransactionID string      `json:"transaction_id,omitempty"`
	PaidAt        time.Time   `json:"paid_at,omitzero"`
	Error         string      `json:"error,omitempty"`

	// LegacyPaid is the "paid" amount of records written before the
	// money rule: what the buyer paid as the adapter then read it (WeChat
	// payer_total, Alipay receipt_amount, often "0.00"). Order.upgrade
	// moves it into PayerTotal; it is never written again.
	LegacyPaid payment.Fen `json:"paid,omitempty"`
}

// SetAmounts records a provider's amounts on the leg.
func (l *Leg) SetAmounts(a payment.Amounts) {
	l.Total, l.PayerTotal, l.Receipt, l.Discount = a.Total, a.Payer(), a.Receipt, a.Discount
}

// RefundState is a refund's progress as recorded locally.
type RefundState string

// Refund states.
const (
	RefundPending    RefundState = "pending"    // recorded, Refund not yet answered
	RefundProcessing RefundState = "processing" // accepted by the provider
	RefundSuccess    RefundState = "success"
	RefundClosed     RefundState = "closed"   // failed for good
	RefundAbnormal   RefundState = "abnormal" // the buyer's account refused it; waits for a human at the provider
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
	Main     bool `json:"main,omitempty"`
	Attempts int  `json:"attempts,omitempty"`
	// Unknown counts consecutive provider calls whose outcome stayed
	// unknown; Stuck is set once it reached the engine's bound (the order
	// is flagged refund_stuck) and cleared by the next definite answer.
	Unknown   int       `json:"unknown,omitempty"`
	Stuck     bool      `json:"stuck,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Settled reports whether the refund needs no more provider calls.
func (r Refund) Settled() bool { return r.State == RefundSuccess || r.State == RefundClosed }

// Committed reports whether the refund holds (or will hold) money back
// from the provider's refundable amount: every refund not closed.
func (r Refund) Committed() bool { return r.State != RefundClosed }

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
	// Winner is the provider whose payment the order delivers ("" until
	// paid). PaidFee is the order total at that provider: what refunds of
	// the order are measured against.
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
	// Unlock is the local unlock driver's progress for this order (JSON
	// of device/unlock.Progress), written with the move to paid and
	// before every step the driver takes; empty when an MQTT controller
	// starts the machine. The store keeps it opaque.
	Unlock json.RawMessage `json:"unlock,omitempty"`
}

// UnmarshalJSON reads an order record and upgrades one written before the
// money rule (see upgrade).
func (o *Order) UnmarshalJSON(b []byte) error {
	type plain Order
	if err := json.Unmarshal(b, (*plain)(o)); err != nil {
		return err
	}
	o.upgrade()
	return nil
}

// upgrade makes a record written before the money rule read sensibly.
// Such records kept one "paid" figure per leg: what the buyer paid as the
// adapter then read it. The engine delivered only when it equalled
// total_fee, so a winning leg without amount_mismatch had the order total
// at the provider: that is its Total. Other paid legs (mismatches, late
// and duplicate payments) keep Total 0, "not recorded", and their refunds
// keep the amounts already sent. A pending refund of 0 fen or less was
// refused by the adapter every time and never reached a provider (that was
// the endless loop): it now asks for the order total, the best knowledge
// there is (a refund of more than the provider holds is refused by it and
// ends with a human); its attempt count starts afresh.
func (o *Order) upgrade() {
	for i := range o.Legs {
		l := &o.Legs[i]
		if l.LegacyPaid == 0 {
			continue
		}
		if l.PayerTotal == 0 {
			l.PayerTotal = l.LegacyPaid
		}
		l.LegacyPaid = 0
		if l.Total == 0 && l.Provider == o.Winner && l.State == LegPaid && !slices.Contains(o.Flags, "amount_mismatch") && l.PayerTotal == o.TotalFee {
			l.Total = o.TotalFee
		}
	}
	for i := range o.Refunds {
		r := &o.Refunds[i]
		if r.Amount <= 0 && r.State == RefundPending {
			r.Amount = o.TotalFee
			if l := o.Leg(r.Provider); l != nil && l.Total > 0 {
				r.Amount = l.Total
			}
			r.Attempts = 0
		}
	}
	if o.Winner != "" && o.PaidFee <= 0 {
		o.PaidFee = o.TotalFee
		if l := o.Leg(o.Winner); l != nil && l.Total > 0 {
			o.PaidFee = l.Total
		}
	}
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
