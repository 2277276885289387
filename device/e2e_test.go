package device

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/alipay"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/wxpay"
	"github.com/kioskpay/kioskpay/store"
)

// simEnv is the rig's paysim, both real adapters pointed at it, and a
// stand-in notifyrelay that forwards provider notifications to the engine
// as P/pay/notify messages.
type simEnv struct {
	*harness
	sim *testrig.Sim
}

func newSimEnv(t *testing.T, mod func(*Config)) *simEnv {
	t.Helper()
	k := simkeys.Get(t)
	sim, err := testrig.StartSim(k, testrig.SimOptions{
		NotifyRetry: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond},
		TimeoutHold: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)

	env := &simEnv{sim: sim}
	var eng struct {
		sync.Mutex
		h *harness
	}
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/") // /notify/<device>/<provider>
		body, _ := io.ReadAll(r.Body)
		hdr := map[string]string{}
		for k := range r.Header {
			hdr[k] = r.Header.Get(k)
		}
		env, _ := json.Marshal(map[string]any{"provider": parts[len(parts)-1], "headers": hdr, "body": string(body)})
		eng.Lock()
		h := eng.h
		eng.Unlock()
		if h == nil || h.e.Accept(context.Background(), contract.TopicNotify, env) != nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if parts[len(parts)-1] == "alipay" {
			io.WriteString(w, "success")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(relay.Close)

	wx, err := wxpay.New(wxpay.Config{
		AppID: k.WxAppID, MchID: k.WxMchID, CertSerial: k.WxCertSerial,
		PrivateKeyPEM: paysim.PrivatePEM(k.WxMerchant), APIv3Key: k.WxAPIv3Key,
		PublicKeyID: k.WxPublicKeyID, PublicKeyPEM: paysim.PublicPEM(&k.WxPlatform.PublicKey),
		APIBase: sim.URL, Timeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ali, err := alipay.New(alipay.Config{
		AppID: k.AlipayAppID, PrivateKeyPEM: paysim.PrivatePEM(k.AlipayApp),
		AlipayPublicKeyPEM: paysim.PublicPEM(&k.AlipayPlatform.PublicKey),
		Gateway:            sim.URL + "/gateway.do", Timeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.harness = newHarness(t, func(c *Config) {
		c.Merchants = map[string]map[payment.ProviderName]payment.Provider{
			"default": {payment.WxPay: wx, payment.Alipay: ali},
		}
		c.NotifyURL = relay.URL
		c.PollInterval = 200 * time.Millisecond
		if mod != nil {
			mod(c)
		}
	})
	eng.Lock()
	eng.h = env.harness
	eng.Unlock()
	return env
}

func (s *simEnv) simOrder(p payment.ProviderName, otn string) paysim.OrderInfo {
	o, _ := s.sim.Order(p, otn)
	return o
}

// waitSim waits up to 10 s until provider p's order otn satisfies cond;
// with completeRefunds, WeChat refunds still PROCESSING are completed on
// the way, as the provider does after a while.
func (s *simEnv) waitSim(p payment.ProviderName, otn string, completeRefunds bool, cond func(paysim.OrderInfo) bool, what string) paysim.OrderInfo {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), 10*time.Second)
	defer cancel()
	o, err := s.sim.WaitOrder(ctx, p, otn, completeRefunds, cond)
	if err != nil {
		s.t.Fatalf("%s never happened: %v", what, err)
	}
	return o
}

func TestSimWxPayNotifiedDelivered(t *testing.T) {
	s := newSimEnv(t, func(c *Config) { c.PollInterval = 30 * time.Second; c.ResultKey = []byte("rk") })
	r := s.createOK("r1", "simwx_0001", 1000, "wxpay")
	info, _ := r.Fields["orderInfo"].(map[string]any)
	if code, _ := info["code_url"].(string); !strings.HasPrefix(code, "weixin://") {
		t.Fatalf("reply %s", r.Payload)
	}
	if err := s.sim.Pay(payment.WxPay, "simwx_0001", 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := s.result("simwx_0001", "paid") // via the notification: the next poll is 30 s away
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("result after %s", d)
	}
	var got contract.Result
	_ = json.Unmarshal(res.Payload, &got)
	if got.TransactionID == "" || got.TotalFee != 1000 || !got.VerifySignature([]byte("rk")) {
		t.Fatalf("result %s", res.Payload)
	}
	s.send(contract.TopicAck, ackPayload("simwx_0001", true))
	s.waitState("simwx_0001", store.Delivered)
}

func TestSimAlipayNoAckRefunded(t *testing.T) {
	s := newSimEnv(t, func(c *Config) { c.AckTimeout = 300 * time.Millisecond })
	r := s.createOK("r1", "simali_0001", 250, "alipay")
	if r.Str("pay_type") != contract.PayTypeAlipayPrecreate {
		t.Fatalf("reply %s", r.Payload)
	}
	if err := s.sim.Scan("simali_0001"); err != nil {
		t.Fatal(err)
	}
	if err := s.sim.Pay(payment.Alipay, "simali_0001", 0); err != nil {
		t.Fatal(err)
	}
	s.result("simali_0001", "paid")
	s.result("simali_0001", "refunded")
	o := s.waitSim(payment.Alipay, "simali_0001", false, func(o paysim.OrderInfo) bool { return o.Refunded == 250 }, "refund")
	if len(o.Refunds) != 1 {
		t.Fatalf("refunds %+v", o.Refunds)
	}
}

func TestSimExpiryClosesBoth(t *testing.T) {
	s := newSimEnv(t, func(c *Config) { c.DefaultProvider = contract.ProviderAny })
	s.createOK("r1", "simany_0001", 100, "")
	s.sim.Scan("simany_0001")
	s.advance(5*time.Minute + time.Second)
	s.result("simany_0001", "expired")
	if o := s.simOrder(payment.WxPay, "simany_0001"); o.State != "CLOSED" {
		t.Fatalf("wechat order %+v", o)
	}
	if o := s.simOrder(payment.Alipay, "simany_0001"); o.State != "TRADE_CLOSED" {
		t.Fatalf("alipay order %+v", o)
	}
}

func TestSimAnyPayBothOneRefunded(t *testing.T) {
	s := newSimEnv(t, func(c *Config) { c.DefaultProvider = contract.ProviderAny; c.AckTimeout = time.Hour })
	s.createOK("r1", "simany_0002", 100, "")
	if err := s.sim.Pay(payment.WxPay, "simany_0002", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.sim.Pay(payment.Alipay, "simany_0002", 0); err != nil {
		t.Fatal(err)
	}
	res := s.result("simany_0002", "paid")
	loser := payment.Alipay
	if res.Str("provider") == "alipay" {
		loser = payment.WxPay
	}
	s.waitSim(loser, "simany_0002", true, func(o paysim.OrderInfo) bool { return o.Refunded == 100 }, "refund of the duplicate payment")
	if o := s.simOrder(loser, "simany_0002"); o.Refunded != 100 || len(o.Refunds) != 1 {
		t.Fatalf("duplicate payment at %s not refunded once: %+v", loser, o)
	}
	s.send(contract.TopicAck, ackPayload("simany_0002", true))
	s.waitState("simany_0002", store.Delivered)
	winner := payment.ProviderName(res.Str("provider"))
	if o := s.simOrder(winner, "simany_0002"); o.Refunded != 0 {
		t.Fatalf("winner refunded: %+v", o)
	}
}

func TestSimAmountMismatch(t *testing.T) {
	s := newSimEnv(t, nil)
	s.createOK("r1", "simwx_0002", 1000, "wxpay")
	if err := s.sim.Pay(payment.WxPay, "simwx_0002", 999); err != nil {
		t.Fatal(err)
	}
	s.waitState("simwx_0002", store.Refunding)
	s.waitSim(payment.WxPay, "simwx_0002", true, func(o paysim.OrderInfo) bool { return o.Refunded == 999 }, "refund of 999")
	s.result("simwx_0002", "refunded")
	for _, m := range s.results("simwx_0002") {
		if m.Str("status") == "paid" {
			t.Fatalf("mismatch delivered: %s", m.Payload)
		}
	}
}

func TestSimProviderFaultsStillPaid(t *testing.T) {
	s := newSimEnv(t, func(c *Config) { c.PollInterval = 50 * time.Millisecond })
	s.createOK("r1", "simwx_0003", 100, "wxpay")
	for _, kind := range []paysim.FaultKind{paysim.Fault5xx, paysim.FaultBadSign, paysim.FaultRateLimit} {
		if err := s.sim.InjectFault(paysim.Fault{Provider: payment.WxPay, API: "query", Kind: kind, Count: 1}); err != nil {
			t.Fatal(err)
		}
	}
	s.sim.Pay(payment.WxPay, "simwx_0003", 0)
	s.result("simwx_0003", "paid")
}

// TestSimOtherOverrideRefused: "other" may add to a provider request but
// never change the amount or the order number; the refusal names the field
// and leaves nothing payable behind.
func TestSimOtherOverrideRefused(t *testing.T) {
	for _, tt := range []struct {
		provider, key string
	}{{"wxpay", "amount"}, {"alipay", "total_amount"}} {
		t.Run(tt.provider, func(t *testing.T) {
			s := newSimEnv(t, nil)
			otn := "simoth_" + tt.provider
			s.send(contract.TopicCreate, createPayload("r1", otn, 100, tt.provider, `,"other":{"`+tt.key+`":"0.01"}`))
			r := s.reply("r1")
			if r.Str("error") != string(contract.ErrInvalidArgument) || r.Str("field") != "data.other."+tt.key {
				t.Fatalf("reply %s: want INVALID_ARGUMENT on data.other.%s", r.Payload, tt.key)
			}
			if _, ok := s.sim.Order(payment.ProviderName(tt.provider), otn); ok {
				t.Fatalf("the provider has an order for a refused request")
			}
		})
	}
}
