package payment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"
)

// Error names used in replies when a create request is refused (docs/contract.md §3).
const (
	CodeInvalidArgument = "INVALID_ARGUMENT"
	CodeFeeOutOfRange   = "FEE_OUT_OF_RANGE"
)

// FieldError says which field of a request is wrong and why. Code is the
// error name the reply carries (docs/contract.md §3.4).
type FieldError struct {
	Field  string // JSON path, e.g. "data.total_fee"
	Code   string // CodeInvalidArgument or CodeFeeOutOfRange
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Limits are the configured bounds a create request is checked against.
type Limits struct {
	MaxFee        Fen           // payment.max_fee
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

var (
	outTradeNoRE = regexp.MustCompile(`^[A-Za-z0-9_]{6,32}$`)
	orderTypeRE  = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)
	pidRE        = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// OrderRequest is the validated "data" object of a create request.
type OrderRequest struct {
	OutTradeNo string
	TotalFee   Fen
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

// ValidOutTradeNo reports whether s is an out_trade_no both providers accept.
func ValidOutTradeNo(s string) bool { return outTradeNoRE.MatchString(s) }

// ParseOrderRequest decodes and validates the "data" object of a create
// request. Every error is a *FieldError naming the offending field.
func ParseOrderRequest(data []byte, lim Limits) (OrderRequest, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return OrderRequest{}, &FieldError{"data", CodeInvalidArgument, "must be a JSON object"}
	}
	var o OrderRequest
	var err error
	if o.OutTradeNo, err = requiredString(raw, "out_trade_no"); err != nil {
		return o, err
	}
	if !ValidOutTradeNo(o.OutTradeNo) {
		return o, &FieldError{"data.out_trade_no", CodeInvalidArgument, "must be 6 to 32 characters of A-Z a-z 0-9 _"}
	}
	if o.TotalFee, err = parseFee(raw["total_fee"], lim.MaxFee); err != nil {
		return o, err
	}
	if o.Subject, err = requiredString(raw, "subject"); err != nil {
		return o, err
	}
	if n := utf8.RuneCountInString(o.Subject); n < 1 || n > MaxSubjectChars {
		return o, &FieldError{"data.subject", CodeInvalidArgument, fmt.Sprintf("must be 1 to %d characters, got %d", MaxSubjectChars, n)}
	}
	for _, r := range o.Subject {
		if r < 0x20 || r == 0x7f {
			return o, &FieldError{"data.subject", CodeInvalidArgument, "must not contain control characters"}
		}
	}
	if o.Type, err = requiredString(raw, "type"); err != nil {
		return o, err
	}
	if !orderTypeRE.MatchString(o.Type) {
		return o, &FieldError{"data.type", CodeInvalidArgument, "must be 1 to 32 characters of a-z 0-9 _"}
	}
	if c, ok := raw["custom"]; ok && !isNull(c) {
		if len(c) > MaxCustomBytes {
			return o, &FieldError{"data.custom", CodeInvalidArgument, fmt.Sprintf("must be at most %d bytes", MaxCustomBytes)}
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(c, &obj) != nil || obj == nil {
			return o, &FieldError{"data.custom", CodeInvalidArgument, "must be a JSON object"}
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, c); err != nil {
			return o, &FieldError{"data.custom", CodeInvalidArgument, "must be a JSON object"}
		}
		o.Custom = buf.Bytes()
	}
	if c, ok := raw["other"]; ok && !isNull(c) {
		d := json.NewDecoder(bytes.NewReader(c))
		d.UseNumber() // keep large integers exact on their way to the provider
		if err := d.Decode(&o.Other); err != nil || o.Other == nil {
			return o, &FieldError{"data.other", CodeInvalidArgument, "must be a JSON object"}
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
		if !pidRE.MatchString(o.PID) {
			return o, &FieldError{"data.pid", CodeInvalidArgument, "must be 1 to 64 characters of A-Z a-z 0-9 _ -"}
		}
	}
	o.Expire = lim.DefaultExpire
	if e, ok := raw["expire_seconds"]; ok && !isNull(e) {
		n, err := parseInt(e)
		if err != nil || n < int64(MinExpire/time.Second) || n > int64(MaxExpire/time.Second) {
			return o, &FieldError{"data.expire_seconds", CodeInvalidArgument, fmt.Sprintf("must be an integer from %d to %d", int64(MinExpire/time.Second), int64(MaxExpire/time.Second))}
		}
		o.Expire = time.Duration(n) * time.Second
	}
	return o, nil
}

func isNull(b json.RawMessage) bool { return string(bytes.TrimSpace(b)) == "null" }

func requiredString(raw map[string]json.RawMessage, key string) (string, error) {
	field := "data." + key
	v, ok := raw[key]
	if !ok || isNull(v) {
		return "", &FieldError{field, CodeInvalidArgument, "is required"}
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", &FieldError{field, CodeInvalidArgument, "must be a string"}
	}
	if !utf8.ValidString(s) {
		return "", &FieldError{field, CodeInvalidArgument, "must be valid UTF-8"}
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

func parseFee(v json.RawMessage, max Fen) (Fen, error) {
	const field = "data.total_fee"
	if v == nil || isNull(v) {
		return 0, &FieldError{field, CodeInvalidArgument, "is required"}
	}
	n, err := parseInt(v)
	if err != nil {
		return 0, &FieldError{field, CodeInvalidArgument, "must be an integer number of fen (100 = ¥1.00), not a string or a fraction"}
	}
	if n < 1 || (max > 0 && Fen(n) > max) {
		return 0, &FieldError{field, CodeFeeOutOfRange, fmt.Sprintf("must be from 1 to %d fen, got %d", int64(max), n)}
	}
	return Fen(n), nil
}
