package wxpay_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/wxsim"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

// env is a paysim under httptest, an adapter pointed at it, and a notify
// receiver that parses every notification with the adapter.
type env struct {
	sim      *paysim.Server
	wx       *wxsim.Sim // the WeChat Pay provider registered with sim
	srv      *httptest.Server
	client   *wxpay.Client
	cfg      wxpay.Config
	notified chan payment.Notification
	rejected chan error
	// bodies records every prepay request body the simulator received.
	mu     sync.Mutex
	bodies []string
}

func baseConfig(k *paysim.Keys) wxpay.Config {
	return wxpay.Config{
		AppID:         k.WxAppID,
		MchID:         k.WxMchID,
		CertSerial:    k.WxCertSerial,
		PrivateKeyPEM: paysim.PrivatePEM(k.WxMerchant),
		APIv3Key:      k.WxAPIv3Key,
		PublicKeyID:   k.WxPublicKeyID,
		PublicKeyPEM:  paysim.PublicPEM(&k.WxPlatform.PublicKey),
		Timeout:       5 * time.Second,
	}
}

func newEnv(t *testing.T, adjust ...func(*paysim.Options, *wxpay.Config)) *env {
	t.Helper()
	k := simkeys.Get(t)
	opts := paysim.Options{Keys: k, NotifyRetry: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}, TimeoutHold: 5 * time.Second}
	cfg := baseConfig(k)
	for _, f := range adjust {
		f(&opts, &cfg)
	}
	sim, err := paysim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{sim: sim, wx: wxsim.Register(sim), notified: make(chan payment.Notification, 16), rejected: make(chan error, 16)}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v3/pay/transactions/native" {
			b, _ := io.ReadAll(r.Body)
			e.mu.Lock()
			e.bodies = append(e.bodies, string(b))
			e.mu.Unlock()
			r.Body = io.NopCloser(strings.NewReader(string(b)))
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	t.Cleanup(sim.Close)
	var client *wxpay.Client
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n, err := client.ParseNotify(r.Context(), r.Header, body)
		if err != nil {
			e.rejected <- err
			http.Error(w, `{"code":"FAIL","message":"bad notification"}`, http.StatusBadRequest)
			return
		}
		e.notified <- n
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	if cfg.APIBase == "" {
		cfg.APIBase = e.srv.URL
	}
	if cfg.NotifyURL == "" {
		cfg.NotifyURL = receiver.URL + "/notify/sim-1/wxpay"
	}
	e.cfg = cfg
	client, err = wxpay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.client = client
	return e
}

