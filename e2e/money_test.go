package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// refundedOnce waits until paysim shows exactly one refund of amount for
// the order, completing WeChat refunds the way the bank would.
func (e *env) refundedOnce(p payment.ProviderName, otn string, amount payment.Fen) {
	e.t.Helper()
	o := e.waitSim(p, otn, "refund", 20*time.Second, true, func(o paysim.OrderInfo) bool { return o.Refunded >= amount })
	if o.Refunded != amount || len(o.Refunds) != 1 || o.Refunds[0].Amount != amount {
		e.t.Errorf("%s %s: want exactly one refund of %d fen, paysim has %+v", p, otn, amount, o)
	}
}

// noPaid asserts no paid result was ever published for the order.
func (e *env) noPaid(otn string) {
	e.t.Helper()
	for _, r := range e.results(otn) {
		if r.Str("status") == "paid" {
			e.t.Errorf("order %s was unlocked: %s", otn, r.Payload)
		}
	}
}

// Money paid for a service that was not delivered goes back, exactly once,
// and visibly at the provider.
func TestRefunds(t *testing.T) {
	t.Parallel()

	t.Run("no_ack", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "wxpay", ackTimeout: "2s"})
		otn := otnPrefix + "noack_" + testrig.RandomHex(3)
		e.create("c1", otn, 700, "")
		e.pay(payment.WxPay, otn, 0)
		paid := e.result(otn, "paid", 20*time.Second)
		ev := e.event(otn, "refunding", 10*time.Second)
		if !strings.Contains(ev.Str("reason"), "ack_timeout") {
			t.Errorf("refunding event %s", ev.Payload)
		}
		if d := ev.At.Sub(paid.At); d < 1500*time.Millisecond {
			t.Errorf("refund started %s after the paid result, before ack_timeout (2s)", d)
		}
		e.refundedOnce(payment.WxPay, otn, 700)
		res := e.result(otn, "refunded", 20*time.Second)
		if res.Num("refund_fee") != 700 {
			t.Errorf("refunded result %s", res.Payload)
		}
		e.ack(otn, true) // a late ack: the money already went back
		e.checkSeqs(otn)
		e.refundedOnce(payment.WxPay, otn, 700)
	})

	t.Run("ack_failed", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "alipay"})
		otn := otnPrefix + "ackno_" + testrig.RandomHex(3)
		e.create("c1", otn, 650, "")
		e.pay(payment.Alipay, otn, 0)
		e.result(otn, "paid", 20*time.Second)
		e.ack(otn, false)
		e.result(otn, "refunded", 20*time.Second)
		e.refundedOnce(payment.Alipay, otn, 650)
		e.ack(otn, true)
		e.checkSeqs(otn)
	})

	t.Run("hold", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "alipay", ackTimeout: "1s", onNoAck: "hold"})
		otn := otnPrefix + "hold_" + testrig.RandomHex(3)
		e.create("c1", otn, 800, "")
		e.pay(payment.Alipay, otn, 0)
		e.result(otn, "paid", 20*time.Second)
		e.event(otn, "held", 10*time.Second)
		time.Sleep(time.Second) // held means held: nothing moves at paysim
		if o := e.simOrder(payment.Alipay, otn); o.Refunded != 0 || len(o.Refunds) != 0 {
			t.Fatalf("held order refunded: %+v", o)
		}
		e.ack(otn, true) // delivered after all
		e.event(otn, "delivered", 10*time.Second)
		if o := e.simOrder(payment.Alipay, otn); len(o.Refunds) != 0 {
			t.Errorf("delivered order refunded: %+v", o)
		}
		e.checkSeqs(otn)
	})

	// The provider holds an order of another total (an out_trade_no
	// collision, a provider-side order created with other parameters):
	// never delivered, refunded in full at the provider's total (WeChat
	// refuses any other amount.total), flagged.
	for _, paid := range []payment.Fen{999, 1200} {
		t.Run(fmt.Sprintf("provider_total_%d_for_1000", paid), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, daemonOpts{provider: "wxpay", realism: func(r *paysim.Realism) { r.WxStrictRefundTotal = true }})
			otn := otnPrefix + "mism_" + testrig.RandomHex(3)
			e.create("c1", otn, 1000, "")
			e.pay(payment.WxPay, otn, paid)
			ev := e.event(otn, "refunding", 20*time.Second)
			if !strings.Contains(ev.Str("reason"), "amount_mismatch") {
				t.Errorf("event %s", ev.Payload)
			}
			e.refundedOnce(payment.WxPay, otn, paid)
			if res := e.result(otn, "refunded", 20*time.Second); res.Num("refund_fee") != float64(paid) {
				t.Errorf("refunded result %s", res.Payload)
			}
			e.noPaid(otn)
			e.checkSeqs(otn)
			if q := e.query(otn); !hasFlag(q, "amount_mismatch") {
				t.Errorf("query reply %s: want flag amount_mismatch", q.Payload)
			}
		})
	}
}

