package e2e

import (
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// An order nobody pays expires at its deadline (60 s, the shortest the
// the contract allows), with the final close at both providers, even though the
// daemon was killed and restarted while it was pending.
func TestExpiryAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 60 s QR expiry (the shortest allowed): skipped with -short; run go test ./e2e/")
	}
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "any"})
	otn := otnPrefix + "expire_" + testrig.RandomHex(3)
	e.send("pay/create", createReq("c1", otn, 300, "", map[string]any{"expire_seconds": 60}))
	rep := e.reply("c1")
	if rep.Num("code") != 0 || rep.Str("pay_type") != "any" {
		t.Fatalf("create: %s", rep.Payload)
	}
	info, _ := rep.Fields["orderInfo"].(map[string]any)
	if info["code_url"] == nil || info["qr_code"] == nil {
		t.Fatalf("any mode must return both codes: %s", rep.Payload)
	}
	// A scanned Alipay code has a trade to close (alipay.trade.close); the
	// WeChat order is closed with its close API.
	if err := e.sim.Scan(otn); err != nil {
		t.Fatal(err)
	}
	e.kill()
	time.Sleep(500 * time.Millisecond) // down for a moment, nothing pending in flight
	e.start()

	res := e.result(otn, "expired", 90*time.Second)
	created, _ := time.Parse(time.RFC3339, rep.Str("expires_at"))
	if late := time.Since(created); late > 15*time.Second {
		t.Errorf("expired %s after the deadline", late)
	}
	if res.Num("total_fee") != 300 || res.Str("transaction_id") != "" {
		t.Errorf("expired result %s", res.Payload)
	}
	if o := e.simOrder(payment.WxPay, otn); o.State != "CLOSED" {
		t.Errorf("wechat order not closed: %+v", o)
	}
	if o := e.simOrder(payment.Alipay, otn); o.State != "TRADE_CLOSED" {
		t.Errorf("alipay trade not closed: %+v", o)
	}
	// The daemon sends the providers its own deadline as time_expire
	// (whole seconds, so never later than its monotonic deadline), and
	// paysim enforces it: the final query usually finds the orders closed
	// already, and nothing is left to close. Either way both are closed.
	st := e.sim.Stats()
	t.Logf("close calls at expiry: wxpay.close=%d alipay.trade.close=%d alipay.trade.cancel=%d", st["wxpay.close"], st["alipay.trade.close"], st["alipay.trade.cancel"])
	e.ack(otn, true) // an ack only stops the re-publication of a non-paid outcome
	e.checkSeqs(otn)
	if n := len(e.find(func(m testrig.Message) bool {
		return m.Topic == "pay/result" && m.Str("out_trade_no") == otn && m.Str("status") != "expired"
	})); n != 0 {
		t.Errorf("%d other outcomes for an expired order", n)
	}
}

// Cancel, supersede, re-create while pending, conflicting parameters and a
// create for an ended order, on one device in sequence.
func TestCancelSupersedeDuplicate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay"})

	// Cancel: the customer walked away.
	a := otnPrefix + "cancel_" + testrig.RandomHex(3)
	e.create("a1", a, 200, "")
	e.send("pay/cancel", map[string]any{"request_id": "x1", "out_trade_no": a})
	if r := e.reply("x1"); r.Num("code") != 0 || r.Str("action") != "cancel" {
		t.Fatalf("cancel reply %s", r.Payload)
	}
	e.result(a, "cancelled", 20*time.Second)
	if o := e.simOrder(payment.WxPay, a); o.State != "CLOSED" || e.sim.Stats()["wxpay.close"] != 1 {
		t.Errorf("cancelled order not closed by the daemon at paysim: %+v %v", o, e.sim.Stats())
	}
	// A create for the ended order.
	e.send("pay/create", createReq("a2", a, 200, "", nil))
	if r := e.reply("a2"); r.Str("error") != "ORDER_FINISHED" || r.Num("code") != 409 {
		t.Errorf("create of a cancelled order: %s", r.Payload)
	}

	// Re-create while pending: the same QR; different parameters: conflict.
	b := otnPrefix + "dup_" + testrig.RandomHex(3)
	first := e.create("b1", b, 500, "")
	again := e.create("b2", b, 500, "")
	if code(first) == "" || code(first) != code(again) {
		t.Errorf("re-create returned another code: %s vs %s", code(first), code(again))
	}
	e.send("pay/create", createReq("b3", b, 501, "", nil))
	if r := e.reply("b3"); r.Str("error") != "DUPLICATE_CONFLICT" || r.Num("code") != 409 {
		t.Errorf("conflicting re-create: %s", r.Payload)
	}
	if n := len(e.sim.Orders()); n != 2 {
		t.Errorf("paysim has %d orders, want 2 (the re-create must not create another)", n)
	}

	// Supersede: a new order while b is pending cancels b at the provider
	// first.
	c := otnPrefix + "super_" + testrig.RandomHex(3)
	e.create("c1", c, 700, "")
	res := e.result(b, "cancelled", 20*time.Second)
	if o := e.simOrder(payment.WxPay, b); o.State != "CLOSED" {
		t.Errorf("superseded order open at paysim: %+v (result %s)", o, res.Payload)
	}
	// The new one is live and payable.
	e.pay(payment.WxPay, c, 0)
	e.result(c, "paid", 20*time.Second)
	e.ack(c, true)
	e.event(c, "delivered", 10*time.Second)
	for _, otn := range []string{a, b, c} {
		e.checkSeqs(otn)
	}
}

func code(reply testrig.Message) string {
	info, _ := reply.Fields["orderInfo"].(map[string]any)
	s, _ := info["code_url"].(string)
	if s == "" {
		s, _ = info["qr_code"].(string)
	}
	return s
}

var _ = paysim.OrderInfo{}
