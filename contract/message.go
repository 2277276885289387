// Package contract is kioskpay's MQTT contract (docs/contract.md §3) as Go:
// topics and actions, error names, request decoders with their validation,
// reply, result, event and status types, and request and result
// signatures. It knows nothing of the engine, the store or the broker
// client, so a controller, kioskctl or notifyrelay can speak the contract
// without linking the daemon.
package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kioskpay/kioskpay/payment"
)

// Topic suffixes under P = <topic_prefix>/<device_id> (docs/contract.md §3). The link
// prefixes "P/" itself; the engine only ever sees and produces suffixes.
const (
	TopicCreate    = "pay/create"
	TopicCancel    = "pay/cancel"
	TopicQuery     = "pay/query"
	TopicRefund    = "pay/refund"
	TopicAck       = "unlock/ack"
	TopicNotify    = "pay/notify"
	TopicOrders    = "pay/orders"
	TopicReconcile = "pay/reconcile"

	TopicReply  = "pay/reply"
	TopicResult = "pay/result"
	TopicEvent  = "pay/event"
	TopicStatus = "status"
)

// InboundTopics lists every suffix the daemon subscribes to.
var InboundTopics = []string{
	TopicCreate, TopicCancel, TopicQuery, TopicRefund,
	TopicAck, TopicNotify, TopicOrders, TopicReconcile,
}

// Actions name the command a reply answers ("action" in every reply).
const (
	ActionCreate    = "create"
	ActionCancel    = "cancel"
	ActionQuery     = "query"
	ActionRefund    = "refund"
	ActionAck       = "ack"
	ActionNotify    = "notify"
	ActionOrders    = "orders"
	ActionReconcile = "reconcile"
)

// ActionForTopic maps an inbound topic suffix to the action its reply
// carries; "" for a topic the daemon does not handle.
func ActionForTopic(suffix string) string {
	switch suffix {
	case TopicCreate:
		return ActionCreate
	case TopicCancel:
		return ActionCancel
	case TopicQuery:
		return ActionQuery
	case TopicRefund:
		return ActionRefund
	case TopicAck:
		return ActionAck
	case TopicNotify:
		return ActionNotify
	case TopicOrders:
		return ActionOrders
	case TopicReconcile:
		return ActionReconcile
	}
	return ""
}

// MaxPayload is the largest inbound message accepted (docs/contract.md §3.1: 16 KiB).
const MaxPayload = 16 << 10

// MaxRequestID bounds the echoed request_id so a reply cannot be inflated
// by the sender.
const MaxRequestID = 128

// ErrorName is the stable machine-readable name of a refusal ("error" in a
// reply). It is an error itself, so errors.Is(err, ErrBadJSON) holds for
// any *Error of that name.
type ErrorName string

func (n ErrorName) Error() string { return string(n) }

// The error names of the contract (docs/contract.md §3.4).
const (
	ErrBadJSON             ErrorName = "BAD_JSON"
	ErrPayloadTooLarge     ErrorName = "PAYLOAD_TOO_LARGE"
	ErrInvalidArgument     ErrorName = "INVALID_ARGUMENT"
	ErrUnsupportedProvider ErrorName = "UNSUPPORTED_PROVIDER"
	ErrUnknownMerchant     ErrorName = "UNKNOWN_MERCHANT"
	ErrFeeOutOfRange       ErrorName = "FEE_OUT_OF_RANGE"
	ErrPriceMismatch       ErrorName = "PRICE_MISMATCH"
	ErrDuplicateConflict   ErrorName = "DUPLICATE_CONFLICT"
	ErrOrderFinished       ErrorName = "ORDER_FINISHED"
	ErrOrderNotFound       ErrorName = "ORDER_NOT_FOUND"
	ErrSignatureInvalid    ErrorName = "SIGNATURE_INVALID"
	ErrClockNotSynced      ErrorName = "CLOCK_NOT_SYNCED"
	ErrProviderUnavailable ErrorName = "PROVIDER_UNAVAILABLE"
	ErrProviderRejected    ErrorName = "PROVIDER_REJECTED"
	ErrInternal            ErrorName = "INTERNAL"
	// ErrCommandStale: a create or cancel waited in the device's inbox
	// longer than DefaultStaleAfter, or its signed ts is outside the
	// signature window; it was not executed.
	ErrCommandStale ErrorName = "COMMAND_STALE"
	// ErrStorageFull: the device's storage is full; no new order is taken
	// until space returns.
	ErrStorageFull ErrorName = "STORAGE_FULL"
)

