package wxsim

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

var (
	wxKeysOnce sync.Once
	wxKeys     [2]*paysim.Keys
	wxKeysErr  error
)

// wxTestKeys returns the package's shared key set and a second, unrelated
// one for forgeries.
func wxTestKeys(t testing.TB) (*paysim.Keys, *paysim.Keys) {
	t.Helper()
	wxKeysOnce.Do(func() {
		for i := range wxKeys {
			if wxKeys[i], wxKeysErr = paysim.GenerateKeys(); wxKeysErr != nil {
				return
			}
		}
	})
	if wxKeysErr != nil {
		t.Fatal(wxKeysErr)
	}
	return wxKeys[0], wxKeys[1]
}

// wxEnv is a simulator core with the WeChat Pay provider registered.
type wxEnv struct {
	*paysim.Server
	wx *Sim
}

func wxTestServer(t *testing.T, opts paysim.Options) (*wxEnv, *httptest.Server) {
	t.Helper()
	k, _ := wxTestKeys(t)
	if opts.Keys == nil {
		opts.Keys = k
	}
	s, err := paysim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &wxEnv{Server: s, wx: Register(s)}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	t.Cleanup(s.Close)
	return e, srv
}

// wxAuth describes how a raw test request is signed; the zero value plus
// wxGoodAuth is what the SDK would send.
type wxAuth struct {
	key       *rsa.PrivateKey
	mchid     string
	serial    string
	ts        time.Time
	signedURI string // "" = the request URI as sent
	header    string // non-empty: use verbatim
}

func wxGoodAuth(k *paysim.Keys) wxAuth {
	return wxAuth{key: k.WxMerchant, mchid: k.WxMchID, serial: k.WxCertSerial, ts: time.Now()}
}

type wxResp struct {
	status int
	header http.Header
	body   []byte
}

func (r wxResp) code() string {
	var e struct{ Code string }
	_ = json.Unmarshal(r.body, &e)
	return e.Code
}

