package e2e

import (
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// A power cut (SIGKILL) in every state of a paid order, then a restart on
// the same state dir: no outcome is lost, none is published with a second
// seq, the pending order resumes and still gets paid, and a refund in
// flight completes exactly once.
func TestRestartInEveryState(t *testing.T) {
	t.Parallel()

	t.Run("pending", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "wxpay", resultKey: true})
		otn := otnPrefix + "rs_pend_" + testrig.RandomHex(3)
		e.create("c1", otn, 900, "")
		e.kill()
		// Paid while the daemon is down: only the resumed poll can see it.
		e.pay(payment.WxPay, otn, 0)
		// A command sent meanwhile waits in the daemon's persistent session.
		e.send("pay/query", map[string]any{"request_id": "q-down", "out_trade_no": otn})
		e.start()
		e.reply("q-down")
		res := e.result(otn, "paid", 30*time.Second)
		if !verifyResult(e.key, res) {
			t.Errorf("result after restart does not verify: %s", res.Payload)
		}
		e.ack(otn, true)
		e.event(otn, "delivered", 10*time.Second)
		e.checkSeqs(otn)
		if n := len(e.replies("q-down")); n != 1 {
			t.Errorf("%d replies to the command sent while down", n)
		}
	})

	t.Run("paid_unacked", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "alipay", resultKey: true})
		otn := otnPrefix + "rs_paid_" + testrig.RandomHex(3)
		e.create("c1", otn, 900, "")
		e.pay(payment.Alipay, otn, 0)
		first := e.result(otn, "paid", 20*time.Second)
		e.kill()
		restarted := time.Now()
		e.start()
		// The unacknowledged result is sent again, the same outcome with
		// the same seq.
		again := e.waitFor(20*time.Second, "re-sent paid result", func(m testrig.Message) bool {
			return m.Topic == "pay/result" && m.Str("out_trade_no") == otn && m.At.After(restarted)
		})
		if again.Num("seq") != first.Num("seq") || again.Str("status") != "paid" {
			t.Errorf("re-sent result differs:\n%s\n%s", first.Payload, again.Payload)
		}
		e.ack(otn, true)
		e.event(otn, "delivered", 10*time.Second)
		e.checkSeqs(otn)
		if o := e.simOrder(payment.Alipay, otn); o.Refunded != 0 || o.State != "TRADE_SUCCESS" {
			t.Errorf("delivered order at paysim: %+v", o)
		}
	})

	t.Run("refunding", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "wxpay", resultKey: true})
		otn := otnPrefix + "rs_rfnd_" + testrig.RandomHex(3)
		e.create("c1", otn, 900, "")
		e.pay(payment.WxPay, otn, 0)
		e.result(otn, "paid", 20*time.Second)
		e.ack(otn, false)
		// WeChat refunds stay PROCESSING until the bank settles them: kill
		// the daemon while its refund is in flight.
		e.waitSim(payment.WxPay, otn, "refund requested", 20*time.Second, false, func(o paysim.OrderInfo) bool { return len(o.Refunds) > 0 })
		e.kill()
		e.start()
		o := e.waitSim(payment.WxPay, otn, "refund of 900", 20*time.Second, true, func(o paysim.OrderInfo) bool { return o.Refunded == 900 })
		res := e.result(otn, "refunded", 30*time.Second)
		if len(o.Refunds) != 1 || o.Refunds[0].Amount != 900 {
			t.Errorf("want exactly one refund of 900 fen: %+v", o.Refunds)
		}
		if res.Num("total_fee") != 900 || !verifyResult(e.key, res) {
			t.Errorf("refunded result %s", res.Payload)
		}
		e.ack(otn, true)
		e.checkSeqs(otn)
		// Killed again after everything settled: nothing new comes out.
		e.kill()
		restarted := time.Now()
		e.start()
		e.none(2*time.Second, "outcome after the second restart", func(m testrig.Message) bool {
			return m.Topic == "pay/result" && m.Str("out_trade_no") == otn && m.At.After(restarted)
		})
		if o := e.simOrder(payment.WxPay, otn); len(o.Refunds) != 1 {
			t.Errorf("refunds after the second restart: %+v", o.Refunds)
		}
	})
}
