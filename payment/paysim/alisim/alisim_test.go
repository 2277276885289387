package alisim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

var aliKeys struct {
	once sync.Once
	k    *paysim.Keys
	err  error
}

// aliTestKeys shares one key set among this file's tests.
func aliTestKeys(t testing.TB) *paysim.Keys {
	aliKeys.once.Do(func() { aliKeys.k, aliKeys.err = paysim.GenerateKeys() })
	if aliKeys.err != nil {
		t.Fatal(aliKeys.err)
	}
	return aliKeys.k
}

type aliEnv struct {
	s   *paysim.Server
	ali *Sim
	srv *httptest.Server
	k   *paysim.Keys
	// clock offsets the simulator's business clock (nanoseconds).
	clock atomic.Int64
}

// realism returns Options.Realism: the defaults changed by f.
func realism(f func(*paysim.Realism)) *paysim.Realism {
	r := paysim.DefaultRealism()
	f(&r)
	return &r
}

// filledAmounts makes query answers carry the buyer, invoice and receipt
// amounts instead of the default "0.00", for tests that read them.
func filledAmounts(o *paysim.Options) {
	o.Realism = realism(func(r *paysim.Realism) { r.AlipayZeroQueryAmounts = false })
}

func newAliEnv(t testing.TB, opts ...func(*paysim.Options)) *aliEnv {
	t.Helper()
	k := aliTestKeys(t)
	e := &aliEnv{k: k}
	o := paysim.Options{Keys: k, NotifyRetry: []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond},
		Now: func() time.Time { return time.Now().Add(time.Duration(e.clock.Load())) }}
	for _, f := range opts {
		f(&o)
	}
	s, err := paysim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.s, e.ali = s, Register(s)
	e.srv = httptest.NewServer(s)
	t.Cleanup(func() {
		e.srv.Close()
		s.Close()
	})
	return e
}

func (e *aliEnv) advance(d time.Duration) { e.clock.Add(int64(d)) }

