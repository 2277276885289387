package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

// startSim runs the rig's paysim for the test's merchant keys; realism,
// when not nil, adjusts paysim's realistic defaults.
func startSim(t *testing.T, realism func(*paysim.Realism)) *testrig.Sim {
	t.Helper()
	sim, err := testrig.StartSim(simkeys.Get(t), testrig.SimOptions{Realism: realism})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim
}

// simWxClient is the WeChat adapter of the simulator's merchant, as a
// device would use it.
func simWxClient(t *testing.T, url string) *wxpay.Client {
	t.Helper()
	k := simkeys.Get(t)
	client, err := wxpay.New(wxpay.Config{
		AppID: k.WxAppID, MchID: k.WxMchID, CertSerial: k.WxCertSerial,
		PrivateKeyPEM: paysim.PrivatePEM(k.WxMerchant), APIv3Key: k.WxAPIv3Key,
		PublicKeyID: k.WxPublicKeyID, PublicKeyPEM: paysim.PublicPEM(&k.WxPlatform.PublicKey),
		APIBase: url, Timeout: 5 * time.Second, NotifyURL: "http://127.0.0.1:1/notify/dev1/wxpay",
	})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func TestSimPayScanAndFaults(t *testing.T) {
	sim := startSim(t, nil)
	url := sim.URL
	ctx := testCtx(t)
	client := simWxClient(t, url)
	if _, err := client.Create(context.Background(), payment.Order{OutTradeNo: "sim_000001", Total: 1000, Subject: "x", ExpireAt: time.Now().Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KIOSKCTL_SIM": url}

	r := kioskctl(ctx, env, "sim", "scan", "-provider", "wxpay", "-out-trade-no", "sim_000001")
	if o, _ := sim.Order(payment.WxPay, "sim_000001"); r.code != ExitOK || o.State != "USERPAYING" {
		t.Fatalf("sim scan: exit %d stderr %q, order %+v", r.code, r.stderr, o)
	}
	for _, bad := range [][]string{
		{"-discount", "-5"}, {"-discount", "100", "-discount-by", "bank"}, {"-discount-by", "merchant"},
	} {
		r := kioskctl(ctx, env, append([]string{"sim", "pay", "-provider", "wxpay", "-out-trade-no", "sim_000001"}, bad...)...)
		if r.code != ExitUsage {
			t.Fatalf("sim pay %v: exit %d stderr %q, want usage", bad, r.code, r.stderr)
		}
	}
	r = kioskctl(ctx, env, "sim", "pay", "-provider", "wxpay", "-out-trade-no", "sim_000001", "-discount", "100", "-discount-by", "merchant")
	if r.code != ExitOK || strings.TrimSpace(r.stdout) != "ok" {
		t.Fatalf("sim pay: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if o, ok := sim.Order(payment.WxPay, "sim_000001"); !ok || o.Total != 1000 || o.Paid != 900 || o.Received != 900 || o.DiscountBy != "merchant" || o.State != "SUCCESS" {
		t.Fatalf("after sim pay: %+v", o)
	}

	// Paying twice, or an unknown order: the simulator's refusal reaches
	// the operator, exit 1.
	r = kioskctl(ctx, env, "sim", "pay", "-provider", "alipay", "-out-trade-no", "sim_missing")
	if r.code != ExitFailure || !strings.Contains(r.stderr, "paysim refused (409") {
		t.Fatalf("unknown order: exit %d stderr %q", r.code, r.stderr)
	}
	r = kioskctl(ctx, env, "sim", "scan", "-out-trade-no", "sim_missing")
	if r.code != ExitFailure {
		t.Fatalf("scan unknown: exit %d", r.code)
	}

	// Faults: injected faults hit the next provider calls and clear.
	r = kioskctl(ctx, env, "sim", "fault", "-kind", "5xx", "-provider", "wxpay", "-api", "query", "-count", "1")
	if r.code != ExitOK || !strings.Contains(r.stdout, "fault 5xx injected") {
		t.Fatalf("fault: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := client.Query(context.Background(), "sim_000001"); err == nil || !payment.IsUnknown(err) {
		t.Fatalf("query under a 5xx fault: %v, want an unknown-outcome error", err)
	}
	if st, err := client.Query(context.Background(), "sim_000001"); err != nil || st.State != payment.StatePaid {
		t.Fatalf("query after the counted fault: %+v %v", st, err)
	}
	kioskctl(ctx, env, "sim", "fault", "-kind", "5xx")
	r = kioskctl(ctx, env, "sim", "fault", "-clear")
	if r.code != ExitOK || !strings.Contains(r.stdout, "faults cleared") {
		t.Fatalf("clear: exit %d %q", r.code, r.stdout)
	}
	if _, err := client.Query(context.Background(), "sim_000001"); err != nil {
		t.Fatalf("query after clear: %v", err)
	}
	r = kioskctl(ctx, env, "sim", "fault", "-kind", "meteor")
	if r.code != ExitFailure || !strings.Contains(r.stderr, "kind") {
		t.Fatalf("bad kind: exit %d stderr %q", r.code, r.stderr)
	}
	// The providers' own "try again" answers; paysim refuses a kind for
	// the wrong provider.
	r = kioskctl(ctx, env, "sim", "fault", "-kind", "20000", "-provider", "wxpay")
	if r.code != ExitFailure || !strings.Contains(r.stderr, "20000") {
		t.Fatalf("20000 for wxpay: exit %d stderr %q", r.code, r.stderr)
	}
	r = kioskctl(ctx, env, "sim", "fault", "-kind", "202", "-api", "query", "-count", "1")
	if r.code != ExitOK || !strings.Contains(r.stdout, "fault 202 injected") {
		t.Fatalf("fault 202: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := client.Query(context.Background(), "sim_000001"); err == nil {
		t.Fatal("query answered 202 reported a state")
	}

	// Stats and orders, as tables and JSON.
	r = kioskctl(ctx, env, "sim", "stats")
	if r.code != ExitOK || !strings.Contains(r.stdout, "wxpay.query") {
		t.Fatalf("stats: %q", r.stdout)
	}
	r = kioskctl(ctx, env, "-o", "json", "sim", "stats")
	var stats map[string]int
	if err := json.Unmarshal([]byte(r.stdout), &stats); err != nil || stats["wxpay.query"] < 3 {
		t.Fatalf("stats json %v: %q", err, r.stdout)
	}
	r = kioskctl(ctx, env, "sim", "orders")
	if r.code != ExitOK || !strings.Contains(r.stdout, "sim_000001") || !strings.Contains(r.stdout, "SUCCESS") {
		t.Fatalf("orders: %q", r.stdout)
	}
	r = kioskctl(ctx, env, "-o", "json", "sim", "orders", "-sim", url)
	var orders []paysim.OrderInfo
	if err := json.Unmarshal([]byte(r.stdout), &orders); err != nil || len(orders) != 1 || orders[0].Paid != 900 || orders[0].Received != 900 {
		t.Fatalf("orders json %v: %q", err, r.stdout)
	}
	// -sim before the action works as well as after it (the README's
	// first form), and overrides the environment.
	if _, err := client.Create(context.Background(), payment.Order{OutTradeNo: "sim_000002", Total: 1000, Subject: "x", ExpireAt: time.Now().Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	r = kioskctl(ctx, map[string]string{"KIOSKCTL_SIM": "http://127.0.0.1:1"}, "sim", "-sim", url, "pay", "-provider", "wxpay", "-out-trade-no", "sim_000002")
	if r.code != ExitOK || strings.TrimSpace(r.stdout) != "ok" {
		t.Fatalf("sim -sim URL pay: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if o, ok := sim.Order(payment.WxPay, "sim_000002"); !ok || o.State != "SUCCESS" {
		t.Fatalf("after sim -sim URL pay: %+v", o)
	}
}

// refund-complete and refund-fail decide WeChat refunds that paysim keeps
// PROCESSING (-refund-delay never).
func TestSimRefundHooks(t *testing.T) {
	sim := startSim(t, func(r *paysim.Realism) { r.WxRefundMax = paysim.Never })
	url := sim.URL
	ctx := testCtx(t)
	client := simWxClient(t, url)
	env := map[string]string{"KIOSKCTL_SIM": url}
	if _, err := client.Create(ctx, payment.Order{OutTradeNo: "sim_refund1", Total: 600, Subject: "x", ExpireAt: time.Now().Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := sim.Pay(payment.WxPay, "sim_refund1", 0); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"sim_refund1R1", "sim_refund1R2"} {
		if _, err := client.Refund(ctx, payment.RefundRequest{OutTradeNo: "sim_refund1", OutRefundNo: no, Total: 600, Refund: 300}); err != nil {
			t.Fatal(err)
		}
	}
	status := func(no string) string {
		o, _ := sim.Order(payment.WxPay, "sim_refund1")
		for _, r := range o.Refunds {
			if r.OutRefundNo == no {
				return string(r.Status)
			}
		}
		return ""
	}
	res := kioskctl(ctx, env, "sim", "refund-fail", "-provider", "wxpay", "-out-refund-no", "sim_refund1R1")
	if res.code != ExitUsage || !strings.Contains(res.stderr, "-status") {
		t.Fatalf("refund-fail without -status: exit %d stderr %q", res.code, res.stderr)
	}
	res = kioskctl(ctx, env, "sim", "refund-fail", "-provider", "wxpay", "-out-refund-no", "sim_refund1R1", "-status", "ABNORMAL")
	if res.code != ExitOK || status("sim_refund1R1") != "ABNORMAL" {
		t.Fatalf("refund-fail ABNORMAL: exit %d stderr %q, status %s", res.code, res.stderr, status("sim_refund1R1"))
	}
	res = kioskctl(ctx, env, "sim", "refund-complete", "-provider", "wxpay", "-out-refund-no", "sim_refund1R1")
	if res.code != ExitOK || status("sim_refund1R1") != "SUCCESS" {
		t.Fatalf("refund-complete: exit %d stderr %q, status %s", res.code, res.stderr, status("sim_refund1R1"))
	}
	res = kioskctl(ctx, env, "sim", "refund-fail", "-provider", "wxpay", "-out-refund-no", "sim_refund1R2", "-status", "CLOSED")
	if res.code != ExitOK || status("sim_refund1R2") != "CLOSED" {
		t.Fatalf("refund-fail CLOSED: exit %d stderr %q, status %s", res.code, res.stderr, status("sim_refund1R2"))
	}
	res = kioskctl(ctx, env, "sim", "refund-fail", "-provider", "alipay", "-out-refund-no", "sim_refund1R2", "-status", "CLOSED")
	if res.code != ExitFailure || !strings.Contains(res.stderr, "synchronously") {
		t.Fatalf("refund-fail for alipay: exit %d stderr %q", res.code, res.stderr)
	}
}

func TestSimUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	r := kioskctl(testCtx(t), nil, "-timeout", "2s", "sim", "stats", "-sim", url)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "is it running?") {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
}
