package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
)

// testBroker returns a broker URL and a unique prefix: a real broker when
// KIOSKPAY_TEST_MQTT_URL is set, else an in-process one.
func testBroker(t *testing.T) (string, string) {
	return mqtttest.Broker(t), mqtttest.Unique("rt")
}

// subscribe returns a channel of payloads published on topic.
func subscribe(t *testing.T, url, topic string) <-chan []byte {
	t.Helper()
	s := mqtttest.Subscribe(t, url, topic)
	ch := make(chan []byte, 16)
	go func() {
		for m := range s.C {
			ch <- m.Payload
		}
	}()
	return ch
}

func newTestRelay(t *testing.T, url, prefix string) (*Relay, *MQTTPublisher) {
	t.Helper()
	pub, err := Dial(BrokerConfig{URL: url, ClientID: mqtttest.Unique("relay-")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	deadline := time.Now().Add(5 * time.Second)
	for !pub.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("relay did not connect to the broker")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &Relay{Prefix: prefix, Pub: pub, PublishTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)}, pub
}

func post(t *testing.T, h http.Handler, path string, hdr map[string]string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func recv(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("nothing published within 5s")
		return nil
	}
}

func TestRelayPublishesWeChat(t *testing.T) {
	url, prefix := testBroker(t)
	relay, _ := newTestRelay(t, url, prefix)
	got := subscribe(t, url, prefix+"/chair-001/pay/notify")
	body := `{"id":"EV-2018022511223320873","event_type":"TRANSACTION.SUCCESS","resource":{"ciphertext":"…"}}`
	hdr := map[string]string{
		"Content-Type":             "application/json",
		"Wechatpay-Timestamp":      "1554208460",
		"Wechatpay-Nonce":          "c5ac7061fccab6bf3e254dcf98995b8c",
		"Wechatpay-Signature":      "CtcbzwtQjN8rnOXItEBJ5aQFSnIXESeV28Pr2YEmf9wsDQ8Nx25ytW6FXBCAFdrr0mgqngX3AD9gNzjnNHzSGTPBSsaEkIfhPF4b8YRRTpny88tNLyprXA0GU5ID3DkZHpjFkX1hAp/D0fva2GKjGRLtvYbtUk/OLYqFuzbjt3yOBzJSKQqJsvbXILffgAmX4pKql+Ln+6UPvSCeKwznvtPaEx+9nMBmKu7Wpbqm/+2ksc0XwjD+xlvlECkCxfD/OJ4gN3IurE0fpjxIkvHDiinQmk51BI7zQD8k1znU7r/spPqB+vZjc5ep6DC5wZUpFu5vJ8MoNKjCu8wnzyCFdA==",
		"Wechatpay-Serial":         "PUB_KEY_ID_0000000000000024101100397200000006",
		"Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
		"Cookie":                   "session=secret",
		"X-Forwarded-For":          "10.0.0.1",
	}
	w := post(t, relay.Handler(), "/notify/chair-001/wxpay", hdr, []byte(body))
	if w.Code != http.StatusNoContent || w.Body.Len() != 0 {
		t.Fatalf("status %d body %q, want 204 and no body", w.Code, w.Body)
	}
	msg := recv(t, got)
	n, err := contract.DecodeNotify(msg)
	if err != nil {
		t.Fatalf("the daemon's decoder refuses the envelope: %v\n%s", err, msg)
	}
	if n.Provider != "wxpay" || string(n.Body) != body || n.RequestID == "" {
		t.Fatalf("envelope %+v", n)
	}
	for k, v := range hdr {
		forwarded := strings.HasPrefix(k, "Wechatpay-") || k == "Content-Type"
		if got := n.Header.Get(k); forwarded && got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		} else if !forwarded && got != "" {
			t.Errorf("forwarded header %s", k)
		}
	}
}