func aliSign(key *rsa.PrivateKey, content string) string {
	h := sha256.Sum256([]byte(content))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// form builds a request the way the SDK does: public parameters, biz_content
// as JSON, signed over every parameter but sign. pre edits the parameters
// before signing, post after (tampering).
func (e *aliEnv) form(method string, biz any, pre, post func(url.Values)) url.Values {
	v := url.Values{}
	v.Set("app_id", e.k.AlipayAppID)
	v.Set("method", method)
	v.Set("format", "JSON")
	v.Set("charset", "utf-8")
	v.Set("sign_type", "RSA2")
	v.Set("timestamp", time.Now().In(payment.Beijing).Format(aliTimeLayout))
	v.Set("version", "1.0")
	if biz != nil {
		b, _ := json.Marshal(biz)
		v.Set("biz_content", string(b))
	}
	if pre != nil {
		pre(v)
	}
	v.Set("sign", aliSign(e.k.AlipayApp, aliSignContent(v, "sign")))
	if post != nil {
		post(v)
	}
	return v
}

type aliResp struct {
	status int
	raw    []byte
	node   string
	fields map[string]string
	lists  map[string][]map[string]string // fund_bill_list, voucher_detail_list
	signed bool                           // a sign was present and verified
	sign   string
}

func (e *aliEnv) post(t testing.TB, form url.Values) aliResp {
	t.Helper()
	resp, err := http.Post(e.srv.URL+"/gateway.do", "application/x-www-form-urlencoded;charset=utf-8", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := aliResp{status: resp.StatusCode, raw: body}
	if resp.StatusCode != http.StatusOK {
		return r
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, body)
	}
	if _, ok := top["alipay_cert_sn"]; ok {
		t.Fatalf("alipay_cert_sn in a public-key mode response: %s", body)
	}
	for k, raw := range top {
		if k == "sign" {
			_ = json.Unmarshal(raw, &r.sign)
			continue
		}
		r.node = k
		// Every value must be a JSON string or a list of objects of
		// strings: the SDK's amount fields are Go strings, and a number
		// would break its unmarshalling.
		var members map[string]json.RawMessage
		if err := json.Unmarshal(raw, &members); err != nil {
			t.Fatalf("node %s is not an object: %v: %s", k, err, raw)
		}
		r.fields, r.lists = map[string]string{}, map[string][]map[string]string{}
		for name, v := range members {
			var str string
			var list []map[string]string
			switch {
			case json.Unmarshal(v, &str) == nil:
				r.fields[name] = str
			case json.Unmarshal(v, &list) == nil:
				r.lists[name] = list
			default:
				t.Fatalf("node %s member %s is neither a string nor a list of objects of strings: %s", k, name, raw)
			}
		}
		if r.sign != "" || top["sign"] != nil {
			var sign string
			_ = json.Unmarshal(top["sign"], &sign)
			sig, err := base64.StdEncoding.DecodeString(sign)
			h := sha256.Sum256(raw) // over the exact raw bytes of the node
			r.signed = err == nil && rsa.VerifyPKCS1v15(&e.k.AlipayPlatform.PublicKey, crypto.SHA256, h[:], sig) == nil
			if !r.signed {
				t.Logf("response sign does not verify: %s", body)
			}
		}
	}
	return r
}

func (e *aliEnv) call(t testing.TB, method string, biz any) aliResp {
	t.Helper()
	return e.post(t, e.form(method, biz, nil, nil))
}

func (r aliResp) sub() string {
	if s := r.fields["sub_code"]; s != "" {
		return s
	}
	return r.fields["code"]
}

func wantSub(t *testing.T, what string, r aliResp, code, sub string, signed bool) {
	t.Helper()
	if r.fields["code"] != code || r.fields["sub_code"] != sub || r.signed != signed {
		t.Fatalf("%s: code %q sub_code %q signed %v, want %s %s signed %v (%s)", what, r.fields["code"], r.fields["sub_code"], r.signed, code, sub, signed, r.raw)
	}
}

func precreateBiz(no, amount string) map[string]any {
	// Exactly what the SDK's TradePreCreate marshals to, trailing empty
	// strings included.
	return map[string]any{"subject": "Car wash", "out_trade_no": no, "total_amount": amount,
		"product_code": "FACE_TO_FACE_PAYMENT", "discountable_amount": "", "operator_id": "", "terminal_id": ""}
}

func TestAlipayGatewayRejectsBadRequests(t *testing.T) {
	e := newAliEnv(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	biz := map[string]any{"out_trade_no": "T1"}
	const q = "alipay.trade.query"
	set := func(k, v string) func(url.Values) { return func(f url.Values) { f.Set(k, v) } }
	for _, tc := range []struct {
		name      string
		form      url.Values
		node      string
		code, sub string
		signed    bool
	}{
		{"tampered after signing", e.form(q, biz, nil, set("biz_content", `{"out_trade_no":"T2"}`)), "", "40002", "isv.invalid-signature", true},
		{"signed with another key", e.form(q, biz, nil, func(f url.Values) { f.Set("sign", aliSign(other, aliSignContent(f, "sign"))) }), "", "40002", "isv.invalid-signature", true},
		{"sign_type left out of the signature", e.form(q, biz, nil, func(f url.Values) { f.Set("sign", aliSign(e.k.AlipayApp, aliSignContent(f, "sign", "sign_type"))) }), "", "40002", "isv.invalid-signature", true},
		{"url-encoded values signed", e.form(q, map[string]any{"out_trade_no": "T 1&x"}, nil, func(f url.Values) {
			enc := url.Values{}
			for k, v := range f {
				if k != "sign" {
					enc.Set(k, url.QueryEscape(v[0]))
				}
			}
			f.Set("sign", aliSign(e.k.AlipayApp, aliSignContent(enc)))
		}), "", "40002", "isv.invalid-signature", true},
		{"garbage sign", e.form(q, biz, nil, set("sign", "@@@")), "", "40002", "isv.invalid-signature", true},
		{"missing sign", e.form(q, biz, nil, func(f url.Values) { f.Del("sign") }), "", "40001", "isv.missing-signature", true},
		{"unknown app id", e.form(q, biz, set("app_id", "2021000000009999"), nil), "", "40002", "isv.invalid-app-id", false},
		{"missing app id", e.form(q, biz, func(f url.Values) { f.Del("app_id") }, nil), "", "40001", "isv.missing-app-id", false},
		{"stale timestamp", e.form(q, biz, set("timestamp", time.Now().Add(-16*time.Minute).In(payment.Beijing).Format(aliTimeLayout)), nil), "", "40002", "isv.invalid-timestamp", true},
		{"future timestamp", e.form(q, biz, set("timestamp", time.Now().Add(16*time.Minute).In(payment.Beijing).Format(aliTimeLayout)), nil), "", "40002", "isv.invalid-timestamp", true},
		{"UTC timestamp (no WithTimeLocation)", e.form(q, biz, set("timestamp", time.Now().UTC().Format(aliTimeLayout)), nil), "", "40002", "isv.invalid-timestamp", true},
		{"RFC3339 timestamp", e.form(q, biz, set("timestamp", time.Now().Format(time.RFC3339)), nil), "", "40002", "isv.invalid-timestamp", true},
		{"missing timestamp", e.form(q, biz, func(f url.Values) { f.Del("timestamp") }, nil), "", "40001", "isv.missing-timestamp", true},
		{"sign_type RSA", e.form(q, biz, set("sign_type", "RSA"), nil), "", "40002", "isv.invalid-signature-type", true},
		{"missing sign_type", e.form(q, biz, func(f url.Values) { f.Del("sign_type") }, nil), "", "40001", "isv.missing-signature-type", true},
		{"charset gbk", e.form(q, biz, set("charset", "gbk"), nil), "", "40002", "isv.invalid-charset", true},
		{"format XML", e.form(q, biz, set("format", "XML"), nil), "", "40002", "isv.invalid-format", true},
		{"version 2.0", e.form(q, biz, set("version", "2.0"), nil), "", "40002", "isv.invalid-parameter", true},
		{"missing version", e.form(q, biz, func(f url.Values) { f.Del("version") }, nil), "", "40001", "isv.missing-version", true},
		{"duplicate parameter", e.form(q, biz, func(f url.Values) { f.Add("app_auth_token", "a"); f.Add("app_auth_token", "b") }, nil), "", "40002", "isv.invalid-parameter", true},
		{"biz_content not JSON", e.form(q, nil, set("biz_content", "{out_trade_no:T1"), nil), "", "40002", "isv.invalid-parameter", true},
		{"unknown method", e.form("alipay.trade.pay", biz, nil, nil), "error_response", "40002", "isv.invalid-method", false},
		{"missing method", e.form("", biz, nil, nil), "error_response", "40001", "isv.missing-method", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(t, tc.form)
			node := tc.node
			if node == "" {
				node = "alipay_trade_query_response"
			}
			if r.node != node {
				t.Fatalf("node %q, want %q: %s", r.node, node, r.raw)
			}
			wantSub(t, tc.name, r, tc.code, tc.sub, tc.signed)
		})
	}
	// Nothing above may have reached the business logic.
	if len(e.ali.byNo) != 0 {
		t.Fatal("a refused request changed state")
	}
	// And the same request, correctly signed, is answered.
	if r := e.call(t, q, biz); !r.signed || r.sub() != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("valid query: %s", r.raw)
	}
}