func (e *env) waitNotification(t *testing.T) payment.Notification {
	t.Helper()
	select {
	case n := <-e.notified:
		return n
	case err := <-e.rejected:
		t.Fatalf("notification rejected: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
	}
	return payment.Notification{}
}

var orderSeq struct {
	sync.Mutex
	n int
}

func order(total payment.Fen) payment.Order {
	orderSeq.Lock()
	orderSeq.n++
	n := orderSeq.n
	orderSeq.Unlock()
	return payment.Order{
		OutTradeNo: "T" + time.Now().Format("150405") + "_" + strings.Repeat("0", 3) + string(rune('a'+n%26)) + itoa(n),
		Total:      total,
		Subject:    "按摩椅 15 分钟",
		ExpireAt:   time.Now().Add(5 * time.Minute),
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func mustCreate(t *testing.T, e *env, o payment.Order) payment.Created {
	t.Helper()
	c, err := e.client.Create(context.Background(), o)
	if err != nil {
		t.Fatalf("create %s: %v", o.OutTradeNo, err)
	}
	return c
}

func wantRejected(t *testing.T, err error, code string) {
	t.Helper()
	var re *payment.RejectedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want *payment.RejectedError %s", err, code)
	}
	if re.Code != code {
		t.Fatalf("code = %s (%s), want %s", re.Code, re.Message, code)
	}
	if payment.IsUnknown(err) {
		t.Fatalf("IsUnknown(%v) = true for a rejection", err)
	}
}

func wantUnknown(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("err = nil, want an unknown outcome")
	}
	if !payment.IsUnknown(err) {
		t.Fatalf("IsUnknown(%v) = false, want true", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	k := simkeys.Get(t)
	cases := []struct {
		name   string
		adjust func(*wxpay.Config)
		want   string
	}{
		{"missing mchid", func(c *wxpay.Config) { c.MchID = "" }, "mchid"},
		{"short apiv3 key", func(c *wxpay.Config) { c.APIv3Key = "short" }, "apiv3_key"},
		{"pkcs1 private key", func(c *wxpay.Config) {
			c.PrivateKeyPEM = strings.ReplaceAll(c.PrivateKeyPEM, "PRIVATE KEY", "RSA PRIVATE KEY")
		}, "private_key"},
		{"bad public key", func(c *wxpay.Config) { c.PublicKeyPEM = "junk" }, "public_key"},
		{"public key id", func(c *wxpay.Config) { c.PublicKeyID = "12345" }, "public_key_id"},
		{"api base with path", func(c *wxpay.Config) { c.APIBase = "http://127.0.0.1:1/wx" }, "api_base"},
		{"api base not a URL", func(c *wxpay.Config) { c.APIBase = "127.0.0.1:9000" }, "api_base"},
		{"notify url with query", func(c *wxpay.Config) { c.NotifyURL = "https://relay.example.com/n?x=1" }, "notify_url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(k)
			tc.adjust(&cfg)
			_, err := wxpay.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: err = %v, want one naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), k.WxAPIv3Key) {
				t.Fatal("error leaks the APIv3 key")
			}
		})
	}
	if _, err := wxpay.New(baseConfig(k)); err != nil {
		t.Fatalf("New with a good config (production base, no network): %v", err)
	}
}

