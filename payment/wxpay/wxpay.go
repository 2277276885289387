// Package wxpay is the WeChat Pay APIv3 Native (scan-to-pay) adapter, built
// on the official SDK github.com/wechatpay-apiv3/wechatpay-go in public-key
// mode: the SDK signs every request and verifies every 2xx response
// (including the 204 of a close), so a response that does not verify never
// becomes a fact here, only an unknown outcome.
//
// The SDK hardcodes https://api.mch.weixin.qq.com. When Config.APIBase is
// set, an http.RoundTripper rewrites scheme and host of every request to it;
// the WeChat signature covers method, path, query and body but not the host,
// so the rewrite is invisible to both signatures (docs/providers.md B1).
package wxpay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/native"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"github.com/kioskpay/kioskpay/payment"
)

// DefaultTimeout bounds each HTTP call when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is one WeChat Pay merchant account.
type Config struct {
	AppID, MchID, CertSerial string
	PrivateKeyPEM            string        // merchant API key, PKCS#8 PEM
	APIv3Key                 string        // 32 bytes
	PublicKeyID              string        // PUB_KEY_ID_…
	PublicKeyPEM             string        // WeChat Pay public key, PKIX PEM
	APIBase                  string        // "" = production https://api.mch.weixin.qq.com; else e.g. paysim URL
	Timeout                  time.Duration // per HTTP call, default 10s
	NotifyURL                string        // default notify_url when an Order has none (WeChat requires one)
	Logger                   *slog.Logger
}

// Client is a payment.Provider for one WeChat Pay merchant.
type Client struct {
	cfg     Config
	log     *slog.Logger
	api     *core.Client
	native  native.NativeApiService
	refunds refunddomestic.RefundsApiService
	notify  *notify.Handler
}

var _ payment.Provider = (*Client)(nil)

// New checks cfg and builds the SDK client. It does no network I/O.
func New(cfg Config) (*Client, error) {
	for _, f := range []struct{ name, v string }{
		{"appid", cfg.AppID}, {"mchid", cfg.MchID}, {"cert_serial", cfg.CertSerial},
		{"private_key", cfg.PrivateKeyPEM}, {"apiv3_key", cfg.APIv3Key},
		{"public_key_id", cfg.PublicKeyID}, {"public_key", cfg.PublicKeyPEM},
	} {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("wxpay config: %s is required", f.name)
		}
	}
	if len(cfg.APIv3Key) != 32 {
		return nil, fmt.Errorf("wxpay config: apiv3_key must be 32 bytes, got %d", len(cfg.APIv3Key))
	}
	if !strings.HasPrefix(cfg.PublicKeyID, "PUB_KEY_ID_") {
		return nil, fmt.Errorf("wxpay config: public_key_id %q must start with PUB_KEY_ID_", cfg.PublicKeyID)
	}
	mchKey, err := utils.LoadPrivateKey(cfg.PrivateKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("wxpay config: private_key: %w", err)
	}
	wxPub, err := utils.LoadPublicKey(cfg.PublicKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("wxpay config: public_key: not a PKIX RSA public key")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NotifyURL != "" {
		if err := checkNotifyURL(cfg.NotifyURL); err != nil {
			return nil, fmt.Errorf("wxpay config: notify_url: %w", err)
		}
	}
	var transport http.RoundTripper = http.DefaultTransport
	if cfg.APIBase != "" {
		u, err := url.Parse(cfg.APIBase)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("wxpay config: api_base %q: want http(s)://host[:port]", cfg.APIBase)
		}
		// A path prefix cannot work: the request signature covers the path.
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return nil, fmt.Errorf("wxpay config: api_base %q: must not have a path or query", cfg.APIBase)
		}
		transport = rewriteHost{scheme: u.Scheme, host: u.Host, base: transport}
	}
	hc := &http.Client{Transport: transport, Timeout: cfg.Timeout}
	api, err := core.NewClient(context.Background(),
		option.WithWechatPayPublicKeyAuthCipher(cfg.MchID, cfg.CertSerial, mchKey, cfg.PublicKeyID, wxPub),
		option.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("wxpay config: %w", err)
	}
	nh, err := notify.NewRSANotifyHandler(cfg.APIv3Key, verifiers.NewSHA256WithRSAPubkeyVerifier(cfg.PublicKeyID, *wxPub))
	if err != nil {
		return nil, fmt.Errorf("wxpay config: apiv3_key: %w", err)
	}
	return &Client{
		cfg:     cfg,
		log:     cfg.Logger.With("provider", string(payment.WxPay)),
		api:     api,
		native:  native.NativeApiService{Client: api},
		refunds: refunddomestic.RefundsApiService{Client: api},
		notify:  nh,
	}, nil
}