// Code is the numeric reply code for the name: 400 bad request, 409
// conflict, 503 unavailable (retry later), 500 internal.
func (n ErrorName) Code() int {
	switch n {
	case ErrDuplicateConflict, ErrOrderFinished, ErrProviderRejected, ErrCommandStale:
		return 409
	case ErrClockNotSynced, ErrProviderUnavailable, ErrStorageFull:
		return 503
	case ErrInternal:
		return 500
	case "":
		return 0
	}
	return 400
}

// Error is a refusal that becomes a reply: Name and Field are stable, Msg is
// for people.
type Error struct {
	Name  ErrorName
	Field string // JSON path of the offending field, for INVALID_ARGUMENT and FEE_OUT_OF_RANGE
	Msg   string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Name, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Name, e.Msg)
}

// Unwrap returns the error's name, for errors.Is.
func (e *Error) Unwrap() error { return e.Name }

// Errorf builds an *Error with a formatted message.
func Errorf(name ErrorName, format string, args ...any) *Error {
	return &Error{Name: name, Msg: fmt.Sprintf(format, args...)}
}

func fieldErr(field, format string, args ...any) *Error {
	return &Error{Name: ErrInvalidArgument, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// AsError converts err to an *Error for a reply: an *Error or
// *payment.FieldError keeps its name and field; anything else is INTERNAL,
// with a generic message so internals do not leak onto the bus.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var fe *payment.FieldError
	if errors.As(err, &fe) {
		return &Error{Name: ErrorName(fe.Code), Field: fe.Field, Msg: fe.Field + " " + fe.Reason}
	}
	return &Error{Name: ErrInternal, Msg: "internal error"}
}

// DefaultTopicPrefix is the first level of every topic, <prefix>/<device_id>/…
// (§3), when mqtt.topic_prefix (the tools' -prefix) is not set.
const DefaultTopicPrefix = "kiosk"

// Provider choices in a create request: one provider, or "any" (both QR
// codes, first payment wins).
const ProviderAny = "any"

// ValidProvider reports whether p is wxpay, alipay or any: the choices of a
// create request's provider and of payment.provider.
func ValidProvider(p string) bool {
	switch p {
	case ProviderAny, string(payment.WxPay), string(payment.Alipay):
		return true
	}
	return false
}

// Pay types in replies and results (seed field pay_type).
const (
	PayTypeWxNative        = "wxpay_native"
	PayTypeAlipayPrecreate = "alipay_precreate"
	PayTypeAny             = "any"
)

// PayType returns the seed pay_type for a provider ("any" for "" or "any").
func PayType(p payment.ProviderName) string {
	switch p {
	case payment.WxPay:
		return PayTypeWxNative
	case payment.Alipay:
		return PayTypeAlipayPrecreate
	}
	return PayTypeAny
}

// Signed carries the optional request signature of docs/contract.md §3.5 (see sign.go).
type Signed struct {
	TS  int64  // unix seconds; 0 when absent
	Sig string // lowercase hex HMAC-SHA256; "" when absent
}

// HasSig reports whether the request carried a signature at all.
func (s Signed) HasSig() bool { return s.Sig != "" || s.TS != 0 }

// CreateRequest is a decoded P/pay/create message.
type CreateRequest struct {
	RequestID string
	// Provider is "wxpay", "alipay", "any", or "" for the configured default.
	Provider string
	Order    OrderRequest
	Signed
}

// CancelRequest is a decoded P/pay/cancel message: the customer walked away.
type CancelRequest struct {
	RequestID  string
	OutTradeNo string
	Signed
}

// QueryRequest is a decoded P/pay/query message.
type QueryRequest struct {
	RequestID  string
	OutTradeNo string
}

// RefundRequest is a decoded P/pay/refund message (operator refund).
type RefundRequest struct {
	RequestID  string
	OutTradeNo string
	// RefundFee is the amount to return; 0 means everything not yet refunded.
	RefundFee   payment.Fen
	RefundDesc  string
	OutRefundNo string // "" = generated deterministically
	Signed
}

// AckRequest is a decoded P/unlock/ack message: the controller delivered the
// service (OK) or could not (refund follows).
type AckRequest struct {
	RequestID  string
	OutTradeNo string
	OK         bool
	Reason     string
	Signed
}

// NotifyRequest is a decoded P/pay/notify message: a provider notification
// forwarded verbatim by the untrusted notifyrelay.
type NotifyRequest struct {
	RequestID string
	Provider  payment.ProviderName
	Header    http.Header
	Body      []byte
}

// OrdersRequest is a decoded P/pay/orders message (kioskctl orders).
type OrdersRequest struct {
	RequestID string
	State     string // "" = every state
	Flag      string // "" = any; else only orders flagged so (see Flags)
	Limit     int    // 1..MaxOrdersLimit
	After     string // cursor: list orders older than this out_trade_no
}

// ReconcileRequest is a decoded P/pay/reconcile message.
type ReconcileRequest struct {
	RequestID string
	Since     time.Time
}

// Limits of the orders listing.
const (
	DefaultOrdersLimit = 50
	MaxOrdersLimit     = 200
)

// DefaultReconcileWindow is how far back reconcile looks when "since" is
// absent.
const DefaultReconcileWindow = 24 * time.Hour

// object is a parsed inbound payload: its top-level fields, and the
// request_id once known, so even a refusal can echo it.
type object struct {
	raw map[string]json.RawMessage
	id  string
}

// SalvageRequestID reads request_id from a payload refused for its size or
// encoding, so that the controller can still match the refusal to its
// request. It streams the top-level keys and stops at the first one it cannot
// read, because an oversized payload arrives cut short (Engine.Accept keeps
// only MaxPayload+1 bytes): an id sent before the cut is still found. It
// returns "" when there is no well-formed id to echo.
func SalvageRequestID(payload []byte) string {
	d := json.NewDecoder(bytes.NewReader(payload))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return ""
		}
		if key, _ := t.(string); key == "request_id" {
			var id string
			// Decode replaces invalid UTF-8 with U+FFFD; an id that needed it
			// is not the controller's id.
			if d.Decode(&id) != nil || len(id) > MaxRequestID || strings.ContainsRune(id, utf8.RuneError) {
				return ""
			}
			return id
		}
		var skip json.RawMessage
		if d.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

// parseObject applies the checks every inbound payload shares: size, UTF-8,
// JSON syntax, top-level object, request_id. The returned request id is
// valid even with an error whenever it could be read.
func parseObject(payload []byte) (object, error) {
	if len(payload) > MaxPayload {
		return object{id: SalvageRequestID(payload)}, Errorf(ErrPayloadTooLarge, "payload is %d bytes, the limit is %d", len(payload), MaxPayload)
	}
	if !utf8.Valid(payload) {
		return object{id: SalvageRequestID(payload)}, Errorf(ErrBadJSON, "payload is not valid UTF-8")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return object{}, Errorf(ErrBadJSON, "payload must be a JSON object")
		}
		return object{}, Errorf(ErrBadJSON, "payload is not valid JSON: %v", err)
	}
	if raw == nil {
		return object{}, Errorf(ErrBadJSON, "payload must be a JSON object")
	}
	o := object{raw: raw}
	id, err := o.optString("request_id", MaxRequestID)
	if err != nil {
		return o, err
	}
	o.id = id
	return o, nil
}