func TestCreateQueryPayNotify(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	o := order(1250)
	c := mustCreate(t, e, o)
	if !strings.HasPrefix(c.CodeURL, "weixin://wxpay/bizpayurl?pr=") {
		t.Fatalf("code_url = %q", c.CodeURL)
	}
	st, err := e.client.Query(ctx, o.OutTradeNo)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != payment.StateWaiting || !st.Scanned || st.State.WasPaid() {
		t.Fatalf("after create: %+v, want waiting+scanned", st)
	}
	if err := e.sim.Pay(payment.WxPay, o.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	st, err = e.client.Query(ctx, o.OutTradeNo)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != payment.StatePaid || st.Amount.Total != 1250 || st.TransactionID == "" || st.PaidAt.IsZero() {
		t.Fatalf("after pay: %+v", st)
	}
	if d := time.Since(st.PaidAt); d < -time.Second || d > time.Minute {
		t.Fatalf("PaidAt %v is %v from now", st.PaidAt, d)
	}
	n := e.waitNotification(t)
	if n.Kind != payment.NotifyPayment || n.OutTradeNo != o.OutTradeNo || n.State != payment.StatePaid ||
		n.Amount.Total != 1250 || n.TransactionID != st.TransactionID || !strings.HasPrefix(n.ID, "EV-") {
		t.Fatalf("notification = %+v", n)
	}
	stats := e.sim.Stats()
	if stats["wxpay.native"] != 1 || stats["wxpay.query"] != 2 {
		t.Fatalf("stats = %v", stats)
	}
}

func TestCreateSendsBeijingTimeExpire(t *testing.T) {
	e := newEnv(t)
	o := order(100)
	o.ExpireAt = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	mustCreate(t, e, o)
	e.mu.Lock()
	body := e.bodies[len(e.bodies)-1]
	e.mu.Unlock()
	if !strings.Contains(body, `"time_expire":"2030-01-02T11:04:05+08:00"`) {
		t.Fatalf("prepay body %s: want time_expire in +08:00", body)
	}
	if !strings.Contains(body, `"notify_url":"`+e.cfg.NotifyURL+`"`) {
		t.Fatalf("prepay body %s: want the default notify_url", body)
	}
	// An order's own notify URL wins over the default.
	o2 := order(100)
	o2.NotifyURL = "https://relay.example.com/notify/chair-9/wxpay"
	mustCreate(t, e, o2)
	e.mu.Lock()
	body = e.bodies[len(e.bodies)-1]
	e.mu.Unlock()
	if !strings.Contains(body, `"notify_url":"https://relay.example.com/notify/chair-9/wxpay"`) {
		t.Fatalf("prepay body %s: want the order's notify_url", body)
	}
}

func TestCreateRepeat(t *testing.T) {
	e := newEnv(t)
	o := order(300)
	first := mustCreate(t, e, o)
	again := mustCreate(t, e, o)
	if again.CodeURL == "" || again.CodeURL == first.CodeURL {
		t.Fatalf("repeat create: code_url %q then %q, want a fresh one", first.CodeURL, again.CodeURL)
	}
	changed := o
	changed.Total = 301
	_, err := e.client.Create(context.Background(), changed)
	wantRejected(t, err, "OUT_TRADE_NO_USED")
}

func TestCreateOther(t *testing.T) {
	e := newEnv(t)
	o := order(500)
	o.Other = map[string]any{"attach": "bay-3", "goods_tag": "WXG", "scene_info": map[string]any{"payer_client_ip": "127.0.0.1", "device_id": "chair-001"}}
	mustCreate(t, e, o)
	e.mu.Lock()
	body := e.bodies[len(e.bodies)-1]
	e.mu.Unlock()
	for _, want := range []string{`"attach":"bay-3"`, `"goods_tag":"WXG"`, `"device_id":"chair-001"`, `"amount":{"currency":"CNY","total":500}`} {
		if !strings.Contains(body, want) {
			t.Errorf("merged body %s lacks %s", body, want)
		}
	}
	if !strings.HasSuffix(body, "}\n") {
		t.Errorf("merged body %q: want the SDK's encoder output (trailing newline)", body)
	}

	for _, key := range []string{"amount", "out_trade_no", "notify_url", "appid", "mchid", "description", "time_expire"} {
		bad := order(500)
		bad.Other = map[string]any{key: "x", "attach": "ok"}
		_, err := e.client.Create(context.Background(), bad)
		var fe *payment.FieldError
		if !errors.Is(err, payment.ErrOtherOverride) || !errors.As(err, &fe) || fe.Field != "data.other."+key {
			t.Errorf("other %s: err = %v, want ErrOtherOverride naming the key", key, err)
		}
	}
	// A field WeChat does not know is refused by the provider, definitely.
	bad := order(500)
	bad.Other = map[string]any{"no_such_field": 1}
	_, err := e.client.Create(context.Background(), bad)
	wantRejected(t, err, "PARAM_ERROR")
	if n := len(e.sim.Orders()); n != 1 {
		t.Fatalf("simulator has %d orders, want 1", n)
	}
}

func TestQueryUnknownOrderIsNotCreated(t *testing.T) {
	e := newEnv(t)
	st, err := e.client.Query(context.Background(), "NEVER_CREATED_1")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != payment.StateNotCreated {
		t.Fatalf("state = %v, want not_created", st.State)
	}
}

func TestCloseStateMachine(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	o := order(100)
	mustCreate(t, e, o)
	if cl, err := e.client.Close(ctx, o.OutTradeNo); err != nil || cl.Paid || cl.Refunded {
		t.Fatalf("close unpaid: %+v, %v", cl, err)
	}
	if st, err := e.client.Query(ctx, o.OutTradeNo); err != nil || st.State != payment.StateClosed {
		t.Fatalf("query closed: %+v, %v", st, err)
	}
	if cl, err := e.client.Close(ctx, o.OutTradeNo); err != nil || cl.Paid {
		t.Fatalf("close again: %+v, %v (want idempotent success)", cl, err)
	}
	if err := e.sim.Pay(payment.WxPay, o.OutTradeNo, 0); err == nil {
		t.Fatal("paying a closed order succeeded")
	}
	_, err := e.client.Create(ctx, o)
	wantRejected(t, err, "ORDER_CLOSED")

	// The buyer paid between the last query and the close.
	p := order(100)
	mustCreate(t, e, p)
	if err := e.sim.Pay(payment.WxPay, p.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	cl, err := e.client.Close(ctx, p.OutTradeNo)
	if err != nil || !cl.Paid {
		t.Fatalf("close after pay: %+v, %v; want Paid (ORDERPAID)", cl, err)
	}
	_, err = e.client.Create(ctx, p)
	wantRejected(t, err, "ORDERPAID")

	if cl, err := e.client.Close(ctx, "NEVER_CREATED_2"); err != nil || cl.Paid {
		t.Fatalf("close unknown: %+v, %v; want nothing-to-close success", cl, err)
	}
}

func TestRefunds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	o := order(1250)
	mustCreate(t, e, o)
	if err := e.sim.Pay(payment.WxPay, o.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	e.waitNotification(t)

	r1 := payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "R1", Total: 1250, Refund: 500, Reason: "服务未完成"}
	rs, err := e.client.Refund(ctx, r1)
	if err != nil {
		t.Fatal(err)
	}
	if rs.State != payment.RefundProcessing || rs.Amount != 500 || rs.RefundID == "" {
		t.Fatalf("refund: %+v", rs)
	}
	again, err := e.client.Refund(ctx, r1)
	if err != nil || again.RefundID != rs.RefundID {
		t.Fatalf("repeat refund: %+v, %v; want the same refund %s", again, err, rs.RefundID)
	}
	if st, err := e.client.Query(ctx, o.OutTradeNo); err != nil || st.State != payment.StateRefunded || st.Amount.Total != 1250 {
		t.Fatalf("query after refund: %+v, %v", st, err)
	}
	if q, err := e.client.QueryRefund(ctx, o.OutTradeNo, r1.OutRefundNo); err != nil || q.State != payment.RefundProcessing {
		t.Fatalf("query refund: %+v, %v", q, err)
	}
	if err := e.sim.RefundComplete(payment.WxPay, r1.OutRefundNo); err != nil {
		t.Fatal(err)
	}
	if q, err := e.client.QueryRefund(ctx, o.OutTradeNo, r1.OutRefundNo); err != nil || q.State != payment.RefundSuccess || q.Amount != 500 {
		t.Fatalf("query refund after completion: %+v, %v", q, err)
	}
	n := e.waitNotification(t)
	if n.Kind != payment.NotifyRefund || n.OutRefundNo != r1.OutRefundNo || n.RefundState != payment.RefundSuccess || n.OutTradeNo != o.OutTradeNo {
		t.Fatalf("refund notification: %+v", n)
	}

	// The rest, then nothing more.
	r2 := payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "R2", Total: 1250, Refund: 750}
	if _, err := e.client.Refund(ctx, r2); err != nil {
		t.Fatal(err)
	}
	r3 := payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "R3", Total: 1250, Refund: 1}
	_, err = e.client.Refund(ctx, r3)
	wantRejected(t, err, "INVALID_REQUEST")
	// Same number, different amount: refused, never a second payout.
	r1b := r1
	r1b.Refund = 600
	_, err = e.client.Refund(ctx, r1b)
	wantRejected(t, err, "INVALID_REQUEST")
	info, _ := e.sim.Order(payment.WxPay, o.OutTradeNo)
	if info.Refunded != 1250 || len(info.Refunds) != 2 {
		t.Fatalf("simulator order: %+v", info)
	}

	if q, err := e.client.QueryRefund(ctx, o.OutTradeNo, "NO_SUCH_REFUND"); err != nil || q.State != payment.RefundNotFound {
		t.Fatalf("query unknown refund: %+v, %v", q, err)
	}
	_, err = e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: "NEVER_CREATED_3", OutRefundNo: "X1", Total: 100, Refund: 100})
	wantRejected(t, err, "RESOURCE_NOT_EXISTS")
	if _, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: "X2", Total: 100, Refund: 101}); err == nil {
		t.Fatal("refund above total accepted client-side")
	}
}

