package paysim

import (
	"fmt"
	"time"
)

// Never, as Realism.WxRefundMax, keeps WeChat refunds PROCESSING until a
// hook decides them.
const Never time.Duration = -1

// Realism holds the simulator's switchable realistic behaviours (see the
// package documentation for what each models and where that is documented).
type Realism struct {
	// WxRefundMin and WxRefundMax bound how long a WeChat refund stays
	// PROCESSING before it succeeds by itself. WxRefundMax = Never turns
	// automatic completion off.
	WxRefundMin, WxRefundMax time.Duration
	// AlipayRefundWindow is how long after payment an Alipay trade stays
	// refundable before it becomes TRADE_FINISHED; 0 = forever.
	AlipayRefundWindow time.Duration
	// AlipayZeroQueryAmounts makes alipay.trade.query report
	// buyer_pay_amount, invoice_amount and receipt_amount of paid trades as
	// "0.00", as most captured real answers do (default true).
	AlipayZeroQueryAmounts bool
	// WxStrictRefundTotal refuses WeChat refunds whose amount.total differs
	// from the provider-side order total, as WeChat does (default true).
	WxStrictRefundTotal bool
}

// Defaults of Realism.
const (
	DefaultWxRefundMin        = time.Second
	DefaultWxRefundMax        = 10 * time.Second
	DefaultAlipayRefundWindow = 365 * 24 * time.Hour
)

// DefaultRealism returns the simulator's default behaviour: every switch
// at its realistic value.
func DefaultRealism() Realism {
	return Realism{
		WxRefundMin:            DefaultWxRefundMin,
		WxRefundMax:            DefaultWxRefundMax,
		AlipayRefundWindow:     DefaultAlipayRefundWindow,
		AlipayZeroQueryAmounts: true,
		WxStrictRefundTotal:    true,
	}
}

// Validate reports the first field that makes no sense.
func (r Realism) Validate() error {
	switch {
	case r.WxRefundMin < 0:
		return fmt.Errorf("paysim realism: WxRefundMin %v: want ≥ 0", r.WxRefundMin)
	case r.WxRefundMax != Never && r.WxRefundMax < r.WxRefundMin:
		return fmt.Errorf("paysim realism: WxRefundMax %v: want ≥ WxRefundMin %v, or Never", r.WxRefundMax, r.WxRefundMin)
	case r.AlipayRefundWindow < 0:
		return fmt.Errorf("paysim realism: AlipayRefundWindow %v: want ≥ 0 (0 = forever)", r.AlipayRefundWindow)
	}
	return nil
}