func isNull(v json.RawMessage) bool { return v == nil || string(bytes.TrimSpace(v)) == "null" }

// optString reads an optional string field ("" when absent or null) of at
// most max characters.
func (o object) optString(key string, max int) (string, error) {
	v, ok := o.raw[key]
	if !ok || isNull(v) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fieldErr(key, "must be a string")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return "", fieldErr(key, "must be at most %d characters, got %d", max, n)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fieldErr(key, "must not contain control characters")
	}
	return s, nil
}

func (o object) reqString(key string, max int) (string, error) {
	if v, ok := o.raw[key]; !ok || isNull(v) {
		return "", fieldErr(key, "is required")
	}
	s, err := o.optString(key, max)
	if err == nil && s == "" {
		return "", fieldErr(key, "must not be empty")
	}
	return s, err
}

func (o object) outTradeNo() (string, error) {
	s, err := o.reqString("out_trade_no", 64)
	if err != nil {
		return "", err
	}
	if !payment.ValidOutTradeNo(s) {
		return "", fieldErr("out_trade_no", "must be 6 to 32 characters of A-Z a-z 0-9 _")
	}
	return s, nil
}

// optInt reads an optional JSON integer literal: no strings, fractions or
// exponents, because a float anywhere near money is a bug in the sender.
func (o object) optInt(key string) (int64, bool, error) {
	v, ok := o.raw[key]
	if !ok || isNull(v) {
		return 0, false, nil
	}
	s := string(bytes.TrimSpace(v))
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false, fieldErr(key, "must be an integer")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fieldErr(key, "is out of range")
	}
	return n, true, nil
}