func TestRelayPublishesAlipay(t *testing.T) {
	url, prefix := testBroker(t)
	relay, _ := newTestRelay(t, url, prefix)
	got := subscribe(t, url, prefix+"/vend_7/pay/notify")
	body := "gmt_create=2025-01-02+03%3A04%3A05&out_trade_no=chair001_0001&sign=abc%2B%2F%3D&sign_type=RSA2&trade_status=TRADE_SUCCESS"
	w := post(t, relay.Handler(), "/notify/vend_7/alipay", map[string]string{"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, []byte(body))
	if w.Code != http.StatusOK || w.Body.String() != "success" {
		t.Fatalf("status %d body %q, want 200 success", w.Code, w.Body)
	}
	n, err := contract.DecodeNotify(recv(t, got))
	if err != nil || n.Provider != "alipay" || string(n.Body) != body {
		t.Fatalf("envelope %+v, err %v", n, err)
	}
}

func TestRelayRefusesBadRequests(t *testing.T) {
	url, prefix := testBroker(t)
	relay, _ := newTestRelay(t, url, prefix)
	relay.MaxBody = 1024
	got := subscribe(t, url, prefix+"/+/pay/notify")
	h := relay.Handler()
	for _, tc := range []struct {
		name, path string
		body       []byte
		code       int
	}{
		{"device id with a slash", "/notify/a%2Fb/wxpay", []byte("{}"), 400},
		{"device id with a wildcard", "/notify/%2B/wxpay", []byte("{}"), 400},
		{"device id too long", "/notify/" + strings.Repeat("a", 65) + "/wxpay", []byte("{}"), 400},
		{"unknown provider", "/notify/dev1/paypal", []byte("{}"), 400},
		{"empty body", "/notify/dev1/wxpay", nil, 400},
		{"not UTF-8", "/notify/dev1/alipay", []byte{0xff, 0xfe, 'x'}, 400},
		{"oversize", "/notify/dev1/wxpay", bytes.Repeat([]byte("a"), 1025), 413},
		{"missing provider", "/notify/dev1", []byte("{}"), 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := post(t, h, tc.path, nil, tc.body)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d (%s)", w.Code, tc.code, w.Body)
			}
		})
	}
	// The envelope must fit the device's 16 KiB limit, even when the body
	// fits the relay's.
	relay.MaxBody = 64 << 10
	w := post(t, h, "/notify/dev1/wxpay", nil, bytes.Repeat([]byte("a"), contract.MaxPayload))
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("envelope over the device limit: status %d", w.Code)
	}
	var fail map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &fail); err != nil || fail["code"] != "FAIL" {
		t.Fatalf("WeChat failure body %q", w.Body)
	}
	req := httptest.NewRequest(http.MethodGet, "/notify/dev1/wxpay", nil)
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, req)
	if rw.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: status %d", rw.Code)
	}
	select {
	case m := <-got:
		t.Fatalf("a refused request was published: %s", m)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestRelayBrokerDown(t *testing.T) {
	proxy, url := mqtttest.NewProxy(t, mqtttest.Broker(t))
	relay, _ := newTestRelay(t, url, "kiosk")
	h := relay.Handler()
	hw := httptest.NewRecorder()
	h.ServeHTTP(hw, httptest.NewRequest("GET", "/healthz", nil))
	if hw.Code != http.StatusOK {
		t.Fatalf("healthz %d while connected", hw.Code)
	}
	proxy.Refuse(true)
	proxy.Cut()
	deadline := time.Now().Add(5 * time.Second)
	for relay.Pub.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("relay did not notice the broker going away")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w := post(t, h, "/notify/dev1/wxpay", nil, []byte(`{"id":"x"}`))
	if w.Code < 500 {
		t.Fatalf("WeChat: status %d with the broker down, want 5xx", w.Code)
	}
	var fail map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &fail); err != nil || fail["code"] != "FAIL" || fail["message"] == "" {
		t.Fatalf("WeChat failure body %q", w.Body)
	}
	w = post(t, h, "/notify/dev1/alipay", nil, []byte("a=b"))
	if w.Code < 500 || w.Body.String() == "success" {
		t.Fatalf("Alipay: status %d body %q with the broker down", w.Code, w.Body)
	}
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, httptest.NewRequest("GET", "/healthz", nil))
	if rw.Code != http.StatusServiceUnavailable {
		t.Fatalf("healthz %d with the broker down", rw.Code)
	}
}

