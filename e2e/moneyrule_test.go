package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// alert waits for a non-transition event (from = to) whose reason starts
// with flag.
func (e *env) alert(otn, flag string, d time.Duration) testrig.Message {
	e.t.Helper()
	return e.waitFor(d, "event "+flag+" for "+otn, func(m testrig.Message) bool {
		return isAlert(m, otn, flag)
	})
}

func isAlert(m testrig.Message, otn, flag string) bool {
	return m.Topic == "pay/event" && m.Str("out_trade_no") == otn && m.Str("from") == m.Str("to") && strings.HasPrefix(m.Str("reason"), flag)
}

// alerts counts them.
func (e *env) alerts(otn, flag string) int {
	return len(e.find(func(m testrig.Message) bool { return isAlert(m, otn, flag) }))
}

// query asks the device about an order and returns the reply.
func (e *env) query(otn string) testrig.Message {
	e.t.Helper()
	rid := "q-" + testrig.RandomHex(4)
	e.send("pay/query", map[string]any{"request_id": rid, "out_trade_no": otn})
	return e.reply(rid)
}

func hasFlag(m testrig.Message, flag string) bool {
	fs, _ := m.Fields["flags"].([]any)
	for _, f := range fs {
		if f == flag {
			return true
		}
	}
	return false
}

// The money rule through paysim and a real broker: the order total at the
// provider decides delivery; coupons and "0.00" buyer amounts do not. (A
// provider order of another total: TestRefunds/provider_total_….)
func TestMoneyRule(t *testing.T) {
	t.Parallel()

	for _, by := range []paysim.Funder{paysim.DiscountPlatform, paysim.DiscountMerchant} {
		t.Run("wxpay_discount_"+string(by), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, daemonOpts{provider: "wxpay", realism: func(r *paysim.Realism) { r.WxStrictRefundTotal = true }})
			otn := otnPrefix + "disc_" + string(by[:4]) + "_" + testrig.RandomHex(3)
			e.create("c1", otn, 1000, "")
			if err := e.sim.PayWith(payment.WxPay, otn, paysim.Payment{Discount: 150, DiscountBy: by}); err != nil {
				t.Fatal(err)
			}
			res := e.result(otn, "paid", 20*time.Second)
			if res.Num("total_fee") != 1000 || res.Num("payer_total") != 850 || res.Num("discount") != 150 {
				t.Fatalf("paid result %s: want total_fee 1000, payer_total 850, discount 150", res.Payload)
			}
			e.ack(otn, true)
			e.event(otn, "delivered", 10*time.Second)
			if o := e.simOrder(payment.WxPay, otn); o.Paid != 850 || len(o.Refunds) != 0 {
				t.Fatalf("paysim: %+v", o)
			}
			e.checkSeqs(otn)
		})
	}

	t.Run("alipay_zero_receipt_amount", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "alipay", realism: func(r *paysim.Realism) { r.AlipayZeroQueryAmounts = true }})
		otn := otnPrefix + "zero_" + testrig.RandomHex(3)
		e.create("c1", otn, 1000, "")
		e.pay(payment.Alipay, otn, 0)
		res := e.result(otn, "paid", 20*time.Second)
		if res.Num("total_fee") != 1000 || res.Num("payer_total") != 1000 {
			t.Fatalf("paid result %s", res.Payload)
		}
		e.ack(otn, true)
		e.event(otn, "delivered", 10*time.Second)
		if o := e.simOrder(payment.Alipay, otn); len(o.Refunds) != 0 {
			t.Fatalf("refunded a paid order: %+v", o)
		}
	})
}

// The README's walk-through: no ack on a WeChat payment, and the refunded
// result arrives with paysim's defaults (refunds complete by themselves).
func TestNoAckRefundedWithPaysimDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("waits up to 30 s for provider refunds and retry timers; run without -short")
	}
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay", ackTimeout: "2s"})
	otn := otnPrefix + "noack2_" + testrig.RandomHex(3)
	e.create("c1", otn, 700, "")
	e.pay(payment.WxPay, otn, 0)
	paid := e.result(otn, "paid", 20*time.Second)
	res := e.result(otn, "refunded", 2*time.Second+paysim.DefaultWxRefundMax+15*time.Second)
	if d := res.At.Sub(paid.At); d > 2*time.Second+15*time.Second {
		t.Errorf("refunded result %s after the paid result, want within ack_timeout + 15 s", d)
	}
	if o := e.simOrder(payment.WxPay, otn); o.Refunded != 700 || len(o.Refunds) != 1 {
		t.Errorf("paysim: %+v", o)
	}
}

