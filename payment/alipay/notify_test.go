package alipay

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// receiver is a notify_url endpoint that verifies with the adapter and
// answers "success" from the attempt given by acceptFrom on.
type receiver struct {
	srv        *httptest.Server
	acceptFrom int

	mu       sync.Mutex
	attempts int
	raw      [][]byte
	got      []payment.Notification
	bad      []error
	changed  chan struct{}
}

func newReceiver(t *testing.T, c *Client, acceptFrom int) *receiver {
	rc := &receiver{acceptFrom: acceptFrom, changed: make(chan struct{}, 100)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n, err := c.ParseNotify(r.Context(), r.Header, body)
		rc.mu.Lock()
		rc.attempts++
		rc.raw = append(rc.raw, body)
		if err != nil {
			rc.bad = append(rc.bad, err)
		} else {
			rc.got = append(rc.got, n)
		}
		ok := err == nil && rc.attempts >= rc.acceptFrom
		rc.mu.Unlock()
		rc.changed <- struct{}{}
		if ok {
			_, _ = io.WriteString(w, "success")
			return
		}
		_, _ = io.WriteString(w, "fail")
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// waitFor waits until cond holds for the received notifications.
func (rc *receiver) waitFor(t *testing.T, what string, cond func(got []payment.Notification) bool) []payment.Notification {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		rc.mu.Lock()
		got := append([]payment.Notification(nil), rc.got...)
		bad := append([]error(nil), rc.bad...)
		rc.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("a genuine notification failed verification: %v", bad[0])
		}
		if cond(got) {
			return got
		}
		select {
		case <-rc.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; got %+v", what, got)
		}
	}
}

func TestNotifyPaymentDecodedAndRetriedWithSameID(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, e.client, 3) // refuse twice: the sim must retry
	o := newOrder(t, 880)
	o.NotifyURL = rc.srv.URL + "/notify/sim-1/alipay"
	mustCreate(t, e, o)
	if err := e.sim.Pay(payment.Alipay, o.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	got := rc.waitFor(t, "three attempts", func(g []payment.Notification) bool { return len(g) >= 3 })
	n := got[0]
	if n.Kind != payment.NotifyPayment || n.State != payment.StatePaid || n.Amount.Total != 880 || n.OutTradeNo != o.OutTradeNo || n.TransactionID == "" || n.ID == "" {
		t.Fatalf("decoded %+v", n)
	}
	for _, m := range got[1:] {
		if m.ID != n.ID {
			t.Fatalf("retry notify_id %q, first %q: retries must reuse it", m.ID, n.ID)
		}
	}
	rc.mu.Lock()
	form, _ := url.ParseQuery(string(rc.raw[0]))
	rc.mu.Unlock()
	for k, v := range form {
		if len(v) != 1 || v[0] == "" {
			t.Errorf("notify field %s=%q: Alipay sends no empty or repeated fields", k, v)
		}
	}
	// Delivery stops once "success" was answered.
	time.Sleep(300 * time.Millisecond) // longer than the rest of the retry schedule
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.attempts != 3 {
		t.Fatalf("%d attempts, want exactly 3 (stop after success)", rc.attempts)
	}
}

func TestNotifyClosedAndRefund(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, e.client, 1)
	ctx := ctxT(t)

	c := newOrder(t, 100)
	c.NotifyURL = rc.srv.URL
	mustCreate(t, e, c)
	_ = e.sim.Scan(c.OutTradeNo)
	if _, err := e.client.Close(ctx, c.OutTradeNo); err != nil {
		t.Fatal(err)
	}
	rc.waitFor(t, "closed", func(g []payment.Notification) bool {
		return len(g) == 1 && g[0].Kind == payment.NotifyClosed && g[0].State == payment.StateClosed && g[0].OutTradeNo == c.OutTradeNo
	})

	p := newOrder(t, 1000)
	p.NotifyURL = rc.srv.URL
	mustCreate(t, e, p)
	_ = e.sim.Pay(payment.Alipay, p.OutTradeNo, 0)
	rc.waitFor(t, "paid", func(g []payment.Notification) bool { return len(g) == 2 })
	if _, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: p.OutTradeNo, OutRefundNo: "RF_1", Total: 1000, Refund: 400}); err != nil {
		t.Fatal(err)
	}
	got := rc.waitFor(t, "refund", func(g []payment.Notification) bool { return len(g) == 3 })
	if r := got[2]; r.Kind != payment.NotifyRefund || r.OutRefundNo != "RF_1" || r.RefundState != payment.RefundSuccess || r.State != payment.StatePaid {
		t.Fatalf("partial refund notification %+v", r)
	}
	if _, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: p.OutTradeNo, OutRefundNo: "RF_2", Total: 1000, Refund: 600}); err != nil {
		t.Fatal(err)
	}
	got = rc.waitFor(t, "full refund", func(g []payment.Notification) bool { return len(g) == 4 })
	if r := got[3]; r.Kind != payment.NotifyRefund || r.OutRefundNo != "RF_2" || r.State != payment.StateRefunded {
		t.Fatalf("full refund notification %+v", r)
	}
}

// validNotify returns a genuine notification body produced by paysim.
func validNotify(t *testing.T, e *env) []byte {
	t.Helper()
	rc := newReceiver(t, e.client, 1)
	o := newOrder(t, 500)
	o.NotifyURL = rc.srv.URL
	mustCreate(t, e, o)
	_ = e.sim.Pay(payment.Alipay, o.OutTradeNo, 0)
	rc.waitFor(t, "payment", func(g []payment.Notification) bool { return len(g) == 1 })
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.raw[0]
}