// stuckPublisher never gets a PUBACK.
type stuckPublisher struct{}

func (stuckPublisher) Publish(ctx context.Context, _ string, _ []byte) error {
	<-ctx.Done()
	return ctx.Err()
}
func (stuckPublisher) Connected() bool { return true }

func TestRelayNoPubackIsFailure(t *testing.T) {
	relay := &Relay{Prefix: "kiosk", Pub: stuckPublisher{}, PublishTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	start := time.Now()
	w := post(t, relay.Handler(), "/notify/dev1/alipay", nil, []byte("a=b"))
	if w.Code != http.StatusServiceUnavailable || w.Body.String() == "success" {
		t.Fatalf("status %d body %q", w.Code, w.Body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

// recordHandler hands every log record to a channel.
type recordHandler struct{ ch chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r:
	default:
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// TestDialLogsUnreachableBroker: a relay whose broker is not there says so
// in its log, in words a person understands, while /healthz fails.
func TestDialLogsUnreachableBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "tcp://" + ln.Addr().String()
	ln.Close()
	recs := make(chan slog.Record, 16)
	pub, err := Dial(BrokerConfig{URL: url, ClientID: mqtttest.Unique("relay-")}, slog.New(recordHandler{recs}))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	select {
	case r := <-recs:
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
		if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "broker unreachable") ||
			!strings.HasPrefix(attrs["err"], "cannot reach the broker: dial tcp") || attrs["broker"] != url {
			t.Fatalf("log record %v %q %v", r.Level, r.Message, attrs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing logged while the broker is unreachable")
	}
	relay := &Relay{Prefix: "kiosk", Pub: pub}
	w := httptest.NewRecorder()
	relay.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("healthz %d without a broker", w.Code)
	}
}

// With several -broker URLs the relay fails over: it moves to the second
// when the first dies, and starts on the second when the first is down.
// (Both proxies front one broker, as the nodes of a cluster share one.)
func TestRelayFailsOver(t *testing.T) {
	url, prefix := testBroker(t)
	a, aURL := mqtttest.NewProxy(t, url)
	b, bURL := mqtttest.NewProxy(t, url)
	relay, pub := newTestRelay(t, aURL+","+bURL, prefix)
	got := subscribe(t, url, prefix+"/dev1/pay/notify")
	a.Refuse(true)
	a.Cut()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := post(t, relay.Handler(), "/notify/dev1/alipay", nil, []byte("a=b"))
		if w.Code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failover: status %d, connected %v", w.Code, pub.Connected())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n, err := contract.DecodeNotify(recv(t, got)); err != nil || n.Provider != "alipay" {
		t.Fatalf("notification after the failover: %+v %v", n, err)
	}
	if b.Accepted() == 0 {
		t.Fatal("the relay did not move to the second broker")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "tcp://" + ln.Addr().String()
	ln.Close()
	relay2, _ := newTestRelay(t, dead+","+bURL, prefix)
	if w := post(t, relay2.Handler(), "/notify/dev1/alipay", nil, []byte("a=b")); w.Code != http.StatusOK {
		t.Fatalf("starting on the second broker: status %d", w.Code)
	}
	if _, err := Dial(BrokerConfig{URL: bURL + ",ssl://x:8883", ClientID: "bad"}, nil); err == nil || !strings.Contains(err.Error(), "mixes TLS and plain") {
		t.Fatalf("mixed list: %v", err)
	}
}