func (o object) optBool(key string) (bool, bool, error) {
	v, ok := o.raw[key]
	if !ok || isNull(v) {
		return false, false, nil
	}
	var b bool
	if err := json.Unmarshal(v, &b); err != nil {
		return false, false, fieldErr(key, "must be true or false")
	}
	return b, true, nil
}

var sigRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (o object) signed() (Signed, error) {
	var s Signed
	ts, _, err := o.optInt("ts")
	if err != nil {
		return s, err
	}
	if ts < 0 {
		return s, fieldErr("ts", "must be unix seconds")
	}
	s.TS = ts
	if s.Sig, err = o.optString("sig", 64); err != nil {
		return s, err
	}
	if s.Sig != "" && !sigRE.MatchString(s.Sig) {
		return s, fieldErr("sig", "must be 64 lowercase hex digits")
	}
	return s, nil
}

// DecodeCreate decodes a P/pay/create payload. The data object is validated
// with ParseOrderRequest against lim (field paths "data.…"). The
// returned request carries RequestID even when err is non-nil, whenever it
// could be read.
func DecodeCreate(payload []byte, lim Limits) (CreateRequest, error) {
	o, err := parseObject(payload)
	r := CreateRequest{RequestID: o.id}
	if err != nil {
		return r, err
	}
	if r.Provider, err = o.optString("provider", 16); err != nil {
		return r, err
	}
	if r.Provider != "" && !ValidProvider(r.Provider) {
		return r, &Error{Name: ErrUnsupportedProvider, Field: "provider", Msg: fmt.Sprintf("provider %q: want wxpay, alipay or any", r.Provider)}
	}
	// needQRcode and isPC are accepted and ignored (QR mode is always on),
	// but a wrong type still says the sender is confused.
	for _, k := range []string{"needQRcode", "isPC"} {
		if v, ok := o.raw[k]; ok && !isNull(v) {
			var b bool
			var s string
			if json.Unmarshal(v, &b) != nil && json.Unmarshal(v, &s) != nil {
				return r, fieldErr(k, "must be a boolean")
			}
		}
	}
	data, ok := o.raw["data"]
	if !ok || isNull(data) {
		return r, fieldErr("data", "is required")
	}
	if r.Order, err = ParseOrderRequest(data, lim); err != nil {
		return r, AsError(err)
	}
	if r.Signed, err = o.signed(); err != nil {
		return r, err
	}
	return r, nil
}

