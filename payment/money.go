package payment

import (
	"fmt"
	"strconv"
	"strings"
)

// Fen is an amount of Chinese yuan in fen (1/100 yuan). Money never travels
// as a float anywhere in kioskpay; yuan strings exist only at the Alipay edge.
type Fen int64

// Yuan formats f the way Alipay expects amounts: "12.50".
func (f Fen) Yuan() string {
	sign := ""
	v := int64(f)
	if v < 0 {
		sign, v = "-", -v
	}
	return fmt.Sprintf("%s%d.%02d", sign, v/100, v%100)
}

// String formats f for people: "¥12.50".
func (f Fen) String() string { return "¥" + f.Yuan() }

// ParseYuan parses an Alipay amount such as "12.5", "12.50" or "0.01" into fen.
// It refuses more than two decimals, signs, exponents and empty strings rather
// than rounding: a rounding error here would be a wrong payment.
func ParseYuan(s string) (Fen, error) {
	if s == "" {
		return 0, fmt.Errorf("parse yuan %q: empty", s)
	}
	whole, frac, hasFrac := strings.Cut(s, ".")
	if whole == "" || (hasFrac && (frac == "" || len(frac) > 2)) {
		return 0, fmt.Errorf("parse yuan %q: want digits with at most two decimals", s)
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("parse yuan %q: want digits with at most two decimals", s)
			}
		}
	}
	if len(whole) > 12 {
		return 0, fmt.Errorf("parse yuan %q: too large", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse yuan %q: %w", s, err)
	}
	for len(frac) < 2 {
		frac += "0"
	}
	c, _ := strconv.ParseInt(frac, 10, 64)
	return Fen(w*100 + c), nil
}