func TestRefundNotEnough(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	o := order(1000)
	mustCreate(t, e, o)
	if err := e.sim.Pay(payment.WxPay, o.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	e.wx.SetRefundBalance(300)
	_, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "R", Total: 1000, Refund: 1000})
	wantRejected(t, err, "NOT_ENOUGH")
	if _, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "S", Total: 1000, Refund: 300}); err != nil {
		t.Fatalf("refund within balance: %v", err)
	}
}

// TestRejections maps every business error the adapter can meet to a
// definite *payment.RejectedError with WeChat's code.
func TestRejections(t *testing.T) {
	k := simkeys.Get(t)
	e := newEnv(t)
	ctx := context.Background()

	wrongApp := e.cfg
	wrongApp.AppID = "wx0000000000000000"
	wrongAppClient, err := wxpay.New(wrongApp)
	if err != nil {
		t.Fatal(err)
	}
	other, err := paysim.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := e.cfg
	wrongKey.PrivateKeyPEM = paysim.PrivatePEM(other.WxMerchant)
	wrongKeyClient, err := wxpay.New(wrongKey)
	if err != nil {
		t.Fatal(err)
	}
	wrongSerial := e.cfg
	wrongSerial.CertSerial = other.WxCertSerial
	wrongSerialClient, err := wxpay.New(wrongSerial)
	if err != nil {
		t.Fatal(err)
	}
	_ = k

	cases := []struct {
		name string
		call func() error
		code string
	}{
		{"appid not bound", func() error { _, err := wrongAppClient.Create(ctx, order(100)); return err }, "APPID_MCHID_NOT_MATCH"},
		{"description too long", func() error {
			o := order(100)
			o.Subject = strings.Repeat("字", 128)
			_, err := e.client.Create(ctx, o)
			return err
		}, "PARAM_ERROR"},
		{"out_trade_no too short", func() error {
			o := order(100)
			o.OutTradeNo = "T1"
			_, err := e.client.Create(ctx, o)
			return err
		}, "PARAM_ERROR"},
		{"notify_url not https", func() error {
			o := order(100)
			o.NotifyURL = "http://relay.example.com/notify/x/wxpay"
			_, err := e.client.Create(ctx, o)
			return err
		}, "PARAM_ERROR"},
		{"wrong merchant key", func() error { _, err := wrongKeyClient.Query(ctx, "ANY_ORDER_1"); return err }, "SIGN_ERROR"},
		{"wrong cert serial", func() error { _, err := wrongSerialClient.Query(ctx, "ANY_ORDER_1"); return err }, "SIGN_ERROR"},
		{"refund unknown order", func() error {
			_, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: "NEVER_CREATED_4", OutRefundNo: "R4", Total: 1, Refund: 1})
			return err
		}, "RESOURCE_NOT_EXISTS"},
		{"refund unpaid order", func() error {
			o := order(100)
			mustCreate(t, e, o)
			_, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "R", Total: 100, Refund: 100})
			return err
		}, "RESOURCE_NOT_EXISTS"},
		{"refund wrong total", func() error {
			o := order(100)
			mustCreate(t, e, o)
			if err := e.sim.Pay(payment.WxPay, o.OutTradeNo, 0); err != nil {
				return err
			}
			_, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "R", Total: 200, Refund: 100})
			return err
		}, "PARAM_ERROR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantRejected(t, tc.call(), tc.code) })
	}
}

