package alisim

// Helpers that read the simulator through the real SDK, as the daemon
// does: smartwalle/alipay v3.2.31. Nothing here decodes a provider answer
// by hand.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	alipay "github.com/smartwalle/alipay/v3"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

func sdkCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// aliSDK is the official Alipay client of k's application, pointed at srv.
func aliSDK(t *testing.T, k *paysim.Keys, srv *httptest.Server) *alipay.Client {
	t.Helper()
	c, err := alipay.New(k.AlipayAppID, paysim.PrivatePEM(k.AlipayApp), true,
		alipay.WithProductionGateway(srv.URL+"/gateway.do"),
		alipay.WithTimeLocation(payment.Beijing),
		alipay.WithHTTPClient(&http.Client{Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LoadAliPayPublicKey(paysim.PublicPEM(&k.AlipayPlatform.PublicKey)); err != nil {
		t.Fatal(err)
	}
	return c
}

// aliSink receives Alipay notifications and decodes each with the SDK,
// which verifies the signature.
type aliSink struct {
	URL   string
	notes chan *alipay.Notification
}

func newAliSink(t *testing.T, c *alipay.Client) *aliSink {
	t.Helper()
	s := &aliSink{notes: make(chan *alipay.Notification, 32)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("notification form: %v", err)
			return
		}
		n, err := c.DecodeNotification(r.Context(), r.PostForm)
		if err != nil {
			t.Errorf("notification refused by the SDK: %v", err)
			return
		}
		s.notes <- n
		_, _ = w.Write([]byte("success"))
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/notify/sim-1/alipay"
	return s
}

func (s *aliSink) next(t *testing.T) *alipay.Notification {
	t.Helper()
	select {
	case n := <-s.notes:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no Alipay notification within 10s")
	}
	return nil
}

// jsonList decodes a notification's JSON-string list field.
func jsonList(t *testing.T, field, s string) []map[string]string {
	t.Helper()
	var out []map[string]string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("%s %q: %v", field, s, err)
	}
	return out
}