// resign signs form with key the way Alipay signs notifications.
func resign(form url.Values, key *rsa.PrivateKey) string {
	form.Del("sign")
	var pairs []string
	for k, v := range form {
		if k == "sign_type" {
			continue
		}
		pairs = append(pairs, k+"="+v[0])
	}
	sort.Strings(pairs)
	form.Set("sign", signWith(key, []byte(strings.Join(pairs, "&"))))
	return form.Encode()
}

func TestNotifyForgedOrTamperedRejected(t *testing.T) {
	e := newEnv(t)
	raw := validNotify(t, e)
	ctx := context.Background()
	if _, err := e.client.ParseNotify(ctx, nil, raw); err != nil {
		t.Fatalf("genuine notification: %v", err)
	}
	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(url.Values)) []byte {
		form, _ := url.ParseQuery(string(raw))
		f(form)
		return []byte(form.Encode())
	}
	for name, body := range map[string][]byte{
		"amount raised":    mod(func(v url.Values) { v.Set("total_amount", "9999.00"); v.Set("receipt_amount", "9999.00") }),
		"status changed":   mod(func(v url.Values) { v.Set("trade_status", "TRADE_FINISHED") }),
		"order swapped":    mod(func(v url.Values) { v.Set("out_trade_no", "OTHER_1") }),
		"field added":      mod(func(v url.Values) { v.Set("refund_fee", "1.00") }),
		"field dropped":    mod(func(v url.Values) { v.Del("receipt_amount") }),
		"no sign":          mod(func(v url.Values) { v.Del("sign") }),
		"empty sign":       mod(func(v url.Values) { v.Set("sign", "") }),
		"sign type RSA":    mod(func(v url.Values) { v.Set("sign_type", "RSA") }),
		"cert sn injected": mod(func(v url.Values) { v.Set("alipay_cert_sn", "deadbeef") }),
		"duplicate field":  mod(func(v url.Values) { v.Add("total_amount", "0.01") }),
		"forged key": []byte(func() string {
			form, _ := url.ParseQuery(string(raw))
			return resign(form, attacker)
		}()),
		"app key (merchant's own)": []byte(func() string {
			form, _ := url.ParseQuery(string(raw))
			return resign(form, testKeys.AlipayApp)
		}()),
		"other app": []byte(func() string {
			form, _ := url.ParseQuery(string(raw))
			form.Set("app_id", "2021000000000999")
			return resign(form, testKeys.AlipayPlatform)
		}()),
		"garbage":  []byte("%zz&&=="),
		"empty":    nil,
		"too long": []byte(strings.Repeat("a", maxNotifyBodyBytes+1)),
	} {
		if n, err := e.client.ParseNotify(ctx, nil, body); err == nil {
			t.Errorf("%s: accepted as %+v", name, n)
		}
	}
	// Re-signing with the real platform key after a change is, by
	// construction, genuine: the check is the signature, not the content.
	form, _ := url.ParseQuery(string(raw))
	form.Set("receipt_amount", "0.01")
	n, err := e.client.ParseNotify(ctx, nil, []byte(resign(form, testKeys.AlipayPlatform)))
	if err != nil || n.Amount.Receipt != 1 {
		t.Fatalf("re-signed by the platform: %+v %v, want receipt 1 fen", n, err)
	}
}

func FuzzParseNotify(f *testing.F) {
	k := testKeys
	c, err := New(Config{AppID: k.AlipayAppID, PrivateKeyPEM: paysim.PrivatePEM(k.AlipayApp), AlipayPublicKeyPEM: paysim.PublicPEM(&k.AlipayPlatform.PublicKey), Gateway: "http://127.0.0.1:1/gateway.do"})
	if err != nil {
		f.Fatal(err)
	}
	form := url.Values{
		"notify_type": {"trade_status_sync"}, "notify_id": {"n1"}, "app_id": {k.AlipayAppID},
		"charset": {"utf-8"}, "version": {"1.0"}, "trade_no": {"2026"}, "out_trade_no": {"T1"},
		"trade_status": {"TRADE_SUCCESS"}, "total_amount": {"1.00"}, "receipt_amount": {"1.00"},
		"gmt_payment": {"2026-01-01 10:00:00"}, "sign_type": {"RSA2"},
	}
	f.Add([]byte(resign(form, k.AlipayPlatform)))
	form.Set("trade_status", "TRADE_CLOSED")
	form.Set("refund_fee", "1.00")
	form.Set("out_biz_no", "R1")
	f.Add([]byte(resign(form, k.AlipayPlatform)))
	form.Set("total_amount", "1e9")
	form.Set("receipt_amount", "-1")
	f.Add([]byte(resign(form, k.AlipayPlatform)))
	f.Add([]byte("sign=abc&sign_type=RSA2&out_trade_no=T1&trade_status=TRADE_SUCCESS"))
	f.Add([]byte("a=%ZZ"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := c.ParseNotify(context.Background(), nil, body)
		if err != nil {
			return
		}
		// Whatever verified must be internally consistent.
		if n.OutTradeNo == "" || n.Kind == 0 || n.State == payment.StateUnknown {
			t.Fatalf("accepted an incomplete notification: %+v", n)
		}
		if n.State.WasPaid() && n.Amount.Total <= 0 {
			t.Fatalf("paid notification without a positive amount: %+v", n)
		}
	})
}
