package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/internal/testrig"
)

// TestEndToEndWithDemo drives the real daemon: it builds kioskpayd, runs
// `kioskpayd -demo` (embedded broker, paysim, engine), and walks an order
// through kioskctl: pay (QR, wait), sim pay as the customer, ack, then
// status, query, orders and reconcile against what the daemon recorded.
func TestEndToEndWithDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon: skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kioskpayd")
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer bcancel()
	if err := testrig.Build(bctx, "./cmd/kioskpayd", bin); err != nil {
		t.Fatal(err)
	}
	d := &testrig.Daemon{Bin: bin, Args: []string{"-demo"}, Log: filepath.Join(dir, "demo.log")}
	t.Cleanup(func() {
		_, _ = d.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("kioskpayd -demo log:\n%s", d.LogText())
		}
	})

	// The demo prints its endpoints on stdout once everything is up; the
	// device line comes last.
	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer scancel()
	if err := d.StartReady(sctx, "(topics "); err != nil {
		t.Fatalf("kioskpayd -demo printed no endpoints: %v", err)
	}
	fields := testrig.DemoEndpoints(d.LogText())
	broker, simURL, dev := fields[testrig.DemoBroker], fields[testrig.DemoSim], fields[testrig.DemoDevice]
	if broker == "" || simURL == "" || dev == "" {
		t.Fatalf("kioskpayd -demo endpoints: got %v", fields)
	}
	env := map[string]string{"KIOSKCTL_BROKER": broker, "KIOSKCTL_SIM": simURL}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The daemon publishes its retained status once connected.
	waitFor(t, "the device online", 20*time.Second, func() bool {
		return kioskctl(ctx, env, "status", "-device", dev).code == ExitOK
	})

	const no = "e2e_order_0001"
	var out, errb syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
		done <- m.Run(ctx, []string{"pay", "-device", dev, "-fee", "1000", "-subject", "Massage 15 min",
			"-type", "massage_15", "-provider", "wxpay", "-out-trade-no", no, "-ack", "-wait", "60s"})
	}()
	waitFor(t, "the QR code", 20*time.Second, func() bool { return strings.Contains(out.String(), "waiting for payment") })
	if codes := terminalCodes(t, out.String(), 80); len(codes) != 1 || !strings.HasPrefix(codes[0], "weixin://wxpay/bizpayurl?pr=") {
		t.Fatalf("pay printed no WeChat QR (decoded %q):\n%s", codes, out.String())
	}
	if r := kioskctl(ctx, env, "sim", "pay", "-provider", "wxpay", "-out-trade-no", no); r.code != ExitOK {
		t.Fatalf("sim pay: exit %d: %s", r.code, r.stderr)
	}
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("pay: exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("pay did not finish:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "PAID ¥10.00") || !strings.Contains(out.String(), "acknowledged") {
		t.Fatalf("pay output:\n%s", out.String())
	}

	// The ack moves the order to delivered.
	waitFor(t, "the order delivered", 20*time.Second, func() bool {
		r := kioskctl(ctx, env, "-o", "json", "query", "-device", dev, "-out-trade-no", no)
		var q contract.QueryReply
		return r.code == ExitOK && json.Unmarshal([]byte(r.stdout), &q) == nil && q.State == "delivered"
	})
	r := kioskctl(ctx, env, "-o", "json", "orders", "-device", dev, "-limit", "0")
	var list contract.OrdersReply
	if r.code != ExitOK || json.Unmarshal([]byte(r.stdout), &list) != nil || len(list.Orders) == 0 || list.Orders[0].OutTradeNo != no {
		t.Fatalf("orders: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if o := list.Orders[0]; o.TotalFee != 1000 || o.Status != 1 || o.TransactionID == "" {
		t.Fatalf("order record %+v", o)
	}
	if r := kioskctl(ctx, env, "reconcile", "-device", dev); r.code != ExitOK {
		t.Fatalf("reconcile: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A device-side refusal comes back as exit 1 with its error name.
	if r := kioskctl(ctx, env, "query", "-device", dev, "-out-trade-no", "e2e_missing_1"); r.code != ExitFailure || !strings.Contains(r.stderr, "ORDER_NOT_FOUND") {
		t.Fatalf("missing order: exit %d %s", r.code, r.stderr)
	}

	// Clean stop: the Last Will is not sent, the daemon says offline itself
	// (or the status stays whatever it published last); either way exit 0.
	if code, err := d.Stop(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("kioskpayd -demo exit %d after SIGTERM (%v)", code, err)
	}
	_ = os.Remove(bin)
}
