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
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

// startSim runs a paysim under httptest and returns it with its URL.
func startSim(t *testing.T) (*paysim.Server, string) {
	t.Helper()
	sim, err := paysim.New(paysim.Options{Keys: simkeys.Get(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	return sim, srv.URL
}

func TestSimPayScanAndFaults(t *testing.T) {
	sim, url := startSim(t)
	ctx := testCtx(t)
	k := simkeys.Get(t)
	// An order placed through the real adapter, as a device would.
	client, err := wxpay.New(wxpay.Config{
		AppID: k.WxAppID, MchID: k.WxMchID, CertSerial: k.WxCertSerial,
		PrivateKeyPEM: paysim.PrivatePEM(k.WxMerchant), APIv3Key: k.WxAPIv3Key,
		PublicKeyID: k.WxPublicKeyID, PublicKeyPEM: paysim.PublicPEM(&k.WxPlatform.PublicKey),
		APIBase: url, Timeout: 5 * time.Second, NotifyURL: "http://127.0.0.1:1/notify/dev1/wxpay",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Create(context.Background(), payment.Order{OutTradeNo: "sim_000001", Total: 1000, Subject: "x", ExpireAt: time.Now().Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KIOSKCTL_SIM": url}

	r := kioskctl(ctx, env, "sim", "pay", "-provider", "wxpay", "-out-trade-no", "sim_000001", "-amount", "900")
	if r.code != ExitOK || strings.TrimSpace(r.stdout) != "ok" {
		t.Fatalf("sim pay: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if o, ok := sim.Order(payment.WxPay, "sim_000001"); !ok || o.Paid != 900 || o.State != "SUCCESS" {
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
	if err := json.Unmarshal([]byte(r.stdout), &orders); err != nil || len(orders) != 1 || orders[0].Paid != 900 {
		t.Fatalf("orders json %v: %q", err, r.stdout)
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