// provider = "any": both codes; the first payment wins and the other
// provider order is closed; a second payment is refunded.
func TestAnyMode(t *testing.T) {
	t.Parallel()

	t.Run("pay_one", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "any"})
		otn := otnPrefix + "any1_" + testrig.RandomHex(3)
		rep := e.create("c1", otn, 300, "")
		info, _ := rep.Fields["orderInfo"].(map[string]any)
		imgs, _ := rep.Fields["qrcodeImages"].(map[string]any)
		for p, key := range map[string]string{"wxpay": "code_url", "alipay": "qr_code"} {
			code, _ := info[key].(string)
			img, _ := imgs[p].(string)
			if code == "" || img == "" {
				t.Fatalf("any mode reply lacks the %s code: %s", p, rep.Payload)
			}
			if got := decodeQR(t, dataURLPNG(t, img)); got != code {
				t.Errorf("%s image decodes to %q, want %q", p, got, code)
			}
		}
		e.pay(payment.WxPay, otn, 0)
		res := e.result(otn, "paid", 20*time.Second)
		if res.Str("pay_type") != "wxpay_native" {
			t.Errorf("result %s", res.Payload)
		}
		// The Alipay code nobody scanned is burned (alipay.trade.cancel).
		e.waitSim(payment.Alipay, otn, "alipay leg closed", 20*time.Second, false, func(o paysim.OrderInfo) bool {
			return o.State == "QR_CANCELLED" || o.State == "TRADE_CLOSED"
		})
		if err := e.sim.Pay(payment.Alipay, otn, 0); err == nil {
			t.Errorf("the closed Alipay code could still be paid")
		}
		e.ack(otn, true)
		e.event(otn, "delivered", 10*time.Second)
	})

	t.Run("pay_both", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "any"})
		otn := otnPrefix + "any2_" + testrig.RandomHex(3)
		e.create("c1", otn, 300, "")
		e.pay(payment.Alipay, otn, 0)
		e.pay(payment.WxPay, otn, 0)
		res := e.result(otn, "paid", 20*time.Second)
		winner := payment.ProviderName(res.Str("provider"))
		loser := payment.Alipay
		if winner == payment.Alipay {
			loser = payment.WxPay
		}
		if winner != payment.WxPay && winner != payment.Alipay {
			t.Fatalf("result names no provider: %s", res.Payload)
		}
		e.ack(otn, true)
		e.event(otn, "delivered", 10*time.Second)
		e.refundedOnce(loser, otn, 300)
		if o := e.simOrder(winner, otn); o.Refunded != 0 {
			t.Errorf("the delivered payment was refunded: %+v", o)
		}
		if n := len(e.find(func(m testrig.Message) bool {
			return m.Topic == "pay/result" && m.Str("out_trade_no") == otn && m.Str("status") == "paid" && m.Str("provider") != string(winner)
		})); n != 0 {
			t.Errorf("the second payment unlocked too")
		}
		e.checkSeqs(otn)
	})
}