// DecodeCancel decodes a P/pay/cancel payload.
func DecodeCancel(payload []byte) (CancelRequest, error) {
	o, err := parseObject(payload)
	r := CancelRequest{RequestID: o.id}
	if err != nil {
		return r, err
	}
	if r.OutTradeNo, err = o.outTradeNo(); err != nil {
		return r, err
	}
	r.Signed, err = o.signed()
	return r, err
}

// DecodeQuery decodes a P/pay/query payload.
func DecodeQuery(payload []byte) (QueryRequest, error) {
	o, err := parseObject(payload)
	r := QueryRequest{RequestID: o.id}
	if err != nil {
		return r, err
	}
	r.OutTradeNo, err = o.outTradeNo()
	return r, err
}

var outRefundNoRE = regexp.MustCompile(`^[A-Za-z0-9_\-|*@]{1,64}$`)

// DecodeRefund decodes a P/pay/refund payload.
func DecodeRefund(payload []byte) (RefundRequest, error) {
	o, err := parseObject(payload)
	r := RefundRequest{RequestID: o.id}
	if err != nil {
		return r, err
	}
	if r.OutTradeNo, err = o.outTradeNo(); err != nil {
		return r, err
	}
	fee, present, err := o.optInt("refund_fee")
	if err != nil {
		return r, err
	}
	if present && fee < 1 {
		return r, &Error{Name: ErrFeeOutOfRange, Field: "refund_fee", Msg: fmt.Sprintf("refund_fee must be at least 1 fen, got %d", fee)}
	}
	r.RefundFee = payment.Fen(fee)
	if r.RefundDesc, err = o.optString("refund_desc", 80); err != nil {
		return r, err
	}
	if r.OutRefundNo, err = o.optString("out_refund_no", 64); err != nil {
		return r, err
	}
	if r.OutRefundNo != "" && !outRefundNoRE.MatchString(r.OutRefundNo) {
		return r, fieldErr("out_refund_no", "must be 1 to 64 characters of A-Z a-z 0-9 _ - | * @")
	}
	r.Signed, err = o.signed()
	return r, err
}

// DecodeAck decodes a P/unlock/ack payload. "ok" is required: guessing
// either way could keep money for a service never delivered or refund one
// that was.
func DecodeAck(payload []byte) (AckRequest, error) {
	o, err := parseObject(payload)
	r := AckRequest{RequestID: o.id}
	if err != nil {
		return r, err
	}
	if r.OutTradeNo, err = o.outTradeNo(); err != nil {
		return r, err
	}
	ok, present, err := o.optBool("ok")
	if err != nil {
		return r, err
	}
	if !present {
		return r, fieldErr("ok", "is required")
	}
	r.OK = ok
	if r.Reason, err = o.optString("reason", 256); err != nil {
		return r, err
	}
	r.Signed, err = o.signed()
	return r, err
}