func TestAlipayPrecreateFieldRules(t *testing.T) {
	e := newAliEnv(t)
	n := 0
	with := func(kv ...any) map[string]any {
		n++
		b := precreateBiz("F_"+strings.Repeat("x", 3)+string(rune('a'+n%26))+time.Now().Format("150405.000000")[7:], "1.00")
		for i := 0; i+1 < len(kv); i += 2 {
			b[kv[i].(string)] = kv[i+1]
		}
		return b
	}
	future := time.Now().Add(10 * time.Minute).In(payment.Beijing).Format(aliTimeLayout)
	for _, tc := range []struct {
		name string
		biz  map[string]any
		pre  func(url.Values)
		want string // sub_code, or 10000
	}{
		{"SDK shape with empty strings", with(), nil, "10000"},
		{"amount 12.5", with("total_amount", "12.5"), nil, "10000"},
		{"amount as JSON number", with("total_amount", 0.5), nil, "10000"},
		{"amount max", with("total_amount", "100000000.00"), nil, "10000"},
		{"amount over max", with("total_amount", "100000000.01"), nil, "ACQ.TOTAL_FEE_EXCEED"},
		{"amount 3 decimals", with("total_amount", "0.001"), nil, "ACQ.INVALID_PARAMETER"},
		{"amount zero", with("total_amount", "0.00"), nil, "ACQ.INVALID_PARAMETER"},
		{"amount negative", with("total_amount", "-1.00"), nil, "ACQ.INVALID_PARAMETER"},
		{"amount exponent", with("total_amount", "1e2"), nil, "ACQ.INVALID_PARAMETER"},
		{"amount leading zero", with("total_amount", "01.00"), nil, "ACQ.INVALID_PARAMETER"},
		{"amount missing", with("total_amount", ""), nil, "ACQ.INVALID_PARAMETER"},
		{"amount object", with("total_amount", map[string]any{"v": 1}), nil, "ACQ.INVALID_PARAMETER"},
		{"out_trade_no with dash", with("out_trade_no", "T-1"), nil, "ACQ.INVALID_PARAMETER"},
		{"out_trade_no 64", with("out_trade_no", strings.Repeat("a", 64)), nil, "10000"},
		{"out_trade_no 65", with("out_trade_no", strings.Repeat("a", 65)), nil, "ACQ.INVALID_PARAMETER"},
		{"out_trade_no missing", with("out_trade_no", nil), nil, "ACQ.INVALID_PARAMETER"},
		{"subject 256 runes", with("subject", strings.Repeat("洗", 256)), nil, "10000"},
		{"subject 257 runes", with("subject", strings.Repeat("洗", 257)), nil, "ACQ.INVALID_PARAMETER"},
		{"subject with &", with("subject", "Wash & Dry"), nil, "ACQ.INVALID_PARAMETER"},
		{"subject missing", with("subject", ""), nil, "ACQ.INVALID_PARAMETER"},
		{"body 129", with("body", strings.Repeat("b", 129)), nil, "ACQ.INVALID_PARAMETER"},
		{"time_expire ok", with("time_expire", future), nil, "10000"},
		{"time_expire RFC3339", with("time_expire", time.Now().Add(time.Hour).Format(time.RFC3339)), nil, "ACQ.INVALID_PARAMETER"},
		{"time_expire past", with("time_expire", time.Now().Add(-time.Minute).In(payment.Beijing).Format(aliTimeLayout)), nil, "ACQ.INVALID_PARAMETER"},
		{"timeout_express 90m", with("timeout_express", "90m"), nil, "10000"},
		{"timeout_express 1c", with("timeout_express", "1c"), nil, "10000"},
		{"timeout_express 1.5h", with("timeout_express", "1.5h"), nil, "ACQ.INVALID_PARAMETER"},
		{"timeout_express 16d", with("timeout_express", "16d"), nil, "ACQ.INVALID_PARAMETER"},
		{"product code other", with("product_code", "QUICK_MSECURITY_PAY"), nil, "ACQ.ACCESS_FORBIDDEN"},
		{"discountable over total", with("discountable_amount", "2.00"), nil, "ACQ.INVALID_PARAMETER"},
		{"notify https", with(), func(f url.Values) { f.Set("notify_url", "https://relay.example.com/notify/sim-1/alipay") }, "10000"},
		{"notify loopback http", with(), func(f url.Values) { f.Set("notify_url", "http://127.0.0.1:8080/notify") }, "10000"},
		{"notify public http", with(), func(f url.Values) { f.Set("notify_url", "http://relay.example.com/notify") }, "ACQ.INVALID_PARAMETER"},
		{"notify with query", with(), func(f url.Values) { f.Set("notify_url", "https://relay.example.com/n?dev=1") }, "ACQ.INVALID_PARAMETER"},
		{"notify relative", with(), func(f url.Values) { f.Set("notify_url", "/notify") }, "ACQ.INVALID_PARAMETER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(t, e.form("alipay.trade.precreate", tc.biz, tc.pre, nil))
			if !r.signed {
				t.Fatalf("unsigned answer: %s", r.raw)
			}
			got := r.sub()
			if got != tc.want {
				t.Fatalf("got %s, want %s: %s", got, tc.want, r.raw)
			}
			if got == "10000" && !strings.HasPrefix(r.fields["qr_code"], "https://qr.alipay.com/bax0") {
				t.Fatalf("qr_code %q", r.fields["qr_code"])
			}
		})
	}
}

