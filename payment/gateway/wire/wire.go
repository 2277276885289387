// Package wire is the protocol between a device's kioskpayd (payment.backend
// = "gateway") and paygate, the fleet-side service that holds the merchant
// keys: the topics, the request and reply messages, their decoders and the
// error codes (docs/contract.md §3.7).
//
// A device publishes a Request on <topic_prefix>/<device_id>/gw/req; a
// paygate replica takes it from the shared subscription
// $share/paygate/<topic_prefix>/+/gw/req, performs the provider call and
// publishes the Reply, carrying the request's ID, on
// <topic_prefix>/<device_id>/gw/reply. The device's identity is the topic
// level the broker's ACL confines the device to, never a payload field.
//
// The package depends on nothing of kioskpay but the leaf packages payment
// (whose types it carries) and contract (the identifiers' rules), so both
// ends share one definition of every message.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
)

// Topic suffixes under P = <topic_prefix>/<device_id>.
const (
	TopicRequest = "gw/req"
	TopicReply   = "gw/reply"
)

// ShareGroup is the shared-subscription group every paygate replica joins,
// so that each request goes to one of them.
const ShareGroup = "paygate"

// RequestFilter is the topic filter paygate subscribes to: every device's
// requests, shared among the replicas.
func RequestFilter(topicPrefix string) string {
	return "$share/" + ShareGroup + "/" + topicPrefix + "/+/" + TopicRequest
}

// RequestTopic and ReplyTopic are one device's topics.
func RequestTopic(topicPrefix, deviceID string) string {
	return topicPrefix + "/" + deviceID + "/" + TopicRequest
}

// ReplyTopic is where paygate answers a device.
func ReplyTopic(topicPrefix, deviceID string) string {
	return topicPrefix + "/" + deviceID + "/" + TopicReply
}

// DeviceOf returns the device id of a request topic
// <topic_prefix>/<device_id>/gw/req, or false when the topic is not one.
func DeviceOf(topicPrefix, topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, topicPrefix+"/")
	if !ok {
		return "", false
	}
	dev, ok := strings.CutSuffix(rest, "/"+TopicRequest)
	if !ok || !contract.ValidDeviceID(dev) {
		return "", false
	}
	return dev, true
}

// MaxPayload bounds a request; larger ones are refused unread.
const MaxPayload = 64 << 10

// Op names a provider call.
type Op string

// The operations: one per payment.Provider method, plus a round trip that
// calls no provider (doctor's check of the gateway path).
const (
	OpCreate      Op = "create"
	OpQuery       Op = "query"
	OpClose       Op = "close"
	OpRefund      Op = "refund"
	OpQueryRefund Op = "query_refund"
	OpNotify      Op = "verify_notify"
	OpPing        Op = "ping"
)

// Request is one call from a device.
type Request struct {
	// ID correlates the reply; unique per device while the call waits.
	ID       string               `json:"id"`
	Op       Op                   `json:"op"`
	PID      string               `json:"pid,omitempty"`
	Provider payment.ProviderName `json:"provider,omitempty"`

	// create
	Order *Order `json:"order,omitempty"`
	// query, close, query_refund
	OutTradeNo  string `json:"out_trade_no,omitempty"`
	OutRefundNo string `json:"out_refund_no,omitempty"`
	// refund
	Refund *Refund `json:"refund,omitempty"`
	// verify_notify
	Notify *Notify `json:"notify,omitempty"`
}

// Order is a create's order (payment.Order without the notify URL, which
// paygate sets: notifications go to paygate, which holds the keys).
type Order struct {
	OutTradeNo string         `json:"out_trade_no"`
	Total      payment.Fen    `json:"total"`
	Subject    string         `json:"subject"`
	Type       string         `json:"type,omitempty"`
	ExpireAt   time.Time      `json:"expire_at"`
	Other      map[string]any `json:"other,omitempty"`
}

// Refund is a refund's request.
type Refund struct {
	OutTradeNo  string      `json:"out_trade_no"`
	OutRefundNo string      `json:"out_refund_no"`
	Total       payment.Fen `json:"total"`
	Refund      payment.Fen `json:"refund"`
	Reason      string      `json:"reason,omitempty"`
}