// DecodeNotify decodes a P/pay/notify envelope. Header values may be strings
// or arrays of strings. Nothing in it is trusted: the provider adapter
// verifies the body and headers afterwards.
func DecodeNotify(payload []byte) (NotifyRequest, error) {
	o, err := parseObject(payload)
	r := NotifyRequest{RequestID: o.id}
	if err != nil {
		return r, err
	}
	p, err := o.reqString("provider", 16)
	if err != nil {
		return r, err
	}
	switch payment.ProviderName(p) {
	case payment.WxPay, payment.Alipay:
		r.Provider = payment.ProviderName(p)
	default:
		return r, &Error{Name: ErrUnsupportedProvider, Field: "provider", Msg: fmt.Sprintf("provider %q: want wxpay or alipay", p)}
	}
	r.Header = http.Header{}
	if v, ok := o.raw["headers"]; ok && !isNull(v) {
		var hs map[string]json.RawMessage
		if json.Unmarshal(v, &hs) != nil || hs == nil {
			return r, fieldErr("headers", "must be an object of strings")
		}
		for k, hv := range hs {
			var one string
			var many []string
			switch {
			case json.Unmarshal(hv, &one) == nil:
				r.Header.Add(k, one)
			case json.Unmarshal(hv, &many) == nil:
				for _, s := range many {
					r.Header.Add(k, s)
				}
			default:
				return r, fieldErr("headers."+k, "must be a string or an array of strings")
			}
		}
	}
	bv, ok := o.raw["body"]
	if !ok || isNull(bv) {
		return r, fieldErr("body", "is required")
	}
	var body string
	if json.Unmarshal(bv, &body) != nil {
		return r, fieldErr("body", "must be a string (the raw notification body)")
	}
	if body == "" {
		return r, fieldErr("body", "must not be empty")
	}
	r.Body = []byte(body)
	return r, nil
}

// OrderStates lists the state names a listing may filter on.
var OrderStates = []string{
	"creating", "pending", "closing", "paid", "delivered", "expired",
	"cancelled", "refunding", "refunded", "refund_failed", "failed", "held",
}

// DecodeOrders decodes a P/pay/orders payload.
func DecodeOrders(payload []byte) (OrdersRequest, error) {
	o, err := parseObject(payload)
	r := OrdersRequest{RequestID: o.id, Limit: DefaultOrdersLimit}
	if err != nil {
		return r, err
	}
	if r.State, err = o.optString("state", 32); err != nil {
		return r, err
	}
	if r.State != "" && !contains(OrderStates, r.State) {
		return r, fieldErr("state", "must be one of %s", strings.Join(OrderStates, ", "))
	}
	if r.Flag, err = o.optString("flag", 32); err != nil {
		return r, err
	}
	if r.Flag != "" && !contains(Flags, r.Flag) {
		return r, fieldErr("flag", "must be one of %s", strings.Join(Flags, ", "))
	}
	n, present, err := o.optInt("limit")
	if err != nil {
		return r, err
	}
	if present {
		if n < 1 || n > MaxOrdersLimit {
			return r, fieldErr("limit", "must be from 1 to %d", MaxOrdersLimit)
		}
		r.Limit = int(n)
	}
	if r.After, err = o.optString("after", 64); err != nil {
		return r, err
	}
	if r.After != "" && !payment.ValidOutTradeNo(r.After) {
		return r, fieldErr("after", "must be an out_trade_no cursor")
	}
	return r, nil
}

// DecodeReconcile decodes a P/pay/reconcile payload; now supplies the
// default window.
func DecodeReconcile(payload []byte, now time.Time) (ReconcileRequest, error) {
	o, err := parseObject(payload)
	r := ReconcileRequest{RequestID: o.id, Since: now.Add(-DefaultReconcileWindow)}
	if err != nil {
		return r, err
	}
	s, err := o.optString("since", 64)
	if err != nil {
		return r, err
	}
	if s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return r, fieldErr("since", "must be an RFC 3339 time such as 2025-01-02T15:04:05+08:00")
		}
		r.Since = t
	}
	return r, nil
}

// RequestIDOf extracts request_id from any payload, "" when it cannot: the
// fallback that keeps "exactly one reply per command" for malformed input.
func RequestIDOf(payload []byte) string {
	o, _ := parseObject(payload)
	return o.id
}