func TestAlipayStateMachine(t *testing.T) {
	e := newAliEnv(t, filledAmounts)
	const no = "SM_1"
	biz := precreateBiz(no, "5.00")
	ref := map[string]any{"out_trade_no": no}
	pre := e.call(t, "alipay.trade.precreate", biz)
	if pre.sub() != "10000" {
		t.Fatalf("precreate: %s", pre.raw)
	}
	qr := pre.fields["qr_code"]
	// PRECREATED: no trade yet.
	if r := e.call(t, "alipay.trade.query", ref); r.sub() != "ACQ.TRADE_NOT_EXIST" || !r.signed || r.fields["trade_status"] != "" {
		t.Fatalf("query before scan: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.close", ref); r.sub() != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("close before scan: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.refund", map[string]any{"out_trade_no": no, "refund_amount": "5.00", "out_request_no": "R"}); r.sub() != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("refund before scan: %s", r.raw)
	}
	// Re-precreate: same → same QR; different → inconsistent.
	if r := e.call(t, "alipay.trade.precreate", biz); r.fields["qr_code"] != qr {
		t.Fatalf("re-precreate same params: %s, want qr %s", r.raw, qr)
	}
	if r := e.call(t, "alipay.trade.precreate", precreateBiz(no, "5.01")); r.sub() != "ACQ.CONTEXT_INCONSISTENT" {
		t.Fatalf("re-precreate different amount: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.precreate", precreateBiz("SM_2", "5.00")); r.fields["qr_code"] == qr || r.sub() != "10000" {
		t.Fatalf("another order got the same QR: %s", r.raw)
	}
	// Scan → WAIT_BUYER_PAY.
	if err := e.s.Scan(no); err != nil {
		t.Fatal(err)
	}
	r := e.call(t, "alipay.trade.query", ref)
	if r.fields["trade_status"] != "WAIT_BUYER_PAY" || r.fields["trade_no"] == "" || r.fields["send_pay_date"] != "" || r.fields["total_amount"] != "5.00" {
		t.Fatalf("query after scan: %s", r.raw)
	}
	tradeNo := r.fields["trade_no"]
	if r := e.call(t, "alipay.trade.query", map[string]any{"trade_no": tradeNo}); r.fields["out_trade_no"] != no {
		t.Fatalf("query by trade_no: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.precreate", biz); r.fields["qr_code"] != qr {
		t.Fatalf("re-precreate while waiting: %s", r.raw)
	}
	// Pay → TRADE_SUCCESS.
	if err := e.s.Pay(payment.Alipay, no, 0); err != nil {
		t.Fatal(err)
	}
	r = e.call(t, "alipay.trade.query", ref)
	if r.fields["trade_status"] != "TRADE_SUCCESS" || r.fields["receipt_amount"] != "5.00" || r.fields["buyer_pay_amount"] != "5.00" || r.fields["send_pay_date"] == "" || r.fields["trade_no"] != tradeNo {
		t.Fatalf("query after pay: %s", r.raw)
	}
	if err := e.s.Pay(payment.Alipay, no, 0); err == nil {
		t.Fatal("paying twice succeeded")
	}
	if r := e.call(t, "alipay.trade.precreate", biz); r.sub() != "ACQ.TRADE_HAS_SUCCESS" {
		t.Fatalf("re-precreate paid: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.close", ref); r.sub() != "ACQ.TRADE_STATUS_ERROR" {
		t.Fatalf("close paid: %s", r.raw)
	}
	// Cancel of a paid trade refunds it; the SDK always sends "trade_no":"".
	r = e.call(t, "alipay.trade.cancel", map[string]any{"out_trade_no": no, "trade_no": ""})
	if r.sub() != "10000" || r.fields["action"] != "refund" || r.fields["retry_flag"] != "N" {
		t.Fatalf("cancel paid: %s", r.raw)
	}
	r = e.call(t, "alipay.trade.query", ref)
	if r.fields["trade_status"] != "TRADE_CLOSED" || r.fields["send_pay_date"] == "" {
		t.Fatalf("query after cancel-refund: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.cancel", map[string]any{"out_trade_no": no, "trade_no": ""}); r.fields["action"] != "refund" {
		t.Fatalf("second cancel: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.precreate", biz); r.sub() != "ACQ.TRADE_HAS_CLOSE" {
		t.Fatalf("re-precreate closed: %s", r.raw)
	}
	info, _ := e.s.Order(payment.Alipay, no)
	if info.State != "TRADE_CLOSED" || info.Refunded != 500 || len(info.Refunds) != 1 {
		t.Fatalf("orders: %+v", info)
	}
}

func TestAlipayCancelBurnsNumbers(t *testing.T) {
	e := newAliEnv(t)
	// Precreated, never scanned: cancel succeeds and burns it.
	e.call(t, "alipay.trade.precreate", precreateBiz("CB_1", "1.00"))
	r := e.call(t, "alipay.trade.cancel", map[string]any{"out_trade_no": "CB_1", "trade_no": ""})
	// No trade exists, so no action and no trade_no (alipay.trade.cancel
	// response parameters: action only "接口调用成功且交易存在时").
	if _, hasAction := r.fields["action"]; r.sub() != "10000" || hasAction || r.fields["trade_no"] != "" || r.fields["retry_flag"] != "N" || r.fields["out_trade_no"] != "CB_1" {
		t.Fatalf("cancel unscanned: %s, want 10000 with out_trade_no and retry_flag only", r.raw)
	}
	if err := e.s.Scan("CB_1"); err == nil {
		t.Fatal("scan after cancel succeeded")
	}
	if r := e.call(t, "alipay.trade.precreate", precreateBiz("CB_1", "1.00")); r.sub() != "ACQ.TRADE_HAS_CLOSE" {
		t.Fatalf("re-precreate cancelled: %s", r.raw)
	}
	// Never precreated at all: still 10000, and the number is burned.
	if r := e.call(t, "alipay.trade.cancel", map[string]any{"out_trade_no": "CB_2", "trade_no": ""}); r.sub() != "10000" || r.fields["action"] != "" {
		t.Fatalf("cancel unknown: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.precreate", precreateBiz("CB_2", "1.00")); r.sub() != "ACQ.TRADE_HAS_CLOSE" {
		t.Fatalf("precreate after cancel of unknown: %s", r.raw)
	}
	// Scanned, unpaid: closed.
	e.call(t, "alipay.trade.precreate", precreateBiz("CB_3", "1.00"))
	_ = e.s.Scan("CB_3")
	if r := e.call(t, "alipay.trade.cancel", map[string]any{"out_trade_no": "CB_3", "trade_no": ""}); r.fields["action"] != "close" || r.fields["trade_no"] == "" {
		t.Fatalf("cancel scanned: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "CB_3"}); r.fields["trade_status"] != "TRADE_CLOSED" || r.fields["send_pay_date"] != "" {
		t.Fatalf("query after cancel: %s", r.raw)
	}
	// Cancel is only possible within 24h.
	e.call(t, "alipay.trade.precreate", precreateBiz("CB_4", "1.00"))
	_ = e.s.Pay(payment.Alipay, "CB_4", 0)
	e.advance(25 * time.Hour)
	if r := e.call(t, "alipay.trade.cancel", map[string]any{"out_trade_no": "CB_4"}); r.sub() != "ACQ.TRADE_CANCEL_TIME_OUT" {
		t.Fatalf("cancel after 24h: %s", r.raw)
	}
}

func TestAlipayExpiry(t *testing.T) {
	e := newAliEnv(t)
	rc := newAliNotifySink(t, e.k, 1)
	expire := time.Now().Add(10 * time.Minute).In(payment.Beijing).Format(aliTimeLayout)
	notify := func(f url.Values) { f.Set("notify_url", rc.srv.URL) }

	// Unscanned past time_expire: the QR is dead, the number closed.
	b := precreateBiz("EX_1", "1.00")
	b["time_expire"] = expire
	e.post(t, e.form("alipay.trade.precreate", b, notify, nil))
	// Scanned, past time_expire: TRADE_CLOSED with a notification.
	b2 := precreateBiz("EX_2", "1.00")
	b2["time_expire"] = expire
	e.post(t, e.form("alipay.trade.precreate", b2, notify, nil))
	_ = e.s.Scan("EX_2")
	// No time_expire: the QR itself lives 2h unscanned.
	e.call(t, "alipay.trade.precreate", precreateBiz("EX_3", "1.00"))
	// timeout_express counts from the scan.
	b4 := precreateBiz("EX_4", "1.00")
	b4["timeout_express"] = "30m"
	e.call(t, "alipay.trade.precreate", b4)

	e.advance(11 * time.Minute)
	if err := e.s.Scan("EX_1"); err == nil {
		t.Fatal("scan after time_expire succeeded")
	}
	if r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "EX_1"}); r.sub() != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("expired unscanned query: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.precreate", b); r.sub() != "ACQ.TRADE_HAS_CLOSE" {
		t.Fatalf("re-precreate expired: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "EX_2"}); r.fields["trade_status"] != "TRADE_CLOSED" {
		t.Fatalf("expired scanned query: %s", r.raw)
	}
	if err := e.s.Pay(payment.Alipay, "EX_2", 0); err == nil {
		t.Fatal("paid a trade past time_expire")
	}
	got := rc.wait(t, 1)
	if got[0].Get("trade_status") != "TRADE_CLOSED" || got[0].Get("out_trade_no") != "EX_2" || got[0].Get("gmt_close") == "" {
		t.Fatalf("expiry notification: %v", got[0])
	}
	_ = e.s.Scan("EX_4")
	e.advance(29 * time.Minute)
	if r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "EX_4"}); r.fields["trade_status"] != "WAIT_BUYER_PAY" {
		t.Fatalf("timeout_express too early: %s", r.raw)
	}
	e.advance(2 * time.Minute)
	if r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "EX_4"}); r.fields["trade_status"] != "TRADE_CLOSED" {
		t.Fatalf("timeout_express: %s", r.raw)
	}
	e.advance(2 * time.Hour)
	if err := e.s.Scan("EX_3"); err == nil {
		t.Fatal("scan of a QR older than 2h succeeded")
	}
}

func TestAlipayRefundRules(t *testing.T) {
	e := newAliEnv(t, filledAmounts)
	e.call(t, "alipay.trade.precreate", precreateBiz("RF_1", "10.00"))
	_ = e.s.Pay(payment.Alipay, "RF_1", 0)
	refund := func(amount, reqNo string) aliResp {
		b := map[string]any{"out_trade_no": "RF_1", "refund_amount": amount, "refund_reason": "", "out_request_no": reqNo}
		return e.call(t, "alipay.trade.refund", b)
	}
	if r := refund("3.00", ""); r.sub() != "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL" {
		t.Fatalf("partial without out_request_no: %s", r.raw)
	}
	if r := refund("3.00", "A"); r.fields["fund_change"] != "Y" || r.fields["refund_fee"] != "3.00" {
		t.Fatalf("first refund: %s", r.raw)
	}
	if r := refund("3.00", "A"); r.sub() != "10000" || r.fields["fund_change"] != "N" || r.fields["refund_fee"] != "3.00" {
		t.Fatalf("repeated refund: %s", r.raw)
	}
	if r := refund("4.00", "A"); r.sub() != "ACQ.INVALID_PARAMETER" {
		t.Fatalf("same out_request_no, other amount: %s", r.raw)
	}
	if r := refund("7.01", "B"); r.sub() != "ACQ.REASON_TRADE_REFUND_FEE_ERR" {
		t.Fatalf("over remaining: %s", r.raw)
	}
	if r := refund("0.001", "B"); r.sub() != "ACQ.INVALID_PARAMETER" {
		t.Fatalf("bad amount: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "RF_1"}); r.fields["trade_status"] != "TRADE_SUCCESS" {
		t.Fatalf("after partial: %s", r.raw)
	}
	if r := refund("7.00", "B"); r.fields["fund_change"] != "Y" || r.fields["refund_fee"] != "10.00" {
		t.Fatalf("rest: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "RF_1"}); r.fields["trade_status"] != "TRADE_CLOSED" {
		t.Fatalf("after full: %s", r.raw)
	}
	if r := refund("0.01", "C"); r.sub() != "ACQ.TRADE_STATUS_ERROR" {
		t.Fatalf("refund of a closed trade: %s", r.raw)
	}
	if r := refund("7.00", "B"); r.fields["fund_change"] != "N" {
		t.Fatalf("repeat after close: %s", r.raw)
	}
	rq := func(reqNo string) aliResp {
		return e.call(t, "alipay.trade.fastpay.refund.query", map[string]any{"out_trade_no": "RF_1", "out_request_no": reqNo})
	}
	if r := rq("A"); r.fields["refund_status"] != "REFUND_SUCCESS" || r.fields["refund_amount"] != "3.00" || r.fields["total_amount"] != "10.00" {
		t.Fatalf("refund query A: %s", r.raw)
	}
	if r := rq("Z"); r.sub() != "10000" || len(r.fields) != 2 {
		t.Fatalf("refund query unknown: %s, want 10000 without refund fields", r.raw)
	}
	if err := e.s.RefundComplete(payment.Alipay, "A"); err != nil {
		t.Fatalf("RefundComplete of a settled refund: %v", err)
	}
	if err := e.s.RefundComplete(payment.Alipay, "Z"); err == nil {
		t.Fatal("RefundComplete of an unknown refund succeeded")
	}

	// A provider-side order with another total (the Pay hook's amount, a
	// collision): total_amount is that total, and only it can be refunded.
	e.call(t, "alipay.trade.precreate", precreateBiz("RF_2", "10.00"))
	_ = e.s.Pay(payment.Alipay, "RF_2", 250)
	r := e.call(t, "alipay.trade.query", map[string]any{"out_trade_no": "RF_2"})
	if r.fields["total_amount"] != "2.50" || r.fields["receipt_amount"] != "2.50" || r.fields["buyer_pay_amount"] != "2.50" {
		t.Fatalf("provider-side total 2.50 for a 10.00 order: %s", r.raw)
	}
	if r := e.call(t, "alipay.trade.refund", map[string]any{"out_trade_no": "RF_2", "refund_amount": "2.51", "out_request_no": "X"}); r.sub() != "ACQ.REASON_TRADE_REFUND_FEE_ERR" {
		t.Fatalf("refund above the provider's total: %s", r.raw)
	}
}

func TestAlipayResponseBytes(t *testing.T) {
	e := newAliEnv(t)
	resp, err := http.Post(e.srv.URL+"/gateway.do", "application/x-www-form-urlencoded", strings.NewReader(e.form("alipay.trade.precreate", precreateBiz("RB_1", "1.00"), nil, nil).Encode()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.HasPrefix(body, []byte(`{"alipay_trade_precreate_response":{"code":"10000","msg":"Success","out_trade_no":"RB_1","qr_code":"https:\/\/qr.alipay.com\/bax0`)) {
		t.Fatalf("body %s", body)
	}
	if !bytes.Contains(body, []byte(`},"sign":"`)) || bytes.Contains(body, []byte("alipay_cert_sn")) {
		t.Fatalf("body %s", body)
	}
}

func TestAlipayFaults(t *testing.T) {
	e := newAliEnv(t, func(o *paysim.Options) { o.TimeoutHold = 200 * time.Millisecond })
	q := map[string]any{"out_trade_no": "FA_1"}
	inject := func(kind paysim.FaultKind) {
		t.Helper()
		if err := e.s.InjectFault(paysim.Fault{Provider: payment.Alipay, API: "trade.query", Kind: kind, Count: 1}); err != nil {
			t.Fatal(err)
		}
	}
	inject(paysim.Fault5xx)
	if r := e.call(t, "alipay.trade.query", q); r.status != http.StatusBadGateway || json.Valid(r.raw) {
		t.Fatalf("5xx: %d %s", r.status, r.raw)
	}
	inject(paysim.FaultRateLimit)
	if r := e.call(t, "alipay.trade.query", q); r.fields["code"] != "40005" || !r.signed {
		t.Fatalf("rate_limit: %s", r.raw)
	}
	inject(paysim.FaultStaleTS)
	if r := e.call(t, "alipay.trade.query", q); r.sign != "" || r.fields["sub_code"] != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("stale_ts: want the node without sign: %s", r.raw)
	}
	inject(paysim.FaultBadSign)
	if r := e.call(t, "alipay.trade.query", q); r.sign == "" || r.signed {
		t.Fatalf("bad_sign: want a sign that does not verify: %s", r.raw)
	}
	inject(paysim.FaultTimeout)
	start := time.Now()
	resp, err := http.Post(e.srv.URL+"/gateway.do", "application/x-www-form-urlencoded", strings.NewReader(e.form("alipay.trade.query", q, nil, nil).Encode()))
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("timeout fault answered: %d %s", resp.StatusCode, b)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatalf("timeout fault dropped the call after only %v", time.Since(start))
	}
	// Faults are spent; other APIs were never affected.
	if r := e.call(t, "alipay.trade.query", q); !r.signed {
		t.Fatalf("after faults: %s", r.raw)
	}
	if got := e.s.Stats()["alipay.trade.query"]; got != 6 {
		t.Fatalf("stats alipay.trade.query = %d, want 6 (every call counted)", got)
	}
}

// aliNotifySink receives notifications, checks their signature itself (not
// through any SDK) and answers success from attempt acceptFrom on.
type aliNotifySink struct {
	srv        *httptest.Server
	acceptFrom int
	mu         sync.Mutex
	forms      []url.Values
	ch         chan struct{}
}

func newAliNotifySink(t *testing.T, k *paysim.Keys, acceptFrom int) *aliNotifySink {
	s := &aliNotifySink{acceptFrom: acceptFrom, ch: make(chan struct{}, 100)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			t.Errorf("notify Content-Type %q", ct)
		}
		_ = r.ParseForm()
		f := r.PostForm
		var pairs []string
		for key, vs := range f {
			if len(vs) != 1 || vs[0] == "" {
				t.Errorf("notify field %s=%q: empty or repeated", key, vs)
			}
			if key != "sign" && key != "sign_type" {
				pairs = append(pairs, key+"="+vs[0])
			}
		}
		sort.Strings(pairs)
		sig, _ := base64.StdEncoding.DecodeString(f.Get("sign"))
		h := sha256.Sum256([]byte(strings.Join(pairs, "&")))
		if err := rsa.VerifyPKCS1v15(&k.AlipayPlatform.PublicKey, crypto.SHA256, h[:], sig); err != nil || f.Get("sign_type") != "RSA2" {
			t.Errorf("notify signature: %v (sign_type %q)", err, f.Get("sign_type"))
		}
		s.mu.Lock()
		s.forms = append(s.forms, f)
		n := len(s.forms)
		s.mu.Unlock()
		s.ch <- struct{}{}
		if n >= s.acceptFrom {
			_, _ = io.WriteString(w, "success")
		} else {
			_, _ = io.WriteString(w, "success\n") // not exactly "success": retried
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *aliNotifySink) wait(t *testing.T, n int) []url.Values {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		got := append([]url.Values(nil), s.forms...)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("got %d notifications, want %d", len(got), n)
		}
	}
}

func TestAlipayNotifications(t *testing.T) {
	e := newAliEnv(t)
	sink := newAliNotifySink(t, e.k, 2)
	e.post(t, e.form("alipay.trade.precreate", precreateBiz("NT_1", "8.80"), func(f url.Values) { f.Set("notify_url", sink.srv.URL+"/notify/sim-1/alipay") }, nil))
	if err := e.s.Pay(payment.Alipay, "NT_1", 0); err != nil {
		t.Fatal(err)
	}
	got := sink.wait(t, 2)
	a, b := got[0], got[1]
	if a.Get("notify_id") == "" || a.Get("notify_id") != b.Get("notify_id") {
		t.Fatalf("notify_id %q then %q: retries must reuse it", a.Get("notify_id"), b.Get("notify_id"))
	}
	for k, want := range map[string]string{"trade_status": "TRADE_SUCCESS", "out_trade_no": "NT_1", "total_amount": "8.80", "receipt_amount": "8.80",
		"app_id": e.k.AlipayAppID, "notify_type": "trade_status_sync", "charset": "utf-8", "version": "1.0"} {
		if a.Get(k) != want {
			t.Errorf("notify %s=%q, want %q", k, a.Get(k), want)
		}
	}
	time.Sleep(250 * time.Millisecond) // past the rest of the retry schedule
	if n := len(sink.wait(t, 2)); n != 2 {
		t.Fatalf("%d deliveries: must stop at the first exact \"success\"", n)
	}
}

func TestAlipayHooksOverHTTP(t *testing.T) {
	e := newAliEnv(t)
	e.call(t, "alipay.trade.precreate", precreateBiz("HK_1", "3.00"))
	post := func(path, body string) int {
		resp, err := http.Post(e.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post("/_sim/scan", `{"out_trade_no":"HK_1"}`); c != 200 {
		t.Fatalf("scan: %d", c)
	}
	if c := post("/_sim/scan", `{"out_trade_no":"NOPE"}`); c != http.StatusConflict {
		t.Fatalf("scan unknown: %d", c)
	}
	for _, bad := range []string{
		`{"provider":"alipay","out_trade_no":"HK_1","discount":-1}`,
		`{"provider":"alipay","out_trade_no":"HK_1","discount":1,"discount_by":"bank"}`,
		`{"provider":"alipay","out_trade_no":"HK_1","amount":100,"discount":100}`,
	} {
		if c := post("/_sim/pay", bad); c != http.StatusBadRequest {
			t.Fatalf("pay %s: %d, want 400", bad, c)
		}
	}
	if c := post("/_sim/pay", `{"provider":"alipay","out_trade_no":"HK_1","discount":300}`); c != http.StatusConflict {
		t.Fatalf("pay with a discount of the whole total: %d, want 409", c)
	}
	if c := post("/_sim/pay", `{"provider":"alipay","out_trade_no":"HK_1","discount":1,"discount_by":"merchant"}`); c != 200 {
		t.Fatalf("pay: %d", c)
	}
	info, ok := e.s.Order(payment.Alipay, "HK_1")
	if !ok || info.State != "TRADE_SUCCESS" || info.Total != 300 || info.Paid != 299 || info.Received != 299 ||
		info.Discount != 1 || info.DiscountBy != paysim.DiscountMerchant || info.TransactionID == "" {
		t.Fatalf("order %+v", info)
	}
}

func FuzzAlipayGateway(f *testing.F) {
	e := newAliEnv(f)
	f.Add(e.form("alipay.trade.precreate", precreateBiz("FZ_1", "1.00"), nil, nil).Encode())
	f.Add(e.form("alipay.trade.query", map[string]any{"out_trade_no": "FZ_1"}, nil, nil).Encode())
	f.Add(e.form("alipay.trade.refund", map[string]any{"out_trade_no": "FZ_1", "refund_amount": "1.00", "out_request_no": "R"}, nil, nil).Encode())
	f.Add("method=alipay.trade.query&app_id=x")
	f.Add("%zz")
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/gateway.do", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		e.s.ServeHTTP(w, req)
		var top map[string]json.RawMessage
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &top) != nil || len(top) == 0 {
			t.Fatalf("answer %d %q: want a JSON object", w.Code, w.Body.Bytes())
		}
	})
}
