package store

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kioskpay/kioskpay/payment"
)

// Records written before the money rule kept one "paid" figure per leg:
// what the buyer paid as the adapter then read it.
func TestLegacyOrderUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name   string
		record string
		check  func(t *testing.T, o Order)
	}{
		{"delivered order: the leg's total is the order total",
			`{"out_trade_no":"old_0001","total_fee":1000,"state":"delivered","winner":"wxpay","paid_fee":1000,
			  "legs":[{"provider":"wxpay","state":"paid","paid":1000,"transaction_id":"42"}]}`,
			func(t *testing.T, o Order) {
				l := o.Leg(payment.WxPay)
				if l.Total != 1000 || l.PayerTotal != 1000 || l.LegacyPaid != 0 || o.PaidFee != 1000 {
					t.Fatalf("leg %+v, paid_fee %d", l, o.PaidFee)
				}
			}},
		{"Alipay 0.00 stuck refunding 0 fen: the refund asks for the order total",
			`{"out_trade_no":"old_0002","total_fee":1000,"state":"refunding","winner":"alipay","flags":["amount_mismatch"],
			  "legs":[{"provider":"alipay","state":"paid","transaction_id":"2026"}],
			  "refunds":[{"out_refund_no":"old_0002R1","provider":"alipay","amount":0,"state":"pending","main":true,"attempts":4711}]}`,
			func(t *testing.T, o Order) {
				r := o.Refunds[0]
				if r.Amount != 1000 || r.Attempts != 0 || o.PaidFee != 1000 || o.Leg(payment.Alipay).Total != 0 {
					t.Fatalf("refund %+v, paid_fee %d, leg %+v", r, o.PaidFee, o.Leg(payment.Alipay))
				}
			}},
		{"WeChat coupon refunded as a mismatch: amounts already sent stay",
			`{"out_trade_no":"old_0003","total_fee":1000,"state":"refunded","winner":"wxpay","paid_fee":900,"refunded_fee":900,"flags":["amount_mismatch"],
			  "legs":[{"provider":"wxpay","state":"paid","paid":900}],
			  "refunds":[{"out_refund_no":"old_0003R1","provider":"wxpay","amount":900,"state":"success","main":true}]}`,
			func(t *testing.T, o Order) {
				l := o.Leg(payment.WxPay)
				if l.PayerTotal != 900 || l.Total != 0 || o.Refunds[0].Amount != 900 || o.PaidFee != 900 {
					t.Fatalf("leg %+v, refund %+v, paid_fee %d", l, o.Refunds[0], o.PaidFee)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o Order
			if err := json.Unmarshal([]byte(tc.record), &o); err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
			b, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), `"paid":`) {
				t.Fatalf("upgraded record still writes the legacy key: %s", b)
			}
			var again Order
			if err := json.Unmarshal(b, &again); err != nil {
				t.Fatal(err)
			}
			tc.check(t, again)
		})
	}
}