// OutTradeNoOf returns the order the command on topic (a suffix such as
// TopicCreate) is about, "" when it names no valid one: a create's
// data.out_trade_no, the out_trade_no of a cancel, query, refund or ack,
// read as their decoders read them. The daemon serialises commands about
// one order by it before decoding them, so it must be the order the
// decoder acts on, never another field of the same payload.
func OutTradeNoOf(topic string, payload []byte) string {
	o, _ := parseObject(payload) // a bad request_id does not hide the order
	switch topic {
	case TopicCreate:
		var data object
		if v, ok := o.raw["data"]; !ok || json.Unmarshal(v, &data.raw) != nil {
			return ""
		}
		o = data
	case TopicCancel, TopicQuery, TopicRefund, TopicAck:
	default:
		return ""
	}
	otn, err := o.outTradeNo()
	if err != nil {
		return ""
	}
	return otn
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ---- outbound ----

// Reply is the common head of every P/pay/reply message. Code is 0 on
// success; otherwise Error names the refusal and Field the offending field.
type Reply struct {
	RequestID string    `json:"request_id"`
	Action    string    `json:"action"`
	Code      int       `json:"code"`
	Msg       string    `json:"msg"`
	Error     ErrorName `json:"error,omitempty"`
	Field     string    `json:"field,omitempty"`
}

// ErrorReply builds the reply for a refused command.
func ErrorReply(requestID, action string, err error) Reply {
	e := AsError(err)
	return Reply{RequestID: requestID, Action: action, Code: e.Name.Code(), Msg: e.Msg, Error: e.Name, Field: e.Field}
}

// OKReply builds the head of a successful reply.
func OKReply(requestID, action, msg string) Reply {
	return Reply{RequestID: requestID, Action: action, Msg: msg}
}

// OrderInfo carries the QR contents in a create reply, as the seed names
// them: WeChat's code_url and Alipay's qr_code.
type OrderInfo struct {
	CodeURL string `json:"code_url,omitempty"`
	QRCode  string `json:"qr_code,omitempty"`
}

// CreateReply answers P/pay/create with the seed's return fields.
type CreateReply struct {
	Reply
	OrderInfo  OrderInfo `json:"orderInfo"`
	OutTradeNo string    `json:"out_trade_no"`
	PayType    string    `json:"pay_type"`
	NeedQRcode bool      `json:"needQRcode"`
	// QRCodeImage is the first code as a PNG data URL (the WeChat one in
	// "any" mode); QRCodeImages has one per provider.
	QRCodeImage  string            `json:"qrcodeImage"`
	QRCodeImages map[string]string `json:"qrcodeImages,omitempty"`
	TotalFee     payment.Fen       `json:"total_fee"`
	ExpiresAt    string            `json:"expires_at"`
}

// OrderSummary describes one order in query and orders replies.
type OrderSummary struct {
	OutTradeNo string `json:"out_trade_no"`
	State      string `json:"state"`
	// Status is the seed's numeric status: -1 closed, 0 unpaid, 1 paid,
	// 2 partly refunded, 3 refunded.
	Status        int         `json:"status"`
	TotalFee      payment.Fen `json:"total_fee"`
	PaidFee       payment.Fen `json:"paid_fee,omitempty"`
	PayerTotal    payment.Fen `json:"payer_total,omitempty"`
	Discount      payment.Fen `json:"discount,omitempty"`
	RefundedFee   payment.Fen `json:"refunded_fee,omitempty"`
	PayType       string      `json:"pay_type"`
	Provider      string      `json:"provider"`
	Type          string      `json:"type,omitempty"`
	CreatedAt     string      `json:"created_at"`
	UpdatedAt     string      `json:"updated_at"`
	ExpiresAt     string      `json:"expires_at,omitempty"`
	PaidAt        string      `json:"paid_at,omitempty"`
	TransactionID string      `json:"transaction_id"`
	Flags         []string    `json:"flags,omitempty"`
}

// QueryReply answers P/pay/query.
type QueryReply struct {
	Reply
	OrderSummary
}

// RefundReply answers P/pay/refund.
type RefundReply struct {
	Reply
	OutTradeNo  string      `json:"out_trade_no"`
	OutRefundNo string      `json:"out_refund_no"`
	RefundFee   payment.Fen `json:"refund_fee"`
	State       string      `json:"state"`
}

// OrdersReply answers P/pay/orders, newest first. Next is the cursor for
// the following page ("" on the last page).
type OrdersReply struct {
	Reply
	Orders []OrderSummary `json:"orders"`
	Next   string         `json:"next"`
}

// Mismatch is one disagreement found by reconcile.
type Mismatch struct {
	OutTradeNo    string `json:"out_trade_no"`
	LocalState    string `json:"local_state"`
	ProviderState string `json:"provider_state"`
	Provider      string `json:"provider"`
	Detail        string `json:"detail"`
}

// ReconcileReply answers P/pay/reconcile.
type ReconcileReply struct {
	Reply
	// Checked counts the orders compared; ProviderOrders the provider
	// orders queried for them (an "any" order has one at each provider).
	Checked        int        `json:"checked"`
	ProviderOrders int        `json:"provider_orders"`
	Mismatches     []Mismatch `json:"mismatches"`
}

// ResultStatus is the terminal outcome a result announces.
type ResultStatus string

// Result statuses (docs/contract.md §3). Only "paid" unlocks the device.
const (
	ResultPaid      ResultStatus = "paid"
	ResultExpired   ResultStatus = "expired"
	ResultCancelled ResultStatus = "cancelled"
	ResultRefunded  ResultStatus = "refunded"
)

// Result is a P/pay/result message, the unlock signal. Seq never repeats on a
// device; Sig is set when a result key is configured (see sign.go).
type Result struct {
	OutTradeNo string       `json:"out_trade_no"`
	Status     ResultStatus `json:"status"`
	PayType    string       `json:"pay_type"`
	Provider   string       `json:"provider,omitempty"`
	TotalFee   payment.Fen  `json:"total_fee"`
	RefundFee  payment.Fen  `json:"refund_fee,omitempty"`
	// PayerTotal and Discount are set on paid results: what the buyer paid
	// and what coupons or discounts took off (0 when none). They inform;
	// total_fee is what was verified at the provider.
	PayerTotal    *payment.Fen    `json:"payer_total,omitempty"`
	Discount      *payment.Fen    `json:"discount,omitempty"`
	TransactionID string          `json:"transaction_id"`
	PaidAt        string          `json:"paid_at"`
	Type          string          `json:"type"`
	Custom        json.RawMessage `json:"custom"`
	Reason        string          `json:"reason,omitempty"`
	Seq           uint64          `json:"seq"`
	TS            int64           `json:"ts"`
	Sig           string          `json:"sig,omitempty"`
}

// Event is a P/pay/event message, one per state transition.
type Event struct {
	OutTradeNo string `json:"out_trade_no"`
	From       string `json:"from"`
	To         string `json:"to"`
	At         string `json:"at"`
	Reason     string `json:"reason"`
	Provider   string `json:"provider,omitempty"`
}

// Status is the retained P/status message.
type Status struct {
	Online      bool   `json:"online"`
	Version     string `json:"version"`
	Pending     int    `json:"pending"`
	ClockSynced bool   `json:"clock_synced"`
	StartedAt   string `json:"started_at"` // RFC 3339
	// Flags name device conditions that need attention (StatusStorageFull,
	// …); absent when there are none.
	Flags []string `json:"flags,omitempty"`
}

// OfflineStatus is the retained status while the daemon is away: the Last
// Will, and what a clean shutdown publishes.
func OfflineStatus() []byte { return []byte(`{"online":false}`) }

// Inbound is one received message (Topic is a suffix under P).
type Inbound struct {
	Topic   string
	Payload []byte
}

// Outgoing is one message to publish (Topic is a suffix under P); ID is its
// outbox entry, confirmed once the broker acknowledged it.
type Outgoing struct {
	ID      uint64
	Topic   string
	Payload []byte
	Retain  bool
}

// FormatTime renders a time for the wire (RFC 3339, seconds, local offset
// preserved); the zero time is "".
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339)
}
