package alipay

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/alisim"
)

// testKeys is generated once for the package: RSA generation is slow.
var testKeys *paysim.Keys

func TestMain(m *testing.M) {
	k, err := paysim.GenerateKeys()
	if err != nil {
		panic(err)
	}
	testKeys = k
	os.Exit(m.Run())
}

// env is a paysim behind httptest with an adapter pointed at it. Every
// gateway request passes through a recorder that keeps the last form per
// method and can run a hook before the simulator sees a call.
type env struct {
	sim    *paysim.Server
	srv    *httptest.Server
	client *Client

	mu     sync.Mutex
	forms  map[string]url.Values
	before map[string]func()
}

type envOption func(*paysim.Options, *Config)

func withTimeout(d time.Duration) envOption {
	return func(o *paysim.Options, c *Config) { c.Timeout = d; o.TimeoutHold = 5 * d }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	so := paysim.Options{Keys: testKeys, NotifyRetry: []time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}}
	cfg := Config{
		AppID:              testKeys.AlipayAppID,
		PrivateKeyPEM:      paysim.PrivatePEM(testKeys.AlipayApp),
		AlipayPublicKeyPEM: paysim.PublicPEM(&testKeys.AlipayPlatform.PublicKey),
		Timeout:            5 * time.Second,
	}
	for _, o := range opts {
		o(&so, &cfg)
	}
	sim, err := paysim.New(so)
	if err != nil {
		t.Fatal(err)
	}
	alisim.Register(sim)
	e := &env{sim: sim, forms: map[string]url.Values{}, before: map[string]func(){}}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/gateway.do" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			form, _ := url.ParseQuery(string(body))
			method := form.Get("method")
			e.mu.Lock()
			e.forms[method] = form
			hook := e.before[method]
			delete(e.before, method)
			e.mu.Unlock()
			if hook != nil {
				hook()
			}
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		e.srv.Close()
		sim.Close()
	})
	cfg.Gateway = e.srv.URL + "/gateway.do"
	if e.client, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// lastForm returns the last request form sent for method.
func (e *env) lastForm(method string) url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.forms[method]
}

// beforeNext runs f once, just before the simulator handles the next call
// of method: a way to make things happen "between" two calls.
func (e *env) beforeNext(method string, f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.before[method] = f
}

var orderSeq struct {
	sync.Mutex
	n int
}

// newOrder returns an order with a unique out_trade_no.
func newOrder(t *testing.T, total payment.Fen) payment.Order {
	orderSeq.Lock()
	orderSeq.n++
	n := orderSeq.n
	orderSeq.Unlock()
	return payment.Order{
		OutTradeNo: fmt.Sprintf("T%s_%04d", time.Now().Format("150405"), n),
		Total:      total,
		Subject:    "Massage 15 min",
		ExpireAt:   time.Now().Add(5 * time.Minute),
	}
}
