package e2e

import (
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// Power cuts in the two states where the daemon is waiting on the
// provider: while creating (the provider hangs) and while closing (the
// provider refuses the close). After the restart each order reaches its one
// outcome, and the create request still gets exactly one reply.
func TestRestartWhileProviderBusy(t *testing.T) {
	t.Parallel()

	t.Run("creating", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "wxpay"})
		otn := otnPrefix + "rs_crt_" + testrig.RandomHex(3)
		// The prepay request hangs without being processed.
		if err := e.sim.InjectFault(paysim.Fault{Provider: payment.WxPay, API: "native", Kind: paysim.FaultTimeout}); err != nil {
			t.Fatal(err)
		}
		e.send("pay/create", createReq("c1", otn, 250, "", nil))
		e.event(otn, "creating", 10*time.Second)
		for deadline := time.Now().Add(10 * time.Second); e.sim.Stats()["wxpay.native"] < 1; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the daemon never called the provider")
			}
		}
		e.kill()
		e.sim.ClearFaults()
		e.start()
		r := e.reply("c1")
		if r.Num("code") != 0 || code(r) == "" {
			t.Fatalf("reply after the restart: %s", r.Payload)
		}
		e.pay(payment.WxPay, otn, 0)
		e.result(otn, "paid", 20*time.Second)
		e.ack(otn, true)
		e.event(otn, "delivered", 10*time.Second)
		time.Sleep(300 * time.Millisecond)
		if n := len(e.replies("c1")); n != 1 {
			t.Errorf("%d replies to the create", n)
		}
		e.checkSeqs(otn)
	})

	t.Run("closing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, daemonOpts{provider: "wxpay"})
		otn := otnPrefix + "rs_cls_" + testrig.RandomHex(3)
		e.create("c1", otn, 250, "")
		if err := e.sim.InjectFault(paysim.Fault{Provider: payment.WxPay, API: "close", Kind: paysim.Fault5xx}); err != nil {
			t.Fatal(err)
		}
		e.send("pay/cancel", map[string]any{"request_id": "x1", "out_trade_no": otn})
		e.reply("x1")
		for deadline := time.Now().Add(10 * time.Second); e.sim.Stats()["wxpay.close"] < 1; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the daemon never tried to close")
			}
		}
		e.kill()
		if n := len(e.results(otn)); n != 0 {
			t.Fatalf("an outcome before the close was confirmed: %s", e.results(otn)[0].Payload)
		}
		e.sim.ClearFaults()
		e.start()
		e.result(otn, "cancelled", 20*time.Second)
		if o := e.simOrder(payment.WxPay, otn); o.State != "CLOSED" {
			t.Errorf("paysim: %+v", o)
		}
		e.ack(otn, true)
		e.checkSeqs(otn)
	})
}

// An operator refund of a delivered order over MQTT, sent twice as a QoS 1
// redelivery would: one refund at the provider, one refunded result.
func TestOperatorRefund(t *testing.T) {
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "alipay", resultKey: true})
	otn := otnPrefix + "oprf_" + testrig.RandomHex(3)
	e.create("c1", otn, 990, "")
	e.pay(payment.Alipay, otn, 0)
	e.result(otn, "paid", 20*time.Second)
	e.ack(otn, true)
	e.event(otn, "delivered", 10*time.Second)

	cmd := map[string]any{"request_id": "rf1", "out_trade_no": otn, "refund_fee": 300, "refund_desc": "seat broken"}
	e.send("pay/refund", cmd)
	e.send("pay/refund", cmd)
	e.waitSim(payment.Alipay, otn, "partial refund", 20*time.Second, true, func(o paysim.OrderInfo) bool { return o.Refunded == 300 })
	res := e.result(otn, "refunded", 20*time.Second)
	if res.Num("refund_fee") != 300 || !verifyResult(e.key, res) {
		t.Errorf("refunded result %s", res.Payload)
	}
	time.Sleep(300 * time.Millisecond)
	if rs := e.replies("rf1"); len(rs) != 2 || rs[0].Num("code") != 0 || rs[1].Num("code") != 0 || rs[0].Str("out_refund_no") != rs[1].Str("out_refund_no") {
		t.Errorf("replies to the repeated refund: %v", rs)
	}
	if o := e.simOrder(payment.Alipay, otn); len(o.Refunds) != 1 || o.Refunded != 300 {
		t.Errorf("paysim refunds %+v", o)
	}
	// More than what is left is refused.
	e.send("pay/refund", map[string]any{"request_id": "rf2", "out_trade_no": otn, "refund_fee": 691})
	if r := e.reply("rf2"); r.Str("error") != "FEE_OUT_OF_RANGE" {
		t.Errorf("over-refund: %s", r.Payload)
	}
	e.send("pay/query", map[string]any{"request_id": "q1", "out_trade_no": otn})
	if r := e.reply("q1"); r.Num("status") != 2 || r.Num("refunded_fee") != 300 {
		t.Errorf("query after a partial refund (seed status 2): %s", r.Payload)
	}
}

// The retained status a fleet dashboard reads: online with the pending
// count while running, offline after a clean stop (the daemon's last word)
// and after a power cut (the broker's Last Will).
func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay"})
	status := func(what string, match func(m testrig.Message) bool) testrig.Message {
		t.Helper()
		return e.waitFor(15*time.Second, "status "+what, func(m testrig.Message) bool { return m.Topic == "status" && match(m) })
	}
	online := func(pending float64) func(m testrig.Message) bool {
		return func(m testrig.Message) bool { return m.Fields["online"] == true && m.Num("pending") == pending }
	}
	s := status("online, nothing pending", online(0))
	if s.Str("version") == "" || s.Fields["clock_synced"] != true || s.Str("started_at") == "" {
		t.Errorf("status %s", s.Payload)
	}
	otn := otnPrefix + "status_" + testrig.RandomHex(3)
	e.create("c1", otn, 100, "")
	status("one pending", online(1))

	offline := func(m testrig.Message) bool { return m.Fields["online"] == false }
	e.kill()
	status("Last Will after a power cut", offline)
	mark := time.Now()
	e.start()
	status("online again with the order resumed", func(m testrig.Message) bool { return m.At.After(mark) && online(1)(m) })
	mark = time.Now()
	e.stop()
	status("offline after SIGTERM", func(m testrig.Message) bool { return m.At.After(mark) && offline(m) })

	// A new subscriber (a dashboard started later) gets the retained value.
	late := newController(t, e.brokerURL, e.dev, false, "", "")
	if m := waitFor(t, late, 10*time.Second, "retained status", func(m testrig.Message) bool { return m.Topic == "status" }); string(m.Payload) != `{"online":false}` {
		t.Errorf("retained status %s", m.Payload)
	}
}
