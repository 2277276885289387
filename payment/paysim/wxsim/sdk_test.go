package wxsim

// Helpers that read the simulator through the real SDK, as the daemon
// does: wechatpay-go v0.2.21 in public-key mode. Nothing here decodes a
// provider answer by hand.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/native"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"github.com/kioskpay/kioskpay/payment/paysim"
)

func sdkCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// toSim sends every request to the simulator: wechatpay-go has no base URL
// option, and its signatures do not cover the host.
type toSim struct{ host string }

func (s toSim) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = "http", s.host, s.host
	return http.DefaultTransport.RoundTrip(r)
}

// wxSDK is the official WeChat Pay client of k's merchant, pointed at srv.
type wxSDK struct {
	k       *paysim.Keys
	native  native.NativeApiService
	refunds refunddomestic.RefundsApiService
}

func newWxSDK(t *testing.T, k *paysim.Keys, srv *httptest.Server) *wxSDK {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	c, err := core.NewClient(context.Background(),
		option.WithWechatPayPublicKeyAuthCipher(k.WxMchID, k.WxCertSerial, k.WxMerchant, k.WxPublicKeyID, &k.WxPlatform.PublicKey),
		option.WithHTTPClient(&http.Client{Transport: toSim{u.Host}, Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	return &wxSDK{k: k, native: native.NativeApiService{Client: c}, refunds: refunddomestic.RefundsApiService{Client: c}}
}

func (w *wxSDK) prepay(t *testing.T, no string, total int64, notifyURL string) {
	t.Helper()
	_, _, err := w.native.Prepay(sdkCtx(t), native.PrepayRequest{
		Appid: core.String(w.k.WxAppID), Mchid: core.String(w.k.WxMchID), Description: core.String("按摩 15 分钟"),
		OutTradeNo: core.String(no), NotifyUrl: core.String(notifyURL),
		Amount: &native.Amount{Total: core.Int64(total), Currency: core.String("CNY")},
	})
	if err != nil {
		t.Fatalf("prepay %s: %v", no, err)
	}
}

func (w *wxSDK) refund(t *testing.T, no, refundNo string, refund, total int64, notifyURL string) *refunddomestic.Refund {
	t.Helper()
	req := refunddomestic.CreateRequest{
		OutTradeNo: core.String(no), OutRefundNo: core.String(refundNo),
		Amount: &refunddomestic.AmountReq{Refund: core.Int64(refund), Total: core.Int64(total), Currency: core.String("CNY")},
	}
	if notifyURL != "" {
		req.NotifyUrl = core.String(notifyURL)
	}
	r, _, err := w.refunds.Create(sdkCtx(t), req)
	if err != nil {
		t.Fatalf("refund %s: %v", refundNo, err)
	}
	return r
}

func (w *wxSDK) queryRefund(t *testing.T, refundNo string) *refunddomestic.Refund {
	t.Helper()
	r, _, err := w.refunds.QueryByOutRefundNo(sdkCtx(t), refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String(refundNo)})
	if err != nil {
		t.Fatalf("query refund %s: %v", refundNo, err)
	}
	return r
}

// wxEvent is one notification as the SDK's notify handler verified,
// decrypted and decoded it.
type wxEvent struct {
	Type     string
	Resource map[string]any
}

// wxSink receives WeChat notifications and checks each with the SDK.
type wxSink struct {
	URL    string
	events chan wxEvent
}

func newWxSink(t *testing.T, k *paysim.Keys) *wxSink {
	t.Helper()
	h, err := notify.NewRSANotifyHandler(k.WxAPIv3Key, verifiers.NewSHA256WithRSAPubkeyVerifier(k.WxPublicKeyID, k.WxPlatform.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	s := &wxSink{events: make(chan wxEvent, 32)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var res map[string]any
		n, err := h.ParseNotifyRequest(r.Context(), r, &res)
		if err != nil {
			t.Errorf("notification refused by the SDK: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.events <- wxEvent{n.EventType, res}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/notify/sim-1/wxpay"
	return s
}

func (s *wxSink) next(t *testing.T) wxEvent {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no WeChat notification within 10s")
	}
	return wxEvent{}
}
