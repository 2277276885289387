package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/alipay"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/alisim"
	"github.com/kioskpay/kioskpay/payment/paysim/wxsim"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

// dyingPublisher stands for a relay process killed after it read the
// request and before it published: the connection drops with no answer.
type dyingPublisher struct{ calls atomic.Int32 }

func (d *dyingPublisher) Publish(context.Context, string, []byte) error {
	d.calls.Add(1)
	panic(http.ErrAbortHandler)
}
func (d *dyingPublisher) Connected() bool { return true }

// TestProviderRetryAfterRelayDied sends a real signed notification from
// paysim through a "load balancer" whose first backend dies mid-request.
// The provider's retry reaches the second replica, which publishes it, and
// the forwarded envelope still verifies with the provider SDK: the relay
// kept every header that matters and the body byte for byte.
func TestProviderRetryAfterRelayDied(t *testing.T) {
	k := simkeys.Get(t)
	for _, provider := range []payment.ProviderName{payment.WxPay, payment.Alipay} {
		t.Run(string(provider), func(t *testing.T) {
			url, prefix := testBroker(t)
			got := subscribe(t, url, prefix+"/chair-001/pay/notify")

			dead := &dyingPublisher{}
			a := &Relay{Prefix: prefix, Pub: dead, Logger: slog.New(slog.DiscardHandler)}
			b, _ := newTestRelay(t, url, prefix)
			var hits atomic.Int32
			lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if hits.Add(1) == 1 {
					a.Handler().ServeHTTP(w, r)
					return
				}
				b.Handler().ServeHTTP(w, r)
			}))
			t.Cleanup(lb.Close)

			sim, err := paysim.New(paysim.Options{Keys: k, NotifyRetry: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			wxsim.Register(sim)
			alisim.Register(sim)
			simSrv := httptest.NewServer(sim)
			t.Cleanup(simSrv.Close)
			t.Cleanup(sim.Close)

			notifyURL := lb.URL + "/notify/chair-001/" + string(provider)
			var p payment.Provider
			switch provider {
			case payment.WxPay:
				p, err = wxpay.New(wxpay.Config{
					AppID: k.WxAppID, MchID: k.WxMchID, CertSerial: k.WxCertSerial,
					PrivateKeyPEM: paysim.PrivatePEM(k.WxMerchant), APIv3Key: k.WxAPIv3Key,
					PublicKeyID: k.WxPublicKeyID, PublicKeyPEM: paysim.PublicPEM(&k.WxPlatform.PublicKey),
					APIBase: simSrv.URL, Timeout: 5 * time.Second, NotifyURL: notifyURL,
				})
			case payment.Alipay:
				p, err = alipay.New(alipay.Config{
					AppID: k.AlipayAppID, PrivateKeyPEM: paysim.PrivatePEM(k.AlipayApp),
					AlipayPublicKeyPEM: paysim.PublicPEM(&k.AlipayPlatform.PublicKey),
					Gateway:            simSrv.URL + "/gateway.do", Timeout: 5 * time.Second,
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			no := fmt.Sprintf("relay_%s_%d", provider, time.Now().UnixNano()%1e9)
			if _, err := p.Create(ctx, payment.Order{OutTradeNo: no, Total: 1000, Subject: "relay test", NotifyURL: notifyURL, ExpireAt: time.Now().Add(5 * time.Minute)}); err != nil {
				t.Fatalf("create: %v", err)
			}
			if err := sim.Pay(provider, no, 0); err != nil {
				t.Fatalf("pay: %v", err)
			}

			msg := recv(t, got)
			if dead.calls.Load() != 1 {
				t.Fatalf("the first replica saw %d requests, want 1 (the one it died on)", dead.calls.Load())
			}
			env, err := contract.DecodeNotify(msg)
			if err != nil {
				t.Fatalf("decode envelope: %v", err)
			}
			n, err := p.ParseNotify(ctx, env.Header, env.Body)
			if err != nil {
				t.Fatalf("the relayed notification does not verify: %v", err)
			}
			if n.OutTradeNo != no {
				t.Fatalf("notification for %q, want %q", n.OutTradeNo, no)
			}
		})
	}
}