func wxDo(t *testing.T, base, method, uri, body string, a wxAuth) wxResp {
	t.Helper()
	req, err := http.NewRequest(method, base+uri, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "*/*")
	if a.header != "" {
		req.Header.Set("Authorization", a.header)
	} else if a.key != nil {
		signed := uri
		if a.signedURI != "" {
			signed = a.signedURI
		}
		nonce := "N" + strconv.FormatInt(time.Now().UnixNano(), 36)
		ts := strconv.FormatInt(a.ts.Unix(), 10)
		sum := sha256.Sum256([]byte(method + "\n" + signed + "\n" + ts + "\n" + nonce + "\n" + body + "\n"))
		sig, err := rsa.SignPKCS1v15(rand.Reader, a.key, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", fmt.Sprintf(`WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"`,
			a.mchid, nonce, ts, a.serial, base64.StdEncoding.EncodeToString(sig)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return wxResp{status: resp.StatusCode, header: resp.Header, body: b}
}

// wxVerify checks a response or notification signature the way the SDK
// does (docs/providers.md B3).
func wxVerify(k *paysim.Keys, h http.Header, body []byte) error {
	if h.Get("Wechatpay-Serial") != k.WxPublicKeyID {
		return fmt.Errorf("serial %q", h.Get("Wechatpay-Serial"))
	}
	ts, err := strconv.ParseInt(h.Get("Wechatpay-Timestamp"), 10, 64)
	if err != nil {
		return err
	}
	if d := time.Since(time.Unix(ts, 0)); d >= 5*time.Minute || d <= -5*time.Minute {
		return fmt.Errorf("timestamp off by %v", d)
	}
	nonce := h.Get("Wechatpay-Nonce")
	if nonce == "" {
		return fmt.Errorf("no nonce")
	}
	sig, err := base64.StdEncoding.DecodeString(h.Get("Wechatpay-Signature"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(h.Get("Wechatpay-Timestamp") + "\n" + nonce + "\n" + string(body) + "\n"))
	return rsa.VerifyPKCS1v15(&k.WxPlatform.PublicKey, crypto.SHA256, sum[:], sig)
}

func wxPrepayBody(k *paysim.Keys, outTradeNo string, notifyURL string) string {
	return wxPrepayBodyAt(k, outTradeNo, notifyURL, time.Now().Add(10*time.Minute).In(payment.Beijing).Format(time.RFC3339))
}

func wxPrepayBodyAt(k *paysim.Keys, outTradeNo, notifyURL, timeExpire string) string {
	return `{"amount":{"currency":"CNY","total":1250},"appid":"` + k.WxAppID + `","description":"咖啡 x1","mchid":"` + k.WxMchID +
		`","notify_url":"` + notifyURL + `","out_trade_no":"` + outTradeNo + `","time_expire":"` + timeExpire + `"}` + "\n"
}

// TestWxRawFlow drives the simulator with hand-built requests, including an
// out_trade_no that needs percent-encoding, and checks every response
// signature, the 204 included.
func TestWxRawFlow(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{})
	const no = "T1|a*b-c_d"
	r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", wxPrepayBody(k, no, "https://kiosk.example.com/wx/notify"), wxGoodAuth(k))
	if r.status != 200 || !bytes.HasPrefix(r.body, []byte(`{"code_url":"weixin://wxpay/bizpayurl?pr=`)) {
		t.Fatalf("prepay: %d %s", r.status, r.body)
	}
	if err := wxVerify(k, r.header, r.body); err != nil {
		t.Fatalf("prepay response signature: %v", err)
	}
	if r.header.Get("Request-Id") == "" {
		t.Error("no Request-Id")
	}

	q := wxDo(t, srv.URL, "GET", "/v3/pay/transactions/out-trade-no/T1%7Ca%2Ab-c_d?mchid="+k.WxMchID, "", wxGoodAuth(k))
	if q.status != 200 {
		t.Fatalf("query: %d %s", q.status, q.body)
	}
	if err := wxVerify(k, q.header, q.body); err != nil {
		t.Fatalf("query response signature: %v", err)
	}
	var tx map[string]any
	if err := json.Unmarshal(q.body, &tx); err != nil || tx["trade_state"] != "NOTPAY" || tx["out_trade_no"] != no {
		t.Fatalf("query body %s", q.body)
	}

	// The signature covers the raw URI: signing the decoded path fails.
	bad := wxGoodAuth(k)
	bad.signedURI = "/v3/pay/transactions/out-trade-no/" + no + "?mchid=" + k.WxMchID
	if r := wxDo(t, srv.URL, "GET", "/v3/pay/transactions/out-trade-no/T1%7Ca%2Ab-c_d?mchid="+k.WxMchID, "", bad); r.status != 401 {
		t.Fatalf("query signed over the decoded URI: %d %s, want 401", r.status, r.body)
	}
	if r := wxDo(t, srv.URL, "GET", "/v3/pay/transactions/out-trade-no/T1%7Ca%2Ab-c_d", "", wxGoodAuth(k)); r.status != 400 || r.code() != "PARAM_ERROR" {
		t.Fatalf("query without mchid: %d %s", r.status, r.body)
	}

	c := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/out-trade-no/T1%7Ca%2Ab-c_d/close", `{"mchid":"`+k.WxMchID+`"}`+"\n", wxGoodAuth(k))
	if c.status != 204 || len(c.body) != 0 {
		t.Fatalf("close: %d %q", c.status, c.body)
	}
	if err := wxVerify(k, c.header, nil); err != nil {
		t.Fatalf("204 signature over ts\\nnonce\\n\\n: %v", err)
	}
	if o, _ := s.Order(payment.WxPay, no); o.State != "CLOSED" {
		t.Fatalf("order after close: %+v", o)
	}
	if st := s.Stats(); st["wxpay.native"] != 1 || st["wxpay.query"] != 3 || st["wxpay.close"] != 1 {
		t.Fatalf("stats %v", st)
	}
}

func TestWxAuthRejected(t *testing.T) {
	k, other := wxTestKeys(t)
	_, srv := wxTestServer(t, paysim.Options{})
	uri := "/v3/pay/transactions/out-trade-no/ANY_ORDER?mchid=" + k.WxMchID
	good := wxGoodAuth(k)
	cases := []struct {
		name string
		auth func() wxAuth
	}{
		{"other merchant key", func() wxAuth { a := good; a.key = other.WxMerchant; return a }},
		{"wrong serial", func() wxAuth { a := good; a.serial = other.WxCertSerial; return a }},
		{"wrong mchid", func() wxAuth { a := good; a.mchid = "1900000999"; return a }},
		{"stale timestamp", func() wxAuth { a := good; a.ts = time.Now().Add(-6 * time.Minute); return a }},
		{"future timestamp", func() wxAuth { a := good; a.ts = time.Now().Add(6 * time.Minute); return a }},
		{"signed another URI", func() wxAuth {
			a := good
			a.signedURI = "/v3/pay/transactions/out-trade-no/OTHER?mchid=" + k.WxMchID
			return a
		}},
		{"no authorization", func() wxAuth { return wxAuth{} }},
		{"wrong scheme", func() wxAuth {
			return wxAuth{header: `WECHATPAY2-SM2-WITH-SM3 mchid="` + k.WxMchID + `",nonce_str="a",timestamp="1",serial_no="x",signature="y"`}
		}},
		{"unquoted values", func() wxAuth {
			return wxAuth{header: `WECHATPAY2-SHA256-RSA2048 mchid=` + k.WxMchID + `,nonce_str=a,timestamp=1,serial_no=x,signature=y`}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := wxDo(t, srv.URL, "GET", uri, "", tc.auth())
			if r.status != 401 || r.code() != "SIGN_ERROR" {
				t.Fatalf("got %d %s, want 401 SIGN_ERROR", r.status, r.body)
			}
			if err := wxVerify(k, r.header, r.body); err != nil {
				t.Fatalf("error response not signed: %v", err)
			}
		})
	}
	// A body altered after signing.
	body := wxPrepayBody(k, "ALTERED_1", "https://kiosk.example.com/n")
	a := good
	a.signedURI = "/v3/pay/transactions/native"
	r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", strings.Replace(body, "1250", "1", 1), wxAuthSignedOver(t, a, body))
	if r.status != 401 || r.code() != "SIGN_ERROR" {
		t.Fatalf("altered body: %d %s", r.status, r.body)
	}
	// Order-insensitive parameters are fine (the real server does not care).
	ok := wxDo(t, srv.URL, "GET", uri, "", wxAuthReordered(t, good, "GET", uri))
	if ok.status != 404 || ok.code() != "ORDER_NOT_EXIST" {
		t.Fatalf("reordered authorization: %d %s, want 404 ORDER_NOT_EXIST", ok.status, ok.body)
	}
}

// wxAuthSignedOver returns an explicit Authorization header signing body
// (not the body that will be sent).
func wxAuthSignedOver(t *testing.T, a wxAuth, body string) wxAuth {
	t.Helper()
	nonce := "n1"
	ts := strconv.FormatInt(a.ts.Unix(), 10)
	sum := sha256.Sum256([]byte("POST\n" + a.signedURI + "\n" + ts + "\n" + nonce + "\n" + body + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, a.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return wxAuth{header: fmt.Sprintf(`WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"`,
		a.mchid, nonce, ts, a.serial, base64.StdEncoding.EncodeToString(sig))}
}

func wxAuthReordered(t *testing.T, a wxAuth, method, uri string) wxAuth {
	t.Helper()
	nonce := "n2"
	ts := strconv.FormatInt(a.ts.Unix(), 10)
	sum := sha256.Sum256([]byte(method + "\n" + uri + "\n" + ts + "\n" + nonce + "\n\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, a.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return wxAuth{header: fmt.Sprintf(`WECHATPAY2-SHA256-RSA2048 signature="%s",serial_no="%s",timestamp="%s",nonce_str="%s",mchid="%s"`,
		base64.StdEncoding.EncodeToString(sig), a.serial, ts, nonce, a.mchid)}
}

func TestWxPrepayValidation(t *testing.T) {
	k, _ := wxTestKeys(t)
	_, srv := wxTestServer(t, paysim.Options{})
	n := 0
	body := func(mut func(m map[string]any)) string {
		n++
		m := map[string]any{
			"appid": k.WxAppID, "mchid": k.WxMchID, "description": "test", "out_trade_no": fmt.Sprintf("VALID_%04d", n),
			"notify_url": "https://kiosk.example.com/notify/x/wxpay", "amount": map[string]any{"total": 100, "currency": "CNY"},
		}
		mut(m)
		b, _ := json.Marshal(m)
		return string(b) + "\n"
	}
	cases := []struct {
		name   string
		mut    func(m map[string]any)
		status int
		code   string
	}{
		{"valid", func(m map[string]any) {}, 200, ""},
		{"valid time_expire Z", func(m map[string]any) { m["time_expire"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339) }, 200, ""},
		{"valid loopback http notify", func(m map[string]any) { m["notify_url"] = "http://127.0.0.1:8080/notify/x/wxpay" }, 200, ""},
		{"valid 127 chars", func(m map[string]any) { m["description"] = strings.Repeat("字", 127) }, 200, ""},
		{"valid charset", func(m map[string]any) { m["out_trade_no"] = "Ab9_-|*xyz" }, 200, ""},
		{"description 128 chars", func(m map[string]any) { m["description"] = strings.Repeat("字", 128) }, 400, "PARAM_ERROR"},
		{"description missing", func(m map[string]any) { delete(m, "description") }, 400, "PARAM_ERROR"},
		{"out_trade_no 5 chars", func(m map[string]any) { m["out_trade_no"] = "ABCDE" }, 400, "PARAM_ERROR"},
		{"out_trade_no 33 chars", func(m map[string]any) { m["out_trade_no"] = strings.Repeat("A", 33) }, 400, "PARAM_ERROR"},
		{"out_trade_no bad char", func(m map[string]any) { m["out_trade_no"] = "ABC.DEF" }, 400, "PARAM_ERROR"},
		{"amount 0", func(m map[string]any) { m["amount"] = map[string]any{"total": 0} }, 400, "PARAM_ERROR"},
		{"amount fraction", func(m map[string]any) { m["amount"] = map[string]any{"total": 1.5} }, 400, "PARAM_ERROR"},
		{"amount string", func(m map[string]any) { m["amount"] = map[string]any{"total": "100"} }, 400, "PARAM_ERROR"},
		{"currency USD", func(m map[string]any) { m["amount"] = map[string]any{"total": 100, "currency": "USD"} }, 400, "PARAM_ERROR"},
		{"amount missing", func(m map[string]any) { delete(m, "amount") }, 400, "PARAM_ERROR"},
		{"time_expire not RFC3339", func(m map[string]any) { m["time_expire"] = "2030-01-02 03:04:05" }, 400, "PARAM_ERROR"},
		{"notify_url with query", func(m map[string]any) { m["notify_url"] = "https://kiosk.example.com/n?a=1" }, 400, "PARAM_ERROR"},
		{"notify_url http public", func(m map[string]any) { m["notify_url"] = "http://kiosk.example.com/n" }, 400, "PARAM_ERROR"},
		{"notify_url too long", func(m map[string]any) { m["notify_url"] = "https://kiosk.example.com/" + strings.Repeat("a", 240) }, 400, "PARAM_ERROR"},
		{"notify_url missing", func(m map[string]any) { delete(m, "notify_url") }, 400, "PARAM_ERROR"},
		{"attach 129", func(m map[string]any) { m["attach"] = strings.Repeat("a", 129) }, 400, "PARAM_ERROR"},
		{"unknown field", func(m map[string]any) { m["total_fee"] = 100 }, 400, "PARAM_ERROR"},
		{"scene_info without ip", func(m map[string]any) { m["scene_info"] = map[string]any{"device_id": "x"} }, 400, "PARAM_ERROR"},
		{"appid not bound", func(m map[string]any) { m["appid"] = "wx0000000000000000" }, 400, "APPID_MCHID_NOT_MATCH"},
		{"other mchid", func(m map[string]any) { m["mchid"] = "1900000999" }, 400, "MCH_NOT_EXISTS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", body(tc.mut), wxGoodAuth(k))
			if r.status != tc.status || (tc.code != "" && r.code() != tc.code) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	if r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", "{not json", wxGoodAuth(k)); r.status != 400 || r.code() != "PARAM_ERROR" {
		t.Fatalf("malformed JSON: %d %s", r.status, r.body)
	}
}

func TestWxStrictTimeExpire(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{})
	s.wx.SetStrictTimeExpire(true)
	body := func(no string, te time.Time) string {
		return wxPrepayBodyAt(k, no, "https://kiosk.example.com/n", te.Format(time.RFC3339))
	}
	at := time.Now().Add(time.Hour)
	if r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", body("STRICT_1", at.In(payment.Beijing)), wxGoodAuth(k)); r.status != 200 {
		t.Fatalf("+08:00: %d %s", r.status, r.body)
	}
	for _, zone := range []*time.Location{time.UTC, time.FixedZone("X", 3600)} {
		if r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", body("STRICT_2", at.In(zone)), wxGoodAuth(k)); r.status != 400 || r.code() != "PARAM_ERROR" {
			t.Fatalf("%v: %d %s, want 400 PARAM_ERROR", zone, r.status, r.body)
		}
	}
}

func TestWxTimeExpireCloses(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{})
	r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", wxPrepayBody(k, "EXPIRES_1", "https://kiosk.example.com/n"), wxGoodAuth(k))
	if r.status != 200 {
		t.Fatalf("prepay: %d %s", r.status, r.body)
	}
	s.wx.mu.Lock()
	o := s.wx.byNo["EXPIRES_1"]
	// A minute is the shortest life WeChat allows; a time in the past was moved out to it.
	if d := time.Until(o.expireAt); d < 9*time.Minute {
		t.Errorf("expireAt in %v, want the requested ~10m", d)
	}
	o.expireAt = time.Now().Add(-time.Second)
	s.wx.mu.Unlock()
	q := wxDo(t, srv.URL, "GET", "/v3/pay/transactions/out-trade-no/EXPIRES_1?mchid="+k.WxMchID, "", wxGoodAuth(k))
	if !bytes.Contains(q.body, []byte(`"trade_state":"CLOSED"`)) {
		t.Fatalf("query after time_expire: %s", q.body)
	}
	if err := s.Pay(payment.WxPay, "EXPIRES_1", 0); err == nil {
		t.Fatal("paid an expired order")
	}

	// time_expire earlier than a minute from now is clamped to a minute.
	past := wxPrepayBodyAt(k, "EXPIRES_2", "https://kiosk.example.com/n", time.Now().Add(-time.Hour).In(payment.Beijing).Format(time.RFC3339))
	if r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", past, wxGoodAuth(k)); r.status != 200 {
		t.Fatalf("prepay with past time_expire: %d %s", r.status, r.body)
	}
	s.wx.mu.Lock()
	d := time.Until(s.wx.byNo["EXPIRES_2"].expireAt)
	s.wx.mu.Unlock()
	if d < 50*time.Second || d > 61*time.Second {
		t.Fatalf("clamped expiry in %v, want ~1m", d)
	}
}

