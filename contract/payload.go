package contract

import (
	"encoding/json"

	"github.com/kioskpay/kioskpay/payment"
)

// The inbound commands as a sender writes them: kioskctl, the proof
// harness, notifyrelay and a controller marshal these, and the Decode
// functions read them back (TestPayloadsRoundTrip holds the two together).
// Optional fields are omitted when zero so that a sender never sends a
// value it did not choose.

// CreateData is the "data" object of a create (see OrderRequest).
type CreateData struct {
	OutTradeNo    string          `json:"out_trade_no"`
	TotalFee      payment.Fen     `json:"total_fee"`
	Subject       string          `json:"subject"`
	Type          string          `json:"type"`
	Custom        json.RawMessage `json:"custom,omitempty"`
	Other         map[string]any  `json:"other,omitempty"`
	PID           string          `json:"pid,omitempty"`
	ExpireSeconds int64           `json:"expire_seconds,omitempty"`
}

// CreatePayload is P/pay/create.
type CreatePayload struct {
	RequestID  string     `json:"request_id"`
	Provider   string     `json:"provider,omitempty"`
	NeedQRcode bool       `json:"needQRcode"`
	Data       CreateData `json:"data"`
	TS         int64      `json:"ts,omitempty"`
	Sig        string     `json:"sig,omitempty"`
}

// OrderPayload is P/pay/cancel and P/pay/query: one order by number (a
// query carries no signature).
type OrderPayload struct {
	RequestID  string `json:"request_id"`
	OutTradeNo string `json:"out_trade_no"`
	TS         int64  `json:"ts,omitempty"`
	Sig        string `json:"sig,omitempty"`
}

// RefundPayload is P/pay/refund.
type RefundPayload struct {
	RequestID   string      `json:"request_id"`
	OutTradeNo  string      `json:"out_trade_no"`
	RefundFee   payment.Fen `json:"refund_fee,omitempty"`
	RefundDesc  string      `json:"refund_desc,omitempty"`
	OutRefundNo string      `json:"out_refund_no,omitempty"`
	TS          int64       `json:"ts,omitempty"`
	Sig         string      `json:"sig,omitempty"`
}

// AckPayload is P/unlock/ack.
type AckPayload struct {
	RequestID  string `json:"request_id"`
	OutTradeNo string `json:"out_trade_no"`
	OK         bool   `json:"ok"`
	Reason     string `json:"reason,omitempty"`
	TS         int64  `json:"ts,omitempty"`
	Sig        string `json:"sig,omitempty"`
}

// NotifyPayload is P/pay/notify: a provider notification as notifyrelay
// received it.
type NotifyPayload struct {
	RequestID string            `json:"request_id"`
	Provider  string            `json:"provider"`
	Headers   map[string]string `json:"headers"`
	Body      string            `json:"body"`
}

// OrdersPayload is P/pay/orders.
type OrdersPayload struct {
	RequestID string `json:"request_id"`
	State     string `json:"state,omitempty"`
	Flag      string `json:"flag,omitempty"`
	Limit     int    `json:"limit"`
	After     string `json:"after,omitempty"`
}

// ReconcilePayload is P/pay/reconcile; Since is RFC 3339.
type ReconcilePayload struct {
	RequestID string `json:"request_id"`
	Since     string `json:"since,omitempty"`
}
