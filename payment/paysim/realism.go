package paysim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kioskpay/kioskpay/payment"
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

// wxRefundDelay draws how long one WeChat refund stays PROCESSING; ok is
// false when refunds do not complete by themselves.
func (r Realism) wxRefundDelay() (d time.Duration, ok bool) {
	if r.WxRefundMax == Never {
		return 0, false
	}
	return r.WxRefundMin + rand.N(r.WxRefundMax-r.WxRefundMin+1), true
}

// Who funds a discount (Payment.DiscountBy).
const (
	// DiscountPlatform: the provider or a bank pays it (WeChat 立减 or a
	// CASH coupon, an Alipay voucher): the merchant still receives the
	// order total.
	DiscountPlatform = "platform"
	// DiscountMerchant: the merchant pays it (WeChat NOCASH coupon, Alipay
	// merchant voucher): the merchant receives the total less the discount.
	DiscountMerchant = "merchant"
)

// Payment is how a simulated buyer pays (the body of POST /_sim/pay).
type Payment struct {
	// Amount is the order total the provider records (fen); 0 = the
	// order's. Another value simulates a provider-side order with another
	// total, e.g. an out_trade_no collision.
	Amount payment.Fen `json:"amount,omitempty"`
	// Discount (fen) lowers what the buyer pays; DiscountBy says who funds
	// it (default DiscountPlatform).
	Discount   payment.Fen `json:"discount,omitempty"`
	DiscountBy string      `json:"discount_by,omitempty"`
}

// check reports what is wrong with p whatever the order.
func (p Payment) check() error {
	switch {
	case p.Amount < 0:
		return errors.New("amount must be positive fen")
	case p.Discount < 0:
		return errors.New("discount must be ≥ 0 fen")
	case p.DiscountBy != "" && p.DiscountBy != DiscountPlatform && p.DiscountBy != DiscountMerchant:
		return fmt.Errorf("discount_by %q: want platform or merchant", p.DiscountBy)
	case p.Amount > 0 && p.Discount >= p.Amount:
		return fmt.Errorf("discount %d fen: want less than amount %d fen", p.Discount, p.Amount)
	}
	return nil
}

// resolve checks p against the order's total and fills the defaults.
func (p Payment) resolve(orderTotal payment.Fen) (Payment, error) {
	if err := p.check(); err != nil {
		return p, err
	}
	if p.Amount == 0 {
		p.Amount = orderTotal
	}
	if p.Discount >= p.Amount {
		return p, fmt.Errorf("discount %d fen: want less than the order total %d fen", p.Discount, p.Amount)
	}
	if p.Discount == 0 {
		p.DiscountBy = ""
	} else if p.DiscountBy == "" {
		p.DiscountBy = DiscountPlatform
	}
	return p, nil
}