// TestUnknownOutcomes: faults never turn into "not paid".
func TestUnknownOutcomes(t *testing.T) {
	e := newEnv(t, func(o *paysim.Options, c *wxpay.Config) {
		c.Timeout = 300 * time.Millisecond
		// Far beyond the client timeout: if the client waited for the
		// server to give up, the elapsed-time check below fails.
		o.TimeoutHold = 20 * time.Second
	})
	ctx := context.Background()
	paid := order(100)
	mustCreate(t, e, paid)
	if err := e.sim.Pay(payment.WxPay, paid.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	open := order(100)
	mustCreate(t, e, open)

	// In this order: the refund query needs the refund to exist, or its
	// answer is a 404, which carries no signature for a fault to spoil.
	calls := []struct {
		api  string
		call func() error
	}{
		{"wxpay.native", func() error { _, err := e.client.Create(ctx, order(100)); return err }},
		{"wxpay.query", func() error { _, err := e.client.Query(ctx, paid.OutTradeNo); return err }},
		{"wxpay.close", func() error { _, err := e.client.Close(ctx, open.OutTradeNo); return err }},
		{"wxpay.refund", func() error {
			_, err := e.client.Refund(ctx, payment.RefundRequest{OutTradeNo: paid.OutTradeNo, OutRefundNo: paid.OutTradeNo + "R", Total: 100, Refund: 1})
			return err
		}},
		{"wxpay.refund_query", func() error { _, err := e.client.QueryRefund(ctx, paid.OutTradeNo, paid.OutTradeNo+"R"); return err }},
	}
	for _, kind := range []paysim.FaultKind{paysim.Fault5xx, paysim.FaultBadSign, paysim.FaultStaleTS, paysim.FaultRateLimit, paysim.FaultTimeout} {
		for _, c := range calls {
			api, call := c.api, c.call
			t.Run(string(kind)+"/"+api, func(t *testing.T) {
				if err := e.sim.InjectFault(paysim.Fault{Provider: payment.WxPay, API: api, Kind: kind, Count: 1}); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				err := call()
				wantUnknown(t, err)
				if kind == paysim.FaultRateLimit && !errors.Is(err, payment.ErrRateLimited) {
					t.Fatalf("429: err = %v, want ErrRateLimited", err)
				}
				if kind == paysim.FaultTimeout && time.Since(start) > 10*time.Second {
					t.Fatalf("timeout took %v; the client timeout is 300ms", time.Since(start))
				}
			})
		}
	}
	// Every fault was used exactly once; the order is still paid and the
	// open one still open.
	if st, err := e.client.Query(ctx, paid.OutTradeNo); err != nil || st.State.WasPaid() == false {
		t.Fatalf("paid order after faults: %+v, %v", st, err)
	}
}

// TestResponseVerification: a client configured with another WeChat Pay
// public key, or another key ID, treats every answer as unknown.
func TestResponseVerification(t *testing.T) {
	e := newEnv(t)
	other, err := paysim.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	o := order(100)
	mustCreate(t, e, o)
	for name, adjust := range map[string]func(*wxpay.Config){
		"wrong public key": func(c *wxpay.Config) { c.PublicKeyPEM = paysim.PublicPEM(&other.WxPlatform.PublicKey) },
		"wrong key id":     func(c *wxpay.Config) { c.PublicKeyID = "PUB_KEY_ID_0000000000000000000000000000000001" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := e.cfg
			adjust(&cfg)
			c, err := wxpay.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Query(context.Background(), o.OutTradeNo)
			wantUnknown(t, err)
			_, err = c.Close(context.Background(), o.OutTradeNo) // 204 is verified too
			wantUnknown(t, err)
		})
	}
}

