package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/payment"
)

// mosquitto is a broker of the test's own that it can stop and start on
// the same port, with persistence on (as in deploy/): sessions and queued
// QoS 1 messages survive the restart.
type mosquitto struct {
	t    *testing.T
	bin  string
	conf string
	port int
	cmd  *exec.Cmd
	done chan struct{}
	log  syncbuf.Buffer
}

func newMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		t.Skip("mosquitto not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	content := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nautosave_interval 1\nlog_dest stderr\n", port, dir)
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{t: t, bin: bin, conf: conf, port: port}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) url() string { return "tcp://127.0.0.1:" + strconv.Itoa(m.port) }

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stderr = &m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(m.cmd, m.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(m.port))
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.done:
			m.t.Fatalf("mosquitto exited:\n%s", m.log.String())
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto not listening:\n%s", m.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop shuts the broker down the way a service stop does (SIGTERM: it
// saves its persistence file).
func (m *mosquitto) stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// The broker goes away mid-order: the payment is detected meanwhile, and
// the paid result reaches the controller once the broker is back.
func TestBrokerRestartMidOrder(t *testing.T) {
	t.Parallel()
	b := newMosquitto(t)
	e := newEnv(t, daemonOpts{provider: "wxpay", brokerURL: b.url(), persistent: true, resultKey: true, ackTimeout: "2m"})
	otn := otnPrefix + "brk_" + randomHex(3)
	e.create("c1", otn, 400, "")

	b.stop()
	q0 := e.sim.Stats()["wxpay.query"]
	e.pay(payment.WxPay, otn, 0)
	// The daemon's next poll sees the payment while the broker is down.
	deadline := time.Now().Add(20 * time.Second)
	for e.sim.Stats()["wxpay.query"] <= q0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // down a little longer, as in a real outage
	if n := len(e.ctl.results(otn)); n != 0 {
		t.Fatalf("result without a broker?")
	}
	b.start()
	back := time.Now()
	res := e.ctl.result(otn, "paid", 60*time.Second)
	t.Logf("paid result %s after the broker came back", time.Since(back).Round(time.Millisecond))
	if !verifyResult(e.key, res) || res.num("total_fee") != 400 {
		t.Errorf("result %s", res.Payload)
	}
	e.ack(otn, true)
	e.ctl.event(otn, "delivered", 20*time.Second)
	checkSeqs(t, e.ctl.results(otn))
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
	e := newEnv(t, daemonOpts{provider: "alipay", brokerURL: b.url(), persistent: true, ackTimeout: "2s"})
	otn := otnPrefix + "brk2_" + randomHex(3)
	e.create("c1", otn, 420, "")
	b.stop()
	e.pay(payment.Alipay, otn, 0)
	e.refundedOnce(payment.Alipay, otn, 420)
	b.start()
	e.ctl.result(otn, "refunded", 60*time.Second)
	e.noPaid(otn)
	checkSeqs(t, e.ctl.results(otn))
}
