package paysim

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// ErrNoOrder: the provider has no order of that out_trade_no.
var ErrNoOrder = errors.New("no such order")

// Funder says who funds a discount (Payment.DiscountBy).
type Funder string

const (
	// DiscountPlatform: the provider or a bank pays it (WeChat 立减 or a
	// CASH coupon, an Alipay voucher): the merchant still receives the
	// order total.
	DiscountPlatform Funder = "platform"
	// DiscountMerchant: the merchant pays it (WeChat NOCASH coupon, Alipay
	// merchant voucher): the merchant receives the total less the discount.
	DiscountMerchant Funder = "merchant"
)

// Payment is how a simulated buyer pays (the body of POST /_sim/pay), and,
// resolved against an order, the money terms of a paid order.
type Payment struct {
	// Amount is the order total the provider records (fen); 0 = the
	// order's. Another value simulates a provider-side order with another
	// total, e.g. an out_trade_no collision.
	Amount payment.Fen `json:"amount,omitempty"`
	// Discount (fen) lowers what the buyer pays; DiscountBy says who funds
	// it (default DiscountPlatform).
	Discount   payment.Fen `json:"discount,omitempty"`
	DiscountBy Funder      `json:"discount_by,omitempty"`
}

// Validate reports what is wrong with p whatever the order.
func (p Payment) Validate() error {
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

// Resolve checks p against the order's total and fills the defaults.
func (p Payment) Resolve(orderTotal payment.Fen) (Payment, error) {
	if err := p.Validate(); err != nil {
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

// Paid is what the buyer pays: the total less the discount (WeChat
// payer_total, Alipay buyer_pay_amount).
func (p Payment) Paid() payment.Fen { return p.Amount - p.Discount }

// MerchantFunded is the part of the discount the merchant bears (a WeChat
// NOCASH coupon, an Alipay merchant voucher): it is never paid to the
// merchant.
func (p Payment) MerchantFunded() payment.Fen {
	if p.DiscountBy == DiscountMerchant {
		return p.Discount
	}
	return 0
}

// Received is what the merchant receives: the total less a discount it
// funds itself (WeChat settlement_total, Alipay receipt_amount).
func (p Payment) Received() payment.Fen { return p.Amount - p.MerchantFunded() }

// RefundStatus is a refund's state in RefundInfo (WeChat's names; Alipay
// refunds are SUCCESS at once).
type RefundStatus string

// Refund statuses. RefundFail ends a refund in RefundAbnormal or
// RefundClosed.
const (
	RefundProcessing RefundStatus = "PROCESSING"
	RefundSuccess    RefundStatus = "SUCCESS"
	RefundAbnormal   RefundStatus = "ABNORMAL" // the buyer's account cannot receive it
	RefundClosed     RefundStatus = "CLOSED"   // the refund was closed; the money stays with the merchant
)

// OrderInfo is one simulated order as /_sim/orders reports it.
type OrderInfo struct {
	Provider      payment.ProviderName `json:"provider"`
	OutTradeNo    string               `json:"out_trade_no"`
	State         string               `json:"state"`    // the provider's own name: NOTPAY, TRADE_SUCCESS, PRECREATED…
	Total         payment.Fen          `json:"total"`    // the order total the provider holds
	Paid          payment.Fen          `json:"paid"`     // what the buyer paid (payer_total, buyer_pay_amount)
	Received      payment.Fen          `json:"received"` // what the merchant receives (settlement_total, receipt_amount)
	Discount      payment.Fen          `json:"discount,omitempty"`
	DiscountBy    Funder               `json:"discount_by,omitempty"`
	Refunded      payment.Fen          `json:"refunded"`
	TransactionID string               `json:"transaction_id,omitempty"`
	NotifyURL     string               `json:"notify_url,omitempty"`
	Refunds       []RefundInfo         `json:"refunds,omitempty"`
	CreatedAt     time.Time            `json:"created_at"`
}

// RefundInfo is one refund of an order.
type RefundInfo struct {
	OutRefundNo string       `json:"out_refund_no"`
	Amount      payment.Fen  `json:"amount"`
	Status      RefundStatus `json:"status"`
}

// SetTerms fills o's money fields from the order's terms (t.Amount is the
// provider-side total); Paid and Received stay 0 until the buyer has paid.
func (o *OrderInfo) SetTerms(t Payment, paid bool) {
	o.Total, o.Discount, o.DiscountBy = t.Amount, t.Discount, t.DiscountBy
	if paid {
		o.Paid, o.Received = t.Paid(), t.Received()
	}
}

// ListOrders is a Provider's Orders over its order table, which mu
// guards: info reports one order as of now(), bringing its clock-driven
// state up to date first, with mu held. Server.Orders sorts what every
// provider lists.
func ListOrders[O any](mu *sync.Mutex, orders map[string]O, now func() time.Time, info func(o O, now time.Time) OrderInfo) []OrderInfo {
	mu.Lock()
	defer mu.Unlock()
	t := now()
	out := make([]OrderInfo, 0, len(orders))
	for _, o := range orders {
		out = append(out, info(o, t))
	}
	return out
}