// Notify is a provider notification to verify: the headers and the body
// byte for byte, as notifyrelay forwards them.
type Notify struct {
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

// Reply is paygate's answer to one Request.
type Reply struct {
	ID string `json:"id"`
	// Error is empty on success.
	Error        Code   `json:"error,omitempty"`
	ProviderCode string `json:"provider_code,omitempty"`
	Msg          string `json:"msg,omitempty"`

	CodeURL      string                `json:"code_url,omitempty"`
	Status       *Status               `json:"status,omitempty"`
	Closed       *payment.Closed       `json:"closed,omitempty"`
	RefundStatus *RefundStatus         `json:"refund_status,omitempty"`
	Notification *payment.Notification `json:"notification,omitempty"`
}

// Status is payment.Status on the wire.
type Status struct {
	State         payment.State   `json:"state"`
	Scanned       bool            `json:"scanned,omitempty"`
	Amount        payment.Amounts `json:"amount"`
	TransactionID string          `json:"transaction_id,omitempty"`
	PaidAt        time.Time       `json:"paid_at"`
}

// RefundStatus is payment.RefundStatus on the wire.
type RefundStatus struct {
	State    payment.RefundState `json:"state"`
	RefundID string              `json:"refund_id,omitempty"`
	Amount   payment.Fen         `json:"amount"`
}

// Code is why paygate did not perform a call, or what the provider said
// when it refused. It implements error.
type Code string

// The codes. Definite ones (Code.Definite) mean nothing happened at the
// provider, or the provider itself refused; the others leave the outcome
// unknown, and the device asks again.
const (
	ErrBadRequest          Code = "BAD_REQUEST"
	ErrUnknownMerchant     Code = "UNKNOWN_MERCHANT"
	ErrUnsupportedProvider Code = "UNSUPPORTED_PROVIDER"
	ErrProviderRejected    Code = "PROVIDER_REJECTED"
	ErrSignatureInvalid    Code = "SIGNATURE_INVALID"
	// Policy refusals name the rule.
	ErrPolicyPrefix       Code = "POLICY_PREFIX"
	ErrPolicyMaxFee       Code = "POLICY_MAX_FEE"
	ErrPolicyCatalog      Code = "POLICY_CATALOG"
	ErrPolicyRefundAmount Code = "POLICY_REFUND_AMOUNT"
	ErrPolicyRefundWindow Code = "POLICY_REFUND_WINDOW"
	ErrPolicyRefundNo     Code = "POLICY_REFUND_NO"
	// Unknown outcomes.
	ErrRateLimited         Code = "RATE_LIMITED"
	ErrProviderUnavailable Code = "PROVIDER_UNAVAILABLE"
	ErrInternal            Code = "INTERNAL"
)

func (c Code) Error() string { return string(c) }

// Definite reports whether a reply with this code is a definite refusal.
// A rate limit is not: the call was not made, but the same call later will
// be, so the device treats it as an unknown outcome and backs off.
func (c Code) Definite() bool {
	switch c {
	case ErrRateLimited, ErrProviderUnavailable, ErrInternal, "":
		return false
	}
	return true
}

// Err returns the reply's error (nil on success).
func (r *Reply) Err() error {
	if r.Error == "" {
		return nil
	}
	return &Error{Code: r.Error, ProviderCode: r.ProviderCode, Msg: r.Msg}
}

// Error is a refusal or failure carried by a Reply.
type Error struct {
	Code         Code
	ProviderCode string
	Msg          string
}

func (e *Error) Error() string {
	if e.ProviderCode != "" {
		return fmt.Sprintf("paygate: %s (%s): %s", e.Code, e.ProviderCode, e.Msg)
	}
	return fmt.Sprintf("paygate: %s: %s", e.Code, e.Msg)
}

// Unwrap makes errors.Is(err, wire.ErrPolicyPrefix) work.
func (e *Error) Unwrap() error { return e.Code }

// Refuse builds an error reply for request id.
func Refuse(id string, c Code, format string, args ...any) Reply {
	return Reply{ID: id, Error: c, Msg: fmt.Sprintf(format, args...)}
}

// Encode marshals a message.
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Every field is a plain value; only Other could fail, and it came
		// from JSON.
		panic(fmt.Sprintf("wire: encode: %v", err))
	}
	return b
}