// TestWxNotificationDelivery: a refused notification is retried with a
// fresh signature; the resource decrypts with the APIv3 key.
func TestWxNotificationDelivery(t *testing.T) {
	k, _ := wxTestKeys(t)
	type attempt struct {
		header http.Header
		body   []byte
	}
	got := make(chan attempt, 8)
	var calls int
	var mu sync.Mutex
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- attempt{r.Header.Clone(), b}
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer receiver.Close()
	s, srv := wxTestServer(t, paysim.Options{NotifyRetry: []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}})
	r := wxDo(t, srv.URL, "POST", "/v3/pay/transactions/native", wxPrepayBody(k, "NOTIFY_1", receiver.URL+"/notify/sim-1/wxpay"), wxGoodAuth(k))
	if r.status != 200 {
		t.Fatalf("prepay: %d %s", r.status, r.body)
	}
	// Through the HTTP hook, with a coupon.
	resp, err := http.Post(srv.URL+"/_sim/pay", "application/json", strings.NewReader(`{"provider":"wxpay","out_trade_no":"NOTIFY_1","discount":250}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pay hook: %v %v", resp, err)
	}
	resp.Body.Close()
	var first, second attempt
	for i, a := range []*attempt{&first, &second} {
		select {
		case *a = <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("attempt %d not delivered", i+1)
		}
		if err := wxVerify(k, a.header, a.body); err != nil {
			t.Fatalf("attempt %d signature: %v", i+1, err)
		}
		if a.header.Get("Wechatpay-Signature-Type") != "WECHATPAY2-SHA256-RSA2048" {
			t.Fatalf("attempt %d signature type %q", i+1, a.header.Get("Wechatpay-Signature-Type"))
		}
	}
	if first.header.Get("Wechatpay-Nonce") == second.header.Get("Wechatpay-Nonce") {
		t.Fatal("retry reused the signature nonce")
	}
	if !bytes.Equal(first.body, second.body) {
		t.Fatal("retry changed the notification body (event id must stay for dedup)")
	}
	select {
	case a := <-got:
		t.Fatalf("delivered again after a 200: %s", a.body)
	case <-time.After(100 * time.Millisecond):
	}

	var raw map[string]any
	if err := json.Unmarshal(first.body, &raw); err != nil {
		t.Fatal(err)
	}
	res := raw["resource"].(map[string]any)
	if raw["event_type"] != "TRANSACTION.SUCCESS" || raw["resource_type"] != "encrypt-resource" || res["algorithm"] != "AEAD_AES_256_GCM" ||
		res["associated_data"] != "transaction" || res["original_type"] != "transaction" || len(res["nonce"].(string)) != 12 {
		t.Fatalf("envelope %s", first.body)
	}
	block, _ := aes.NewCipher([]byte(k.WxAPIv3Key))
	gcm, _ := cipher.NewGCM(block)
	ct, _ := base64.StdEncoding.DecodeString(res["ciphertext"].(string))
	plain, err := gcm.Open(nil, []byte(res["nonce"].(string)), ct, []byte("transaction"))
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	var tx map[string]any
	_ = json.Unmarshal(plain, &tx)
	amount := tx["amount"].(map[string]any)
	if tx["trade_state"] != "SUCCESS" || tx["out_trade_no"] != "NOTIFY_1" || amount["total"] != 1250.0 || amount["payer_total"] != 1000.0 {
		t.Fatalf("plaintext %s", plain)
	}
	if o, _ := s.Order(payment.WxPay, "NOTIFY_1"); o.Paid != 1000 || o.Total != 1250 || o.State != "SUCCESS" {
		t.Fatalf("orders view %+v", o)
	}
}

func TestWxUnknownRoute(t *testing.T) {
	k, _ := wxTestKeys(t)
	_, srv := wxTestServer(t, paysim.Options{})
	r := wxDo(t, srv.URL, "DELETE", "/v3/pay/transactions/native", "", wxGoodAuth(k))
	if r.status != 404 {
		t.Fatalf("DELETE native: %d %s", r.status, r.body)
	}
}