// rewriteHost sends every request to another scheme and host.
type rewriteHost struct {
	scheme, host string
	base         http.RoundTripper
}

func (t rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	r2 := req.Clone(req.Context())
	r2.URL.Scheme, r2.URL.Host, r2.Host = t.scheme, t.host, t.host
	return t.base.RoundTrip(r2)
}

// Name reports payment.WxPay.
func (c *Client) Name() payment.ProviderName { return payment.WxPay }

// checkNotifyURL applies WeChat's notify_url rules early, so a bad config
// is a config error rather than a PARAM_ERROR on every order.
func checkNotifyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q: want an absolute https URL", s)
	}
	if strings.ContainsAny(s, "?#") {
		return fmt.Errorf("%q: WeChat refuses notify URLs with a query string", s)
	}
	if len(s) > 255 {
		return fmt.Errorf("%q: longer than 255 bytes", s)
	}
	return nil
}

// apiError turns an SDK error into kioskpay's two outcomes: a 4xx answer
// with a WeChat error code is a definite *payment.RejectedError; anything
// else (network, timeout, 5xx, 429, a 2xx whose signature or timestamp does
// not verify, an unparsable body) leaves the outcome unknown.
func (c *Client) apiError(op, id string, err error) error {
	var ae *core.APIError
	if errors.As(err, &ae) {
		switch {
		case ae.StatusCode == http.StatusTooManyRequests || ae.Code == "FREQUENCY_LIMITED":
			return fmt.Errorf("wxpay %s %s: HTTP %d %s: %w", op, id, ae.StatusCode, ae.Code, payment.ErrRateLimited)
		case ae.StatusCode >= 400 && ae.StatusCode < 500 && ae.Code != "":
			return &payment.RejectedError{Provider: payment.WxPay, Op: op, Code: ae.Code, Message: ae.Message}
		default:
			return fmt.Errorf("wxpay %s %s: HTTP %d %s %s", op, id, ae.StatusCode, ae.Code, ae.Message)
		}
	}
	return fmt.Errorf("wxpay %s %s: %w", op, id, err)
}

// errAccepted is WeChat's HTTP 202: the request was accepted but not yet
// processed and must be repeated with the same parameters (APIv3 HTTP
// status table). The SDK reports every 2xx as success, so the adapter
// checks the status itself; the outcome is unknown.
var errAccepted = errors.New("HTTP 202 accepted, not processed yet: repeat")

// wantStatus checks that a verified 2xx answer is the status the API
// answers on success; any other 2xx leaves the outcome unknown.
func wantStatus(res *core.APIResult, want int) error {
	if res == nil || res.Response == nil {
		return errors.New("no response")
	}
	switch got := res.Response.StatusCode; {
	case got == want:
		return nil
	case got == http.StatusAccepted:
		return errAccepted
	default:
		return fmt.Errorf("unexpected HTTP %d (want %d)", got, want)
	}
}

func apiCode(err error) (status int, code string) {
	var ae *core.APIError
	if errors.As(err, &ae) {
		return ae.StatusCode, ae.Code
	}
	return 0, ""
}
