package payment

import "regexp"

var outTradeNoRE = regexp.MustCompile(`^[A-Za-z0-9_]{6,32}$`)

// ValidOutTradeNo reports whether s is an out_trade_no both providers accept.
func ValidOutTradeNo(s string) bool { return outTradeNoRE.MatchString(s) }

// CodeInvalidArgument is the contract's error name for a refused field
// (contract.ErrInvalidArgument); adapters use it in FieldError.Code.
const CodeInvalidArgument = "INVALID_ARGUMENT"

// FieldError says which field of an order a provider adapter refuses and
// why (e.g. a reserved key in "other"). Code is the error name the reply
// carries (docs/contract.md §3.4).
type FieldError struct {
	Field  string // JSON path, e.g. "data.other.notify_url"
	Code   string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }
