package e2e

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
)

// newMosquitto starts a broker of the test's own that it can stop and
// start on the same port, with persistence on (as in deploy/): sessions and
// queued QoS 1 messages survive the restart.
func newMosquitto(t *testing.T) *testrig.Mosquitto {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := testrig.StartMosquitto(ctx, t.TempDir())
	if errors.Is(err, exec.ErrNotFound) {
		t.Skip("mosquitto not installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	return m
}

// brokerUp starts a stopped broker again (Stop is the service stop:
// SIGTERM, it saves its persistence file).
func brokerUp(t *testing.T, m *testrig.Mosquitto) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// The broker goes away mid-order: the payment is detected meanwhile, and
// the paid result reaches the controller once the broker is back.
func TestBrokerRestartMidOrder(t *testing.T) {
	t.Parallel()
	b := newMosquitto(t)
	e := newEnv(t, daemonOpts{provider: "wxpay", brokerURL: b.URL, persistent: true, resultKey: true, ackTimeout: "2m"})
	otn := otnPrefix + "brk_" + testrig.RandomHex(3)
	e.create("c1", otn, 400, "")

	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	q0 := e.sim.Stats()["wxpay.query"]
	e.pay(payment.WxPay, otn, 0)
	// The daemon's next poll sees the payment while the broker is down.
	deadline := time.Now().Add(20 * time.Second)
	for e.sim.Stats()["wxpay.query"] <= q0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // down a little longer, as in a real outage
	if n := len(e.results(otn)); n != 0 {
		t.Fatalf("result without a broker?")
	}
	brokerUp(t, b)
	back := time.Now()
	res := e.result(otn, "paid", 60*time.Second)
	t.Logf("paid result %s after the broker came back", time.Since(back).Round(time.Millisecond))
	if !verifyResult(e.key, res) || res.Num("total_fee") != 400 {
		t.Errorf("result %s", res.Payload)
	}
	e.ack(otn, true)
	e.event(otn, "delivered", 20*time.Second)
	e.checkSeqs(otn)
}

// The broker is down for longer than ack_timeout after a payment: the
// controller never saw the paid result, so it cannot have delivered, and
// the money goes back. When the broker returns, the stale paid result is
// not delivered any more (a late unlock for refunded money); the controller
// learns of the refund instead.
func TestBrokerOutageLongerThanAckTimeout(t *testing.T) {
	t.Parallel()
	if gatewayMode {
		// Provider calls travel over the broker: the payment is detected
		// after the outage and its paid result goes out like any other
		// (TestBrokerRestartMidOrder covers that path).
		t.Skip("gateway mode: no provider call, hence no refund, while the broker is down")
	}
	b := newMosquitto(t)
	e := newEnv(t, daemonOpts{provider: "alipay", brokerURL: b.URL, persistent: true, ackTimeout: "2s"})
	otn := otnPrefix + "brk2_" + testrig.RandomHex(3)
	e.create("c1", otn, 420, "")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	e.pay(payment.Alipay, otn, 0)
	e.refundedOnce(payment.Alipay, otn, 420)
	brokerUp(t, b)
	e.result(otn, "refunded", 60*time.Second)
	e.noPaid(otn)
	e.checkSeqs(otn)
}