// A payment that lands after the order has ended is refunded.
//
// paysim, like both providers, refuses to take money for an order that was
// closed: WeChat's close is final and Alipay's cancel refunds a payment
// that slipped in. So the faithful way for money to arrive late is a
// second QR code that was still valid: in "any" mode the WeChat code wins
// and the order is delivered, while the daemon cannot reach Alipay (a
// partition, simulated with 5xx on every Alipay call), so the Alipay code
// stays payable; the buyer pays it too. When Alipay is reachable again the
// daemon's close of that leg finds the payment and refunds it.
func TestPaymentAfterEndRefunded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "any"})
	otn := otnPrefix + "late_" + testrig.RandomHex(3)
	e.create("c1", otn, 450, "")
	if err := e.sim.InjectFault(paysim.Fault{Provider: payment.Alipay, Kind: paysim.Fault5xx}); err != nil {
		t.Fatal(err)
	}
	e.pay(payment.WxPay, otn, 0)
	e.result(otn, "paid", 20*time.Second)
	e.ack(otn, true)
	e.event(otn, "delivered", 10*time.Second)

	e.pay(payment.Alipay, otn, 0) // late: the order was delivered already
	time.Sleep(500 * time.Millisecond)
	e.sim.ClearFaults()
	e.refundedOnce(payment.Alipay, otn, 450)
	e.waitFor(10*time.Second, "duplicate payment event", func(m testrig.Message) bool {
		return m.Topic == "pay/event" && m.Str("out_trade_no") == otn && strings.Contains(m.Str("reason"), "duplicate_payment")
	})
	if o := e.simOrder(payment.WxPay, otn); o.Refunded != 0 {
		t.Errorf("the delivered payment was refunded: %+v", o)
	}
	if n := len(e.find(func(m testrig.Message) bool {
		return m.Topic == "pay/result" && m.Str("out_trade_no") == otn && m.Str("status") == "paid"
	})); n < 1 {
		t.Errorf("no paid result")
	}
	e.checkSeqs(otn)
}

// A payment made while the daemon's close is not yet confirmed (the
// provider was unreachable after the final query) counts as paid in time
// (docs/contract.md §4): the cancel turns into a paid result instead of keeping the
// money, and the controller decides with its ack.
func TestPaymentDuringCloseCountsAsPaid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay"})
	otn := otnPrefix + "dclose_" + testrig.RandomHex(3)
	e.create("c1", otn, 350, "")
	// The final query goes through; the close does not, so the order
	// stays payable at the provider.
	if err := e.sim.InjectFault(paysim.Fault{Provider: payment.WxPay, API: "close", Kind: paysim.Fault5xx}); err != nil {
		t.Fatal(err)
	}
	e.send("pay/cancel", map[string]any{"request_id": "x1", "out_trade_no": otn})
	e.reply("x1")
	for deadline := time.Now().Add(20 * time.Second); e.sim.Stats()["wxpay.close"] < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never tried to close: %v", e.sim.Stats())
		}
	}
	e.pay(payment.WxPay, otn, 0)
	e.sim.ClearFaults()
	res := e.result(otn, "paid", 20*time.Second)
	if !strings.Contains(res.Str("reason"), "paid_during_close") {
		t.Errorf("result %s", res.Payload)
	}
	if n := len(e.find(func(m testrig.Message) bool {
		return m.Topic == "pay/result" && m.Str("out_trade_no") == otn && m.Str("status") == "cancelled"
	})); n != 0 {
		t.Errorf("a paid order was announced cancelled")
	}
	e.ack(otn, false) // the customer had walked away: refund
	e.refundedOnce(payment.WxPay, otn, 350)
	e.result(otn, "refunded", 20*time.Second)
	e.checkSeqs(otn)
}
