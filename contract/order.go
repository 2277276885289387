package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/kioskpay/kioskpay/payment"
)

// Limits are the configured bounds a create request is checked against.
type Limits struct {
	MaxFee        payment.Fen   // payment.max_fee
	DefaultExpire time.Duration // payment.expire
}

// Bounds on create fields (docs/contract.md §3). They are the intersection of what both
// providers accept, so an order valid here is valid at either.
const (
	MaxSubjectChars = 127
	MaxCustomBytes  = 4 << 10
	MinExpire       = time.Minute
	MaxExpire       = 2 * time.Hour
)

// OrderRequest is the validated "data" object of a create request.
type OrderRequest struct {
	OutTradeNo string
	TotalFee   payment.Fen
	Subject    string
	Type       string
	// Custom is echoed in results and never sent to a provider; nil when
	// absent. It is kept as the raw JSON the controller sent.
	Custom json.RawMessage
	// Other is merged into the provider request.
	Other map[string]any
	// PID selects the merchant account ("default" when absent).
	PID    string
	Expire time.Duration
}

// ParseOrderRequest decodes and validates the "data" object of a create
// request. Every error is an INVALID_ARGUMENT or FEE_OUT_OF_RANGE *Error
// naming the offending field ("data.…").
func ParseOrderRequest(data []byte, lim Limits) (OrderRequest, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return OrderRequest{}, dataErr(ErrInvalidArgument, "data", "must be a JSON object")
	}
	var o OrderRequest
	var err error
	if o.OutTradeNo, err = requiredString(raw, "out_trade_no"); err != nil {
		return o, err
	}
	if !payment.ValidOutTradeNo(o.OutTradeNo) {
		return o, dataErr(ErrInvalidArgument, "data.out_trade_no", "must be 6 to 32 characters of A-Z a-z 0-9 _")
	}
	if o.TotalFee, err = parseFee(raw["total_fee"], lim.MaxFee); err != nil {
		return o, err
	}
	if o.Subject, err = requiredString(raw, "subject"); err != nil {
		return o, err
	}
	if n := utf8.RuneCountInString(o.Subject); n < 1 || n > MaxSubjectChars {
		return o, dataErr(ErrInvalidArgument, "data.subject", fmt.Sprintf("must be 1 to %d characters, got %d", MaxSubjectChars, n))
	}
	for _, r := range o.Subject {
		if r < 0x20 || r == 0x7f {
			return o, dataErr(ErrInvalidArgument, "data.subject", "must not contain control characters")
		}
	}
	if o.Type, err = requiredString(raw, "type"); err != nil {
		return o, err
	}
	if !ValidOrderType(o.Type) {
		return o, dataErr(ErrInvalidArgument, "data.type", "must be 1 to 32 characters of a-z 0-9 _")
	}
	if c, ok := raw["custom"]; ok && !isNull(c) {
		if len(c) > MaxCustomBytes {
			return o, dataErr(ErrInvalidArgument, "data.custom", fmt.Sprintf("must be at most %d bytes", MaxCustomBytes))
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(c, &obj) != nil || obj == nil {
			return o, dataErr(ErrInvalidArgument, "data.custom", "must be a JSON object")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, c); err != nil {
			return o, dataErr(ErrInvalidArgument, "data.custom", "must be a JSON object")
		}
		o.Custom = buf.Bytes()
	}
	if c, ok := raw["other"]; ok && !isNull(c) {
		d := json.NewDecoder(bytes.NewReader(c))
		d.UseNumber() // keep large integers exact on their way to the provider
		if err := d.Decode(&o.Other); err != nil || o.Other == nil {
			return o, dataErr(ErrInvalidArgument, "data.other", "must be a JSON object")
		}
		if len(o.Other) == 0 {
			o.Other = nil
		}
	}
	o.PID = "default"
	if p, ok := raw["pid"]; ok && !isNull(p) {
		if o.PID, err = requiredString(raw, "pid"); err != nil {
			return o, err
		}
		if !ValidPID(o.PID) {
			return o, dataErr(ErrInvalidArgument, "data.pid", "must be 1 to 64 characters of A-Z a-z 0-9 _ -")
		}
	}
	o.Expire = lim.DefaultExpire
	if e, ok := raw["expire_seconds"]; ok && !isNull(e) {
		n, err := parseInt(e)
		if err != nil || n < int64(MinExpire/time.Second) || n > int64(MaxExpire/time.Second) {
			return o, dataErr(ErrInvalidArgument, "data.expire_seconds", fmt.Sprintf("must be an integer from %d to %d", int64(MinExpire/time.Second), int64(MaxExpire/time.Second)))
		}
		o.Expire = time.Duration(n) * time.Second
	}
	return o, nil
}

func requiredString(raw map[string]json.RawMessage, key string) (string, error) {
	field := "data." + key
	v, ok := raw[key]
	if !ok || isNull(v) {
		return "", dataErr(ErrInvalidArgument, field, "is required")
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", dataErr(ErrInvalidArgument, field, "must be a string")
	}
	if !utf8.ValidString(s) {
		return "", dataErr(ErrInvalidArgument, field, "must be valid UTF-8")
	}
	return s, nil
}

// parseInt accepts only a JSON integer literal: no strings, no fractions, no
// exponents. "10.0" is refused too, because a float anywhere near money is a
// bug in the sender.
func parseInt(v json.RawMessage) (int64, error) {
	s := string(bytes.TrimSpace(v))
	if s == "" || s[0] == '"' {
		return 0, fmt.Errorf("not a number")
	}
	for i, c := range s {
		if (c < '0' || c > '9') && !(i == 0 && c == '-') {
			return 0, fmt.Errorf("not an integer")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func parseFee(v json.RawMessage, max payment.Fen) (payment.Fen, error) {
	const field = "data.total_fee"
	if v == nil || isNull(v) {
		return 0, dataErr(ErrInvalidArgument, field, "is required")
	}
	n, err := parseInt(v)
	if err != nil {
		return 0, dataErr(ErrInvalidArgument, field, "must be an integer number of fen (100 = ¥1.00), not a string or a fraction")
	}
	if n < 1 || (max > 0 && payment.Fen(n) > max) {
		return 0, dataErr(ErrFeeOutOfRange, field, fmt.Sprintf("must be from 1 to %d fen, got %d", int64(max), n))
	}
	return payment.Fen(n), nil
}

// dataErr is a refusal of one field of the create "data" object; the
// message starts with the field's path.
func dataErr(name ErrorName, field, reason string) *Error {
	return &Error{Name: name, Field: field, Msg: field + " " + reason}
}