// A refund WeChat reports ABNORMAL is reported once and then left to a
// human: no loop of events or provider calls.
func TestRefundAbnormalOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("waits about 10 s for provider refunds and retry timers; run without -short")
	}
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay", realism: func(r *paysim.Realism) { r.WxRefundMax = paysim.Never }})
	otn := otnPrefix + "abn_" + testrig.RandomHex(3)
	e.create("c1", otn, 500, "")
	e.pay(payment.WxPay, otn, 0)
	e.result(otn, "paid", 20*time.Second)
	e.ack(otn, false)
	o := e.waitSim(payment.WxPay, otn, "refund requested", 20*time.Second, false, func(o paysim.OrderInfo) bool { return len(o.Refunds) == 1 })
	if err := e.sim.RefundFail(payment.WxPay, o.Refunds[0].OutRefundNo, paysim.RefundAbnormal); err != nil {
		t.Fatal(err)
	}
	ev := e.alert(otn, "refund_abnormal", 60*time.Second)
	if ev.Str("to") != "refunding" {
		t.Errorf("event %s", ev.Payload)
	}
	calls := e.sim.Stats()["wxpay.refund_query"]
	time.Sleep(5 * time.Second) // an observation window
	if n := e.alerts(otn, "refund_abnormal"); n != 1 {
		t.Errorf("%d refund_abnormal events, want 1", n)
	}
	if n := e.sim.Stats()["wxpay.refund_query"] - calls; n > 1 {
		t.Errorf("%d refund queries within 5 s of ABNORMAL: the slow rate is 10 min", n)
	}
	if st := e.sim.Stats()["wxpay.refund"]; st != 1 {
		t.Errorf("%d refund requests, want 1 (never re-sent)", st)
	}
	q := e.query(otn)
	if q.Str("state") != "refunding" || !hasFlag(q, "refund_abnormal") {
		t.Errorf("query reply %s", q.Payload)
	}
}

// A refund that never gets a definite answer: bounded retries, one
// refund_stuck event, slow retries after, and the refund completes when
// the provider answers again.
func TestRefundStuck(t *testing.T) {
	if testing.Short() {
		t.Skip("waits about 15 s for provider refunds and retry timers; run without -short")
	}
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay", poll: "300ms", retry: "3/2s"})
	otn := otnPrefix + "stuck_" + testrig.RandomHex(3)
	e.create("c1", otn, 600, "")
	e.pay(payment.WxPay, otn, 0)
	e.result(otn, "paid", 20*time.Second)
	if err := e.sim.InjectFault(paysim.Fault{Provider: payment.WxPay, API: "refund", Kind: "5xx"}); err != nil {
		t.Fatal(err)
	}
	e.ack(otn, false)
	ev := e.alert(otn, "refund_stuck", 30*time.Second)
	if ev.Str("to") != "refunding" || !strings.Contains(ev.Str("reason"), "3 attempts") {
		t.Errorf("event %s", ev.Payload)
	}
	at := e.sim.Stats()["wxpay.refund"]
	if at != 3 {
		t.Errorf("%d refund calls when reported stuck, want the bound 3", at)
	}
	// Slow retries: every 2 s, not the 300 ms backoff.
	time.Sleep(5 * time.Second) // an observation window
	if n := e.sim.Stats()["wxpay.refund"] - at; n < 1 || n > 3 {
		t.Errorf("%d refund calls in 5 s after stuck, want about 2 (every 2 s)", n)
	}
	e.sim.ClearFaults()
	e.result(otn, "refunded", 30*time.Second)
	if n := e.alerts(otn, "refund_stuck"); n != 1 {
		t.Errorf("%d refund_stuck events, want 1", n)
	}
	if q := e.query(otn); !hasFlag(q, "refund_stuck") {
		t.Errorf("query reply %s: want flag refund_stuck", q.Payload)
	}
	if o := e.simOrder(payment.WxPay, otn); o.Refunded != 600 {
		t.Errorf("paysim: %+v", o)
	}
}