// refundNoRE is what WeChat Pay and Alipay accept as out_refund_no; the
// daemon's own are <out_trade_no>R<n>.
var refundNoRE = regexp.MustCompile(`^[A-Za-z0-9_*|@.-]{1,64}$`)

// DecodeRequest parses and checks a request payload. The error is a Code
// (ErrBadRequest) wrapped with what is wrong; the request's ID is returned
// whenever it could be read, so the refusal can be correlated.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxPayload {
		return r, fmt.Errorf("%w: request of %d bytes is over %d", ErrBadRequest, len(b), MaxPayload)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	d.UseNumber()
	if err := d.Decode(&r); err != nil {
		var id struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(b, &id)
		return Request{ID: id.ID}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if d.More() {
		return r, fmt.Errorf("%w: trailing data after the request", ErrBadRequest)
	}
	return r, r.Validate()
}

// Validate checks a request's fields for its op.
func (r *Request) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
	}
	if r.ID == "" || len(r.ID) > 128 {
		return bad("id must be 1 to 128 characters")
	}
	if r.Op == OpPing {
		return nil
	}
	if !contract.ValidPID(r.PID) {
		return bad("pid %q: want 1 to 64 of A-Z a-z 0-9 _ -", r.PID)
	}
	if r.Provider != payment.WxPay && r.Provider != payment.Alipay {
		return fmt.Errorf("%w: provider %q: want wxpay or alipay", ErrUnsupportedProvider, r.Provider)
	}
	otn := func(s string) error {
		if !payment.ValidOutTradeNo(s) {
			return bad("out_trade_no %q: want 6 to 32 of A-Z a-z 0-9 _", s)
		}
		return nil
	}
	switch r.Op {
	case OpCreate:
		o := r.Order
		if o == nil {
			return bad("create needs order")
		}
		if err := otn(o.OutTradeNo); err != nil {
			return err
		}
		if o.Total < 1 {
			return bad("order.total must be at least 1 fen")
		}
		if o.Subject == "" || len(o.Subject) > 256 {
			return bad("order.subject must be 1 to 256 bytes")
		}
		if o.Type != "" && !contract.ValidOrderType(o.Type) {
			return bad("order.type %q: want up to 32 of a-z 0-9 _", o.Type)
		}
		if o.ExpireAt.IsZero() {
			return bad("order.expire_at is required")
		}
	case OpQuery, OpClose:
		return otn(r.OutTradeNo)
	case OpQueryRefund:
		if err := otn(r.OutTradeNo); err != nil {
			return err
		}
		if !refundNoRE.MatchString(r.OutRefundNo) {
			return bad("out_refund_no %q is not valid", r.OutRefundNo)
		}
	case OpRefund:
		f := r.Refund
		if f == nil {
			return bad("refund needs refund")
		}
		if err := otn(f.OutTradeNo); err != nil {
			return err
		}
		if !refundNoRE.MatchString(f.OutRefundNo) {
			return bad("out_refund_no %q is not valid", f.OutRefundNo)
		}
		if f.Refund < 1 || f.Total < 1 {
			return bad("refund and total must be at least 1 fen")
		}
	case OpNotify:
		if r.Notify == nil || r.Notify.Body == "" {
			return bad("verify_notify needs notify.body")
		}
	default:
		return bad("unknown op %q", r.Op)
	}
	return nil
}

// DecodeReply parses a reply payload.
func DecodeReply(b []byte) (Reply, error) {
	var r Reply
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("paygate reply: %w", err)
	}
	if r.ID == "" {
		return r, errors.New("paygate reply: no id")
	}
	return r, nil
}