// fakeWx answers every request with status and body, signed with the
// simulator's platform key unless unsigned is set.
func fakeWx(t *testing.T, k *paysim.Keys, status int, body string, unsigned bool) *wxpay.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !unsigned {
			h := http.Header{}
			resign(t, h, []byte(body), k.WxPlatform, time.Now())
			for name, v := range h {
				w.Header()[name] = v
			}
			w.Header().Set("Wechatpay-Serial", k.WxPublicKeyID)
			w.Header().Set("Request-Id", "fake")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	cfg := baseConfig(k)
	cfg.APIBase = srv.URL
	c, err := wxpay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestQueryTradeStates covers trade states the simulator never produces for
// Native orders, and malformed but correctly signed answers.
func TestQueryTradeStates(t *testing.T) {
	k := simkeys.Get(t)
	tx := func(state, extra string) string {
		return `{"appid":"` + k.WxAppID + `","mchid":"` + k.WxMchID + `","out_trade_no":"Q_ORDER_1","trade_state":"` + state + `"` + extra + `}`
	}
	paidAmount := `,"transaction_id":"42","success_time":"2026-01-02T10:14:09+08:00","amount":{"total":1250,"payer_total":1200,"currency":"CNY"}`
	cases := []struct {
		name     string
		body     string
		state    payment.State
		paid     payment.Fen
		wantFail bool
	}{
		{"NOTPAY", tx("NOTPAY", ""), payment.StateWaiting, 0, false},
		{"USERPAYING", tx("USERPAYING", ""), payment.StateWaiting, 0, false},
		{"CLOSED", tx("CLOSED", ""), payment.StateClosed, 0, false},
		{"REVOKED", tx("REVOKED", ""), payment.StateClosed, 0, false},
		{"PAYERROR: a failed attempt, still payable", tx("PAYERROR", ""), payment.StateWaiting, 0, false},
		{"SUCCESS: the order total decides, not payer_total", tx("SUCCESS", paidAmount), payment.StatePaid, 1250, false},
		{"SUCCESS without payer_total", tx("SUCCESS", `,"amount":{"total":1250}`), payment.StatePaid, 1250, false},
		{"REFUND", tx("REFUND", paidAmount), payment.StateRefunded, 1250, false},
		{"SUCCESS with payer_total only", tx("SUCCESS", `,"amount":{"payer_total":1250}`), 0, 0, true},
		{"SUCCESS without amount", tx("SUCCESS", ""), 0, 0, true},
		{"unknown state", tx("WHATEVER", ""), 0, 0, true},
		{"other order", strings.Replace(tx("SUCCESS", paidAmount), "Q_ORDER_1", "Q_ORDER_2", 1), 0, 0, true},
		{"bad success_time", tx("SUCCESS", `,"success_time":"yesterday","amount":{"total":1}`), 0, 0, true},
		{"not JSON", `<html>`, 0, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := fakeWx(t, k, 200, tc.body, false).Query(context.Background(), "Q_ORDER_1")
			if tc.wantFail {
				wantUnknown(t, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.State != tc.state || st.Amount.Total != tc.paid || !st.Scanned {
				t.Fatalf("status %+v, want %v paid %v", st, tc.state, tc.paid)
			}
		})
	}
	t.Run("unsigned 200", func(t *testing.T) {
		_, err := fakeWx(t, k, 200, tx("SUCCESS", paidAmount), true).Query(context.Background(), "Q_ORDER_1")
		wantUnknown(t, err)
	})
	t.Run("404 without WeChat code", func(t *testing.T) {
		_, err := fakeWx(t, k, 404, `<html>not found</html>`, true).Query(context.Background(), "Q_ORDER_1")
		wantUnknown(t, err)
	})
	t.Run("502 from a proxy", func(t *testing.T) {
		_, err := fakeWx(t, k, 502, `bad gateway`, true).Query(context.Background(), "Q_ORDER_1")
		wantUnknown(t, err)
	})
}

func TestRefundStatuses(t *testing.T) {
	k := simkeys.Get(t)
	refund := func(status string) string {
		return `{"refund_id":"50","out_refund_no":"R_1","transaction_id":"42","out_trade_no":"Q_ORDER_1","channel":"ORIGINAL",` +
			`"user_received_account":"x","create_time":"2026-01-02T10:00:00+08:00","status":"` + status + `",` +
			`"amount":{"total":100,"refund":100,"payer_total":100,"payer_refund":100,"settlement_refund":100,"settlement_total":100,"discount_refund":0,"currency":"CNY"}}`
	}
	for status, want := range map[string]payment.RefundState{
		"SUCCESS": payment.RefundSuccess, "PROCESSING": payment.RefundProcessing,
		"ABNORMAL": payment.RefundAbnormal, "CLOSED": payment.RefundClosed,
	} {
		rs, err := fakeWx(t, k, 200, refund(status), false).QueryRefund(context.Background(), "Q_ORDER_1", "R_1")
		if err != nil || rs.State != want || rs.Amount != 100 {
			t.Errorf("%s: %+v, %v; want %v", status, rs, err, want)
		}
	}
	_, err := fakeWx(t, k, 200, refund("SUCCESS"), false).QueryRefund(context.Background(), "OTHER_ORDER", "R_1")
	wantUnknown(t, err)
	_, err = fakeWx(t, k, 200, refund("NEW_STATE"), false).QueryRefund(context.Background(), "Q_ORDER_1", "R_1")
	wantUnknown(t, err)
}
