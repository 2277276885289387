// Package wxsim simulates WeChat Pay APIv3 for one merchant (docs/providers.md
// B): the Native prepay, order query and close, domestic refunds and their
// query, signed responses and encrypted, signed notifications. Register adds
// it to a paysim.Server, which serves it under /v3/ and lends it faults,
// notification delivery, timers and the clock.
//
// Sources for what the real service sends, field by field:
//   - Query by out_trade_no and the TRANSACTION.SUCCESS resource:
//     https://pay.weixin.qq.com/docs/merchant/apis/native-payment/query-by-out-trade-no.html
//     and wechatpay-go v0.2.21 services/payments/models.go (Transaction,
//     TransactionAmount, PromotionDetail). amount.total is the order total,
//     amount.payer_total what the buyer paid; promotion_detail[] carries
//     coupon_id, name, scope (GLOBAL|SINGLE), type (CASH: funded with money
//     settled to the merchant; NOCASH: not settled, the merchant bears it),
//     amount, stock_id, wechatpay_contribute, merchant_contribute,
//     other_contribute, currency. The documented sample is coupon 109519,
//     stock 931386.
//   - Refunds: wechatpay-go v0.2.21 services/refunddomestic/models.go
//     (Refund, Amount with payer_total, payer_refund, settlement_total =
//     total − NOCASH coupons, settlement_refund, discount_refund; Promotion
//     with promotion_id, scope, type COUPON|DISCOUNT, amount,
//     refund_amount; Status SUCCESS|CLOSED|PROCESSING|ABNORMAL).
//   - Refund notifications go to the refund request's notify_url; without
//     one, to an address configured on the merchant platform (which the
//     simulator does not have), never to the payment's notify_url:
//     https://pay.weixin.qq.com/docs/merchant/apis/refund/refunds/create.html
//     ("如果参数中传了notify_url，则商户平台上配置的回调地址将不会生效").
//     Event types REFUND.SUCCESS / REFUND.ABNORMAL / REFUND.CLOSED.
//   - HTTP 202 "服务器已接受请求，但尚未处理 — 请使用原参数重复请求一遍":
//     https://pay.weixin.qq.com/wiki/doc/api_external/ch/wechatpay/wechatpay2_1.shtml
//     and https://pay.weixin.qq.com/doc/global/v3/zh/4012354972.
//   - USERPAYING "用户支付中" is one of the documented trade_state values
//     (query doc above); docs/contract.md §7 shows it while a scanning buyer enters the
//     password.
//
// Discounts (/_sim/pay "discount", "discount_by"): platform-funded is a
// CASH coupon with wechatpay_contribute (the merchant is settled the full
// total), merchant-funded a NOCASH coupon with merchant_contribute
// (settlement_total is lower). payer_total = total − discount either way.
// A refund returns the coupon in proportion (discount_refund), the last
// refund of an order whatever is left of it.
//
// Deliberate deviations from the real service, each chosen so that tests
// can run offline without making the simulator more lenient about anything
// the daemon could get wrong:
//   - notify_url may be http:// for loopback hosts (tests have no TLS).
//   - time_expire accepts any RFC 3339 offset; WeChat documents +08:00.
//   - The "≥1 minute between refunds of one order" and QPS rules are not
//     enforced (tests refund partially in quick succession).
//   - The /_sim/pay "amount" becomes amount.total, the provider-side order
//     total, so a value other than the order's simulates a collision.
//     Unless Realism.WxStrictRefundTotal is set, a refund may still name
//     the total the order was created with (see paysim's package doc).
//   - Refund funds are unlimited unless SetRefundBalance sets a balance;
//     then refunds beyond it fail with NOT_ENOUGH.
package wxsim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

const (
	wxAuthScheme    = "WECHATPAY2-SHA256-RSA2048"
	wxClockSkew     = 5 * time.Minute
	wxDefaultExpire = 7 * 24 * time.Hour
	wxMinExpire     = time.Minute
	wxMaxBody       = 1 << 20
	wxTradeType     = "NATIVE"
)

// Trade states (docs/providers.md B5) and refund statuses (B4.4).
const (
	wxNotPay     = "NOTPAY"
	wxUserPaying = "USERPAYING"
	wxSuccess    = "SUCCESS"
	wxRefund     = "REFUND"
	wxClosed     = "CLOSED"

	wxRefundProcessing = paysim.RefundProcessing
	wxRefundSuccess    = paysim.RefundSuccess
	wxRefundAbnormal   = paysim.RefundAbnormal
	wxRefundClosed     = paysim.RefundClosed
)

// wxRefundEvents: the notification of each final refund status.
var wxRefundEvents = map[paysim.RefundStatus][2]string{
	wxRefundSuccess:  {"REFUND.SUCCESS", "退款成功"},
	wxRefundAbnormal: {"REFUND.ABNORMAL", "退款异常"},
	wxRefundClosed:   {"REFUND.CLOSED", "退款关闭"},
}

var (
	wxOutTradeNoRE  = regexp.MustCompile(`^[0-9A-Za-z_\-|*]{6,32}$`)
	wxOutRefundNoRE = regexp.MustCompile(`^[0-9A-Za-z_\-|*@]{1,64}$`)
)

var wxStateDesc = map[string]string{
	wxNotPay:     "订单未支付",
	wxUserPaying: "用户支付中，需要输入密码",
	wxSuccess:    "支付成功",
	wxRefund:     "转入退款",
	wxClosed:     "订单已关闭",
}

type wxOrder struct {
	appid, mchid, outTradeNo, description, notifyURL, attach string
	// terms: Amount is the provider-side order total; the discount is set
	// when the order is paid.
	terms                  paysim.Payment
	created                payment.Fen // the total the order was created with
	expireAt               time.Time
	params                 string // canonical request body: tells a retry from a conflicting reuse
	state                  string
	transactionID, openid  string
	couponID, stockID      string
	successTime, createdAt time.Time
	refunds                []*wxRefundRec
}

type wxRefundRec struct {
	order                                    *wxOrder
	outRefundNo, refundID, reason, notifyURL string
	amount                                   payment.Fen
	discountRefund                           payment.Fen // the part of amount that returns to the coupon
	status                                   paysim.RefundStatus
	createdAt, successAt                     time.Time
}

// refunded is the amount of the order's refunds that are not closed.
func (o *wxOrder) refunded() payment.Fen {
	var n payment.Fen
	for _, r := range o.refunds {
		if r.status != wxRefundClosed {
			n += r.amount
		}
	}
	return n
}

// discountRefund is the coupon's share of a new refund of amount: in
// proportion, and whatever is left when the refund empties the order.
func (o *wxOrder) discountRefund(amount payment.Fen) payment.Fen {
	t := o.terms
	if t.Discount == 0 {
		return 0
	}
	var refunded, coupon payment.Fen
	for _, r := range o.refunds {
		if r.status != wxRefundClosed {
			refunded += r.amount
			coupon += r.discountRefund
		}
	}
	if refunded+amount >= t.Amount {
		return t.Discount - coupon
	}
	return t.Discount * amount / t.Amount
}

// promotion renders the order's coupon as promotion_detail[0].
func (o *wxOrder) promotion() map[string]any {
	d := o.terms.Discount
	p := map[string]any{
		"coupon_id": o.couponID, "scope": "GLOBAL", "amount": d, "stock_id": o.stockID,
		"wechatpay_contribute": payment.Fen(0), "merchant_contribute": payment.Fen(0), "other_contribute": payment.Fen(0), "currency": "CNY",
	}
	if o.terms.DiscountBy == paysim.DiscountMerchant {
		p["name"], p["type"], p["merchant_contribute"] = "商家代金券", "NOCASH", d
	} else {
		p["name"], p["type"], p["wechatpay_contribute"] = "微信支付立减", "CASH", d
	}
	return p
}

// Sim simulates the WeChat Pay APIv3 for one merchant (Keys.WxMchID).
type Sim struct {
	s *paysim.Server

	mu       sync.Mutex
	byNo     map[string]*wxOrder
	refunds  map[string]*wxRefundRec
	balance  payment.Fen // refundable funds when limited
	limited  bool
	sequence int
	strictTE bool // time_expire must carry +08:00
}

// Register adds a WeChat Pay simulator for s's merchant to s and returns it.
func Register(s *paysim.Server) *Sim {
	a := &Sim{s: s, byNo: map[string]*wxOrder{}, refunds: map[string]*wxRefundRec{}}
	s.Register(a)
	return a
}

// Name is payment.WxPay.
func (a *Sim) Name() payment.ProviderName { return payment.WxPay }

// Pattern is where the APIv3 is served.
func (a *Sim) Pattern() string { return "/v3/" }

// SetRefundBalance limits the merchant's funds available for WeChat
// refunds to fen; a refund beyond them fails with 403 NOT_ENOUGH. A negative
// value removes the limit (the default).
func (a *Sim) SetRefundBalance(fen payment.Fen) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limited = fen >= 0
	a.balance = fen
}

// SetStrictTimeExpire makes the prepay refuse a time_expire that is not in
// +08:00, the only form WeChat documents (whether the real service accepts
// "Z" or other offsets is unverified, so the default accepts any RFC 3339
// time).
func (a *Sim) SetStrictTimeExpire(strict bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.strictTE = strict
}

// refundDelay draws how long one refund stays PROCESSING under r; ok is
// false when refunds do not complete by themselves (WxRefundMax = Never).
func refundDelay(r paysim.Realism) (d time.Duration, ok bool) {
	if r.WxRefundMax == paysim.Never {
		return 0, false
	}
	return r.WxRefundMin + rand.N(r.WxRefundMax-r.WxRefundMin+1), true
}

// wxError is the APIv3 error body.
type wxError struct {
	status  int
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Detail  map[string]any `json:"detail,omitempty"`
}

func wxErr(status int, code, msg string) *wxError {
	return &wxError{status: status, Code: code, Message: msg}
}

func wxParamErr(field, issue string, value any) *wxError {
	e := wxErr(http.StatusBadRequest, "PARAM_ERROR", fmt.Sprintf("参数错误: %s %s", field, issue))
	e.Detail = map[string]any{"field": field, "value": value, "issue": issue, "location": "body"}
	return e
}

// route maps a request to its stats name and path parameter.
func wxRoute(r *http.Request) (api, id string, ok bool) {
	escaped := r.URL.EscapedPath()
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	unescape := func(s string) (string, bool) {
		v, err := url.PathUnescape(s)
		return v, err == nil && v != ""
	}
	switch {
	case r.Method == http.MethodPost && escaped == "/v3/pay/transactions/native":
		return "wxpay.native", "", true
	case r.Method == http.MethodPost && escaped == "/v3/refund/domestic/refunds":
		return "wxpay.refund", "", true
	case len(segs) == 5 && r.Method == http.MethodGet && strings.HasPrefix(escaped, "/v3/pay/transactions/out-trade-no/"):
		id, ok = unescape(segs[4])
		return "wxpay.query", id, ok
	case len(segs) == 6 && r.Method == http.MethodPost && strings.HasPrefix(escaped, "/v3/pay/transactions/out-trade-no/") && segs[5] == "close":
		id, ok = unescape(segs[4])
		return "wxpay.close", id, ok
	case len(segs) == 5 && r.Method == http.MethodGet && strings.HasPrefix(escaped, "/v3/refund/domestic/refunds/"):
		id, ok = unescape(segs[4])
		return "wxpay.refund_query", id, ok
	}
	return "", "", false
}

// ServeHTTP serves the APIv3: every call is counted and signature-checked
// before an injected fault or the call itself is answered.
func (a *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	api, id, ok := wxRoute(r)
	if !ok {
		a.writeError(w, wxErr(http.StatusNotFound, "NOT_FOUND", "请求的资源不存在"), "")
		return
	}
	a.s.Count(api)
	body, err := io.ReadAll(io.LimitReader(r.Body, wxMaxBody+1))
	if err != nil || len(body) > wxMaxBody {
		a.writeError(w, wxErr(http.StatusBadRequest, "INVALID_REQUEST", "请求体读取失败或过大"), "")
		return
	}
	if err := a.checkAuth(r, body); err != nil {
		a.s.Logger().Debug("wxpay request refused", "api", api, "status", http.StatusUnauthorized, "err", err)
		a.writeError(w, wxErr(http.StatusUnauthorized, "SIGN_ERROR", "签名错误"), "")
		return
	}
	f := a.s.TakeFault(payment.WxPay, api)
	switch f {
	case paysim.FaultTimeout:
		a.s.Logger().Debug("wxpay fault", "api", api, "fault", f)
		a.s.Hold(r)
		return
	case paysim.FaultAccepted:
		// Accepted, not processed: the client must repeat the call.
		a.s.Logger().Debug("wxpay fault", "api", api, "fault", f)
		a.write(w, http.StatusAccepted, nil, "")
		return
	case paysim.Fault5xx:
		a.writeError(w, wxErr(http.StatusInternalServerError, "SYSTEM_ERROR", "系统错误"), "")
		return
	case paysim.FaultRateLimit:
		a.writeError(w, wxErr(http.StatusTooManyRequests, "FREQUENCY_LIMITED", "频率超限"), "")
		return
	}

	var (
		status = http.StatusOK
		out    any
		werr   *wxError
	)
	switch api {
	case "wxpay.native":
		out, werr = a.prepay(body)
	case "wxpay.query":
		out, werr = a.query(id, r.URL.Query())
	case "wxpay.close":
		status = http.StatusNoContent
		werr = a.closeOrder(id, body)
	case "wxpay.refund":
		out, werr = a.refund(body)
	case "wxpay.refund_query":
		out, werr = a.queryRefund(id)
	}
	if werr != nil {
		a.s.Logger().Debug("wxpay", "api", api, "order", id, "status", werr.status, "code", werr.Code)
		a.writeError(w, werr, f)
		return
	}
	var respBody []byte
	if out != nil {
		if respBody, err = json.Marshal(out); err != nil {
			a.writeError(w, wxErr(http.StatusInternalServerError, "SYSTEM_ERROR", "系统错误"), "")
			return
		}
	}
	a.s.Logger().Debug("wxpay", "api", api, "order", id, "status", status)
	a.write(w, status, respBody, f)
}

// checkAuth verifies the Authorization header the way WeChat Pay does
// (docs/providers.md B2): over the raw request URI and the raw body bytes.
func (a *Sim) checkAuth(r *http.Request, body []byte) error {
	h := r.Header.Get("Authorization")
	scheme, params, ok := strings.Cut(h, " ")
	if !ok || scheme != wxAuthScheme {
		return fmt.Errorf("authorization scheme %q", scheme)
	}
	kv := map[string]string{}
	for _, part := range strings.Split(params, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return fmt.Errorf("malformed authorization parameter %q", part)
		}
		if _, dup := kv[k]; dup {
			return fmt.Errorf("duplicate authorization parameter %q", k)
		}
		kv[k] = v[1 : len(v)-1]
	}
	for _, k := range []string{"mchid", "nonce_str", "timestamp", "serial_no", "signature"} {
		if kv[k] == "" {
			return fmt.Errorf("authorization lacks %s", k)
		}
	}
	if kv["mchid"] != a.s.Keys().WxMchID {
		return fmt.Errorf("unknown mchid %q", kv["mchid"])
	}
	if kv["serial_no"] != a.s.Keys().WxCertSerial {
		return fmt.Errorf("unknown merchant certificate serial %q", kv["serial_no"])
	}
	ts, err := strconv.ParseInt(kv["timestamp"], 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q: %w", kv["timestamp"], err)
	}
	if d := time.Since(time.Unix(ts, 0)); d > wxClockSkew || d < -wxClockSkew {
		return fmt.Errorf("timestamp %d off by %v", ts, d.Round(time.Second))
	}
	msg := r.Method + "\n" + r.RequestURI + "\n" + kv["timestamp"] + "\n" + kv["nonce_str"] + "\n" + string(body) + "\n"
	return paysim.VerifySHA256(&a.s.Keys().WxMerchant.PublicKey, []byte(msg), kv["signature"])
}

// sign returns the response/notification signature headers for body.
// fault FaultBadSign yields a signature over other bytes; FaultStaleTS a
// correct signature with a timestamp ten minutes old.
func (a *Sim) sign(body []byte, fault paysim.FaultKind) (ts, nonce, sig string) {
	now := time.Now()
	if fault == paysim.FaultStaleTS {
		now = now.Add(-10 * time.Minute)
	}
	ts = strconv.FormatInt(now.Unix(), 10)
	nonce = paysim.RandomString(paysim.Alphanumeric, 32)
	msg := ts + "\n" + nonce + "\n" + string(body) + "\n"
	if fault == paysim.FaultBadSign {
		msg += "tampered"
	}
	return ts, nonce, paysim.SignSHA256(a.s.Keys().WxPlatform, []byte(msg))
}

func (a *Sim) write(w http.ResponseWriter, status int, body []byte, fault paysim.FaultKind) {
	ts, nonce, sig := a.sign(body, fault)
	h := w.Header()
	h.Set("Wechatpay-Serial", a.s.Keys().WxPublicKeyID)
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", sig)
	h.Set("Request-Id", "08"+paysim.RandomDigits(30))
	if len(body) > 0 {
		h.Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (a *Sim) writeError(w http.ResponseWriter, e *wxError, fault paysim.FaultKind) {
	body, _ := json.Marshal(e)
	a.write(w, e.status, body, fault)
}

// wxDecodeObject parses a JSON object keeping numbers exact.
func wxDecodeObject(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, errors.New("body must be a JSON object")
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return m, nil
}

func wxStringField(m map[string]any, key string, required bool, maxChars int) (string, *wxError) {
	v, ok := m[key]
	if !ok || v == nil {
		if required {
			return "", wxParamErr(key, "缺少必填参数", nil)
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", wxParamErr(key, "类型错误，应为字符串", v)
	}
	if required && s == "" {
		return "", wxParamErr(key, "不能为空", s)
	}
	if maxChars > 0 && utf8.RuneCountInString(s) > maxChars {
		return "", wxParamErr(key, fmt.Sprintf("长度不能超过%d", maxChars), s)
	}
	return s, nil
}

// wxFenField reads an amount: an integer number of fen.
func wxFenField(m map[string]any, key string) (payment.Fen, bool, *wxError) {
	v, ok := m[key]
	if !ok || v == nil {
		return 0, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, true, wxParamErr(key, "类型错误，应为整数", v)
	}
	i, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		return 0, true, wxParamErr(key, "类型错误，应为整数", v)
	}
	return payment.Fen(i), true, nil
}

func wxCheckNotifyURL(key, s string, maxLen int) *wxError {
	if len(s) > maxLen {
		return wxParamErr(key, fmt.Sprintf("长度不能超过%d", maxLen), s)
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return wxParamErr(key, "不是合法的URL", s)
	}
	if strings.ContainsAny(s, "?#") {
		return wxParamErr(key, "不能携带查询参数", s)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && paysim.LoopbackHost(u.Hostname()):
	default:
		return wxParamErr(key, "必须为https地址", s)
	}
	return nil
}

var wxPrepayFields = map[string]bool{
	"appid": true, "mchid": true, "description": true, "out_trade_no": true, "time_expire": true,
	"attach": true, "notify_url": true, "goods_tag": true, "limit_pay": true, "support_fapiao": true,
	"amount": true, "detail": true, "settle_info": true, "scene_info": true,
}

// prepay is POST /v3/pay/transactions/native (docs/providers.md B4.1).
func (a *Sim) prepay(body []byte) (any, *wxError) {
	m, err := wxDecodeObject(body)
	if err != nil {
		return nil, wxErr(http.StatusBadRequest, "PARAM_ERROR", "请求体格式错误: "+err.Error())
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !wxPrepayFields[k] {
			return nil, wxParamErr(k, "未知参数", m[k])
		}
	}
	o := &wxOrder{}
	var expire, goodsTag string
	for _, f := range []struct {
		dst      *string
		key      string
		required bool
		maxChars int
	}{
		{&o.appid, "appid", true, 32}, {&o.mchid, "mchid", true, 32}, {&o.description, "description", true, 127},
		{&o.outTradeNo, "out_trade_no", true, 0}, {&o.notifyURL, "notify_url", true, 0}, {&o.attach, "attach", false, 128},
		{&goodsTag, "goods_tag", false, 32}, {&expire, "time_expire", false, 64},
	} {
		v, werr := wxStringField(m, f.key, f.required, f.maxChars)
		if werr != nil {
			return nil, werr
		}
		*f.dst = v
	}
	if o.mchid != a.s.Keys().WxMchID {
		return nil, wxErr(http.StatusBadRequest, "MCH_NOT_EXISTS", "商户号不存在或与签名商户号不一致")
	}
	if o.appid != a.s.Keys().WxAppID {
		return nil, wxErr(http.StatusBadRequest, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
	}
	if !wxOutTradeNoRE.MatchString(o.outTradeNo) {
		return nil, wxParamErr("out_trade_no", "长度为6-32位，只能是数字、大小写字母_-|*", o.outTradeNo)
	}
	if werr := wxCheckNotifyURL("notify_url", o.notifyURL, 255); werr != nil {
		return nil, werr
	}
	amount, ok := m["amount"].(map[string]any)
	if !ok {
		return nil, wxParamErr("amount", "缺少必填参数或类型错误", m["amount"])
	}
	for k := range amount {
		if k != "total" && k != "currency" {
			return nil, wxParamErr("amount."+k, "未知参数", amount[k])
		}
	}
	total, present, werr := wxFenField(amount, "total")
	if werr != nil {
		return nil, werr
	}
	if !present || total < 1 {
		return nil, wxParamErr("amount.total", "订单金额必须为大于0的整数（分）", amount["total"])
	}
	o.terms.Amount, o.created = total, total
	if cur, werr := wxStringField(amount, "currency", false, 16); werr != nil {
		return nil, werr
	} else if cur != "" && cur != "CNY" {
		return nil, wxParamErr("amount.currency", "仅支持CNY", cur)
	}
	if v, ok := m["support_fapiao"]; ok {
		if _, isBool := v.(bool); !isBool {
			return nil, wxParamErr("support_fapiao", "类型错误，应为布尔值", v)
		}
	}
	if v, ok := m["limit_pay"]; ok {
		list, isList := v.([]any)
		if !isList {
			return nil, wxParamErr("limit_pay", "类型错误，应为数组", v)
		}
		for _, e := range list {
			if _, isStr := e.(string); !isStr {
				return nil, wxParamErr("limit_pay", "类型错误，应为字符串数组", v)
			}
		}
	}
	for _, k := range []string{"detail", "settle_info", "scene_info"} {
		if v, ok := m[k]; ok {
			if _, isObj := v.(map[string]any); !isObj {
				return nil, wxParamErr(k, "类型错误，应为对象", v)
			}
		}
	}
	if si, ok := m["scene_info"].(map[string]any); ok {
		if _, werr := wxStringField(si, "payer_client_ip", true, 45); werr != nil {
			werr.Detail["field"] = "scene_info.payer_client_ip"
			return nil, werr
		}
	}
	now := a.s.Now()
	o.createdAt = now
	o.expireAt = now.Add(wxDefaultExpire)
	if expire != "" {
		t, err := time.Parse(time.RFC3339, expire)
		if err != nil {
			return nil, wxParamErr("time_expire", "必须是符合 RFC3339 日期时间格式", expire)
		}
		a.mu.Lock()
		strict := a.strictTE
		a.mu.Unlock()
		if _, offset := t.Zone(); strict && (offset != 8*3600 || !strings.HasSuffix(expire, "+08:00")) {
			return nil, wxParamErr("time_expire", "必须是 yyyy-MM-DDTHH:mm:ss+08:00 格式", expire)
		}
		// WeChat moves a time_expire shorter than a minute out to a minute.
		if t.Before(now.Add(wxMinExpire)) {
			t = now.Add(wxMinExpire)
		}
		o.expireAt = t
	}
	canon, _ := json.Marshal(m)
	o.params = string(canon)
	o.state = wxNotPay

	a.mu.Lock()
	defer a.mu.Unlock()
	if old, ok := a.byNo[o.outTradeNo]; ok {
		a.expire(old, now)
		switch {
		case old.state == wxSuccess || old.state == wxRefund:
			return nil, wxErr(http.StatusForbidden, "ORDERPAID", "该订单已支付")
		case old.state == wxClosed:
			return nil, wxErr(http.StatusBadRequest, "ORDER_CLOSED", "订单已关闭")
		case old.params != o.params:
			return nil, wxErr(http.StatusForbidden, "OUT_TRADE_NO_USED", "商户订单号重复")
		}
		return map[string]any{"code_url": wxCodeURL()}, nil
	}
	a.byNo[o.outTradeNo] = o
	return map[string]any{"code_url": wxCodeURL()}, nil
}

// expire closes an unpaid order whose time_expire has passed. Caller holds a.mu.
func (a *Sim) expire(o *wxOrder, now time.Time) {
	if (o.state == wxNotPay || o.state == wxUserPaying) && !now.Before(o.expireAt) {
		o.state = wxClosed
	}
}

func (a *Sim) lookup(outTradeNo string) *wxOrder {
	o := a.byNo[outTradeNo]
	if o != nil {
		a.expire(o, a.s.Now())
	}
	return o
}

// transaction renders o as the query API and TRANSACTION.SUCCESS notify
// plaintext show it (payments.Transaction). Caller holds a.mu.
func (o *wxOrder) transaction() map[string]any {
	t := map[string]any{
		"appid":            o.appid,
		"mchid":            o.mchid,
		"out_trade_no":     o.outTradeNo,
		"trade_state":      o.state,
		"trade_state_desc": wxStateDesc[o.state],
		"attach":           o.attach,
		"amount":           map[string]any{"total": o.terms.Amount, "currency": "CNY"},
	}
	if o.transactionID != "" {
		t["transaction_id"] = o.transactionID
		t["trade_type"] = wxTradeType
		t["bank_type"] = "OTHERS"
		t["success_time"] = o.successTime.In(payment.Beijing).Format(time.RFC3339)
		t["payer"] = map[string]any{"openid": o.openid}
		t["amount"] = map[string]any{"total": o.terms.Amount, "payer_total": o.terms.Paid(), "currency": "CNY", "payer_currency": "CNY"}
		if o.terms.Discount > 0 {
			t["promotion_detail"] = []any{o.promotion()}
		}
	}
	return t
}

// query is GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=.
func (a *Sim) query(outTradeNo string, q url.Values) (any, *wxError) {
	mchid := q.Get("mchid")
	if mchid == "" {
		return nil, wxParamErr("mchid", "缺少必填参数", nil)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.lookup(outTradeNo)
	if o == nil || o.mchid != mchid {
		return nil, wxErr(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在")
	}
	return o.transaction(), nil
}

// closeOrder is POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close.
func (a *Sim) closeOrder(outTradeNo string, body []byte) *wxError {
	m, err := wxDecodeObject(body)
	if err != nil {
		return wxErr(http.StatusBadRequest, "PARAM_ERROR", "请求体格式错误: "+err.Error())
	}
	mchid, werr := wxStringField(m, "mchid", true, 32)
	if werr != nil {
		return werr
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.lookup(outTradeNo)
	if o == nil || o.mchid != mchid {
		return wxErr(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在")
	}
	switch o.state {
	case wxSuccess, wxRefund:
		return wxErr(http.StatusForbidden, "ORDERPAID", "订单已支付")
	case wxNotPay, wxUserPaying:
		o.state = wxClosed
	}
	return nil
}

var wxRefundFields = map[string]bool{
	"transaction_id": true, "out_trade_no": true, "out_refund_no": true, "reason": true,
	"notify_url": true, "funds_account": true, "amount": true, "goods_detail": true,
}

// refund is POST /v3/refund/domestic/refunds (docs/providers.md B4.4).
func (a *Sim) refund(body []byte) (any, *wxError) {
	m, err := wxDecodeObject(body)
	if err != nil {
		return nil, wxErr(http.StatusBadRequest, "PARAM_ERROR", "请求体格式错误: "+err.Error())
	}
	for k, v := range m {
		if !wxRefundFields[k] {
			return nil, wxParamErr(k, "未知参数", v)
		}
	}
	outTradeNo, werr := wxStringField(m, "out_trade_no", false, 32)
	if werr != nil {
		return nil, werr
	}
	txID, werr := wxStringField(m, "transaction_id", false, 32)
	if werr != nil {
		return nil, werr
	}
	if outTradeNo == "" && txID == "" {
		return nil, wxParamErr("out_trade_no", "transaction_id和out_trade_no必须二选一", nil)
	}
	r := &wxRefundRec{}
	if r.outRefundNo, werr = wxStringField(m, "out_refund_no", true, 64); werr != nil {
		return nil, werr
	}
	if !wxOutRefundNoRE.MatchString(r.outRefundNo) {
		return nil, wxParamErr("out_refund_no", "只能是数字、大小写字母_-|*@", r.outRefundNo)
	}
	if r.reason, werr = wxStringField(m, "reason", false, 80); werr != nil {
		return nil, werr
	}
	if r.notifyURL, werr = wxStringField(m, "notify_url", false, 0); werr != nil {
		return nil, werr
	}
	if r.notifyURL != "" {
		if werr := wxCheckNotifyURL("notify_url", r.notifyURL, 256); werr != nil {
			return nil, werr
		}
	}
	amount, ok := m["amount"].(map[string]any)
	if !ok {
		return nil, wxParamErr("amount", "缺少必填参数或类型错误", m["amount"])
	}
	refundAmt, present, werr := wxFenField(amount, "refund")
	if werr != nil {
		return nil, werr
	}
	if !present || refundAmt < 1 {
		return nil, wxParamErr("amount.refund", "退款金额必须为大于0的整数（分）", amount["refund"])
	}
	total, present, werr := wxFenField(amount, "total")
	if werr != nil {
		return nil, werr
	}
	if !present || total < 1 {
		return nil, wxParamErr("amount.total", "原订单金额必须为大于0的整数（分）", amount["total"])
	}
	cur, werr := wxStringField(amount, "currency", true, 16)
	if werr != nil {
		return nil, werr
	}
	if cur != "CNY" {
		return nil, wxParamErr("amount.currency", "仅支持CNY", cur)
	}
	r.amount = refundAmt

	a.mu.Lock()
	defer a.mu.Unlock()
	var o *wxOrder
	if outTradeNo != "" {
		o = a.lookup(outTradeNo)
	} else {
		for _, c := range a.byNo {
			if c.transactionID == txID {
				o = c
			}
		}
	}
	// The refund service only knows paid transactions.
	if o == nil || o.transactionID == "" || (txID != "" && o.transactionID != txID) {
		return nil, wxErr(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "订单不存在")
	}
	if prev, ok := a.refunds[r.outRefundNo]; ok {
		// Same out_refund_no: WeChat refunds only once and reports the
		// existing refund; a conflicting repeat is refused.
		if prev.order != o || prev.amount != r.amount {
			return nil, wxErr(http.StatusBadRequest, "INVALID_REQUEST", "同一退款单号的退款参数与原请求不一致")
		}
		return prev.render(), nil
	}
	if total != o.terms.Amount && (total != o.created || a.s.Realism().WxStrictRefundTotal) {
		return nil, wxParamErr("amount.total", "与原订单金额不一致", total)
	}
	if left := o.terms.Amount - o.refunded(); refundAmt > left {
		if left == 0 {
			return nil, wxErr(http.StatusBadRequest, "INVALID_REQUEST", "订单已全额退款")
		}
		return nil, wxErr(http.StatusBadRequest, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
	}
	if a.limited && refundAmt > a.balance {
		return nil, wxErr(http.StatusForbidden, "NOT_ENOUGH", "余额不足")
	}
	if a.limited {
		a.balance -= refundAmt
	}
	r.order = o
	r.refundID = "50" + paysim.RandomDigits(27)
	r.status = wxRefundProcessing
	r.createdAt = a.s.Now()
	r.discountRefund = o.discountRefund(refundAmt)
	o.refunds = append(o.refunds, r)
	o.state = wxRefund
	a.refunds[r.outRefundNo] = r
	if d, ok := refundDelay(a.s.Realism()); ok {
		no := r.outRefundNo
		a.s.After(d, func() {
			if err := a.settleRefund(no, wxRefundSuccess); err != nil {
				a.s.Logger().Debug("wxpay refund not completed", "refund", no, "err", err)
			}
		})
	}
	return r.render(), nil
}

// render shows r as refunddomestic.Refund. Caller holds a.mu.
func (r *wxRefundRec) render() map[string]any {
	o, t := r.order, r.order.terms
	noCashRefund := payment.Fen(0)
	if t.MerchantFunded() > 0 {
		noCashRefund = r.discountRefund
	}
	out := map[string]any{
		"refund_id":             r.refundID,
		"out_refund_no":         r.outRefundNo,
		"transaction_id":        o.transactionID,
		"out_trade_no":          o.outTradeNo,
		"channel":               "ORIGINAL",
		"user_received_account": "支付用户零钱",
		"create_time":           r.createdAt.In(payment.Beijing).Format(time.RFC3339),
		"status":                r.status,
		"funds_account":         "AVAILABLE",
		"amount": map[string]any{
			"total": t.Amount, "refund": r.amount, "payer_total": t.Paid(), "payer_refund": r.amount - r.discountRefund,
			"settlement_refund": r.amount - noCashRefund, "settlement_total": t.Received(),
			"discount_refund": r.discountRefund, "currency": "CNY",
		},
	}
	if t.Discount > 0 {
		kind := "COUPON"
		if t.MerchantFunded() > 0 {
			kind = "DISCOUNT"
		}
		out["promotion_detail"] = []any{map[string]any{
			"promotion_id": o.couponID, "scope": "GLOBAL", "type": kind, "amount": t.Discount, "refund_amount": r.discountRefund,
		}}
	}
	if r.status == wxRefundSuccess {
		out["success_time"] = r.successAt.In(payment.Beijing).Format(time.RFC3339)
	}
	return out
}

// notifyResource is the refund notification's plaintext. Caller holds a.mu.
func (r *wxRefundRec) notifyResource() []byte {
	o := r.order
	m := map[string]any{
		"mchid": o.mchid, "out_trade_no": o.outTradeNo, "transaction_id": o.transactionID,
		"out_refund_no": r.outRefundNo, "refund_id": r.refundID, "refund_status": r.status,
		"user_received_account": "支付用户零钱",
		"amount":                map[string]any{"total": o.terms.Amount, "refund": r.amount, "payer_total": o.terms.Paid(), "payer_refund": r.amount - r.discountRefund},
	}
	if r.status == wxRefundSuccess {
		m["success_time"] = r.successAt.In(payment.Beijing).Format(time.RFC3339)
	}
	b, _ := json.Marshal(m)
	return b
}

// queryRefund is GET /v3/refund/domestic/refunds/{out_refund_no}.
func (a *Sim) queryRefund(outRefundNo string) (any, *wxError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.refunds[outRefundNo]
	if !ok {
		return nil, wxErr(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "退款单不存在")
	}
	return r.render(), nil
}

// Scan is the buyer scanning the code and entering the password: NOTPAY
// becomes USERPAYING.
func (a *Sim) Scan(outTradeNo string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.lookup(outTradeNo)
	switch {
	case o == nil:
		return fmt.Errorf("wxpay order %s: %w", outTradeNo, paysim.ErrNoOrder)
	case o.state == wxNotPay:
		o.state = wxUserPaying
	case o.state != wxUserPaying:
		return fmt.Errorf("wxpay order %s is %s, cannot be scanned", outTradeNo, o.state)
	}
	return nil
}

// Pay is the buyer paying; p.Amount becomes the provider-side total.
func (a *Sim) Pay(outTradeNo string, p paysim.Payment) error {
	a.mu.Lock()
	o := a.lookup(outTradeNo)
	if o == nil {
		a.mu.Unlock()
		return fmt.Errorf("wxpay order %s does not exist", outTradeNo)
	}
	if o.state != wxNotPay && o.state != wxUserPaying {
		state := o.state
		a.mu.Unlock()
		return fmt.Errorf("wxpay order %s is %s, cannot be paid", outTradeNo, state)
	}
	p, err := p.Resolve(o.terms.Amount)
	if err != nil {
		a.mu.Unlock()
		return fmt.Errorf("wxpay order %s: %w", outTradeNo, err)
	}
	o.state = wxSuccess
	o.terms = p
	if p.Discount > 0 {
		o.couponID, o.stockID = "1"+paysim.RandomDigits(9), paysim.RandomDigits(8)
	}
	o.transactionID = "4200" + paysim.RandomDigits(24)
	o.openid = "oSim" + paysim.RandomString(paysim.Alphanumeric, 24)
	o.successTime = a.s.Now()
	plain, _ := json.Marshal(o.transaction())
	to := o.notifyURL
	a.mu.Unlock()
	a.s.Logger().Debug("wxpay paid", "order", outTradeNo, "total", int64(p.Amount), "discount", int64(p.Discount))
	a.notify(to, "TRANSACTION.SUCCESS", "支付成功", "transaction", plain)
	return nil
}

// settleRefund moves a refund to its final status and notifies the
// refund's notify_url. Reaching the status it already has is a no-op; only
// PROCESSING refunds end, except that an ABNORMAL one may still succeed.
func (a *Sim) settleRefund(outRefundNo string, status paysim.RefundStatus) error {
	a.mu.Lock()
	r, ok := a.refunds[outRefundNo]
	if !ok {
		a.mu.Unlock()
		return fmt.Errorf("wxpay refund %s does not exist", outRefundNo)
	}
	switch {
	case r.status == status:
		a.mu.Unlock()
		return nil
	case r.status == wxRefundProcessing, r.status == wxRefundAbnormal && status == wxRefundSuccess:
	default:
		from := r.status
		a.mu.Unlock()
		return fmt.Errorf("wxpay refund %s is %s, cannot become %s", outRefundNo, from, status)
	}
	r.status = status
	if status == wxRefundSuccess {
		r.successAt = a.s.Now()
	}
	plain := r.notifyResource()
	to := r.notifyURL
	a.mu.Unlock()
	a.s.Logger().Debug("wxpay refund settled", "refund", outRefundNo, "status", status)
	ev := wxRefundEvents[status]
	a.notify(to, ev[0], ev[1], "refund", plain)
	return nil
}

// notify sends an encrypted APIv3 notification (docs/providers.md B6). The body
// is fixed for all attempts (same event id); each attempt is signed afresh.
func (a *Sim) notify(to, eventType, summary, originalType string, plaintext []byte) {
	if to == "" {
		return
	}
	body, err := a.notificationBody(eventType, summary, originalType, plaintext)
	if err != nil {
		a.s.Logger().Error("build wxpay notification", "err", err)
		return
	}
	a.s.Deliver("wxpay."+originalType, to, func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPost, to, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		a.signNotification(req.Header, body, "")
		return req, nil
	}, func(resp *http.Response, _ []byte) bool {
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent
	})
}

func (a *Sim) notificationBody(eventType, summary, originalType string, plaintext []byte) ([]byte, error) {
	block, err := aes.NewCipher([]byte(a.s.Keys().WxAPIv3Key))
	if err != nil {
		return nil, fmt.Errorf("APIv3 key: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	nonce := paysim.RandomString(paysim.Alphanumeric, 12)
	ct := gcm.Seal(nil, []byte(nonce), plaintext, []byte(originalType))
	a.mu.Lock()
	a.sequence++
	id := fmt.Sprintf("EV-%s%06d", time.Now().In(payment.Beijing).Format("20060102150405"), a.sequence)
	a.mu.Unlock()
	return json.Marshal(map[string]any{
		"id":            id,
		"create_time":   time.Now().In(payment.Beijing).Format(time.RFC3339),
		"resource_type": "encrypt-resource",
		"event_type":    eventType,
		"summary":       summary,
		"resource": map[string]any{
			"original_type":   originalType,
			"algorithm":       "AEAD_AES_256_GCM",
			"ciphertext":      base64.StdEncoding.EncodeToString(ct),
			"associated_data": originalType,
			"nonce":           nonce,
		},
	})
}

func (a *Sim) signNotification(h http.Header, body []byte, fault paysim.FaultKind) {
	ts, nonce, sig := a.sign(body, fault)
	h.Set("Content-Type", "application/json")
	h.Set("Wechatpay-Serial", a.s.Keys().WxPublicKeyID)
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", sig)
	h.Set("Wechatpay-Signature-Type", wxAuthScheme)
}

// Notification builds a WeChat Pay notification exactly as the simulator
// would send it: kind is "transaction" or "refund" (TRANSACTION.SUCCESS,
// REFUND.SUCCESS) or an event type (REFUND.ABNORMAL, REFUND.CLOSED…),
// plaintext the resource JSON. fault may be "" (valid), paysim.FaultBadSign
// or paysim.FaultStaleTS. Tests use it to feed adapters notifications
// without an HTTP round trip.
func (a *Sim) Notification(kind string, plaintext []byte, fault paysim.FaultKind) (http.Header, []byte, error) {
	event, summary, original := "", "", ""
	switch kind {
	case "transaction", "TRANSACTION.SUCCESS":
		event, summary, original = "TRANSACTION.SUCCESS", "支付成功", "transaction"
	default:
		for _, ev := range wxRefundEvents {
			if kind == ev[0] || (kind == "refund" && ev[0] == "REFUND.SUCCESS") {
				event, summary, original = ev[0], ev[1], "refund"
			}
		}
	}
	if event == "" {
		return nil, nil, fmt.Errorf("kind %q: want transaction, refund or an event type (TRANSACTION.SUCCESS, REFUND.SUCCESS, REFUND.ABNORMAL, REFUND.CLOSED)", kind)
	}
	body, err := a.notificationBody(event, summary, original, plaintext)
	if err != nil {
		return nil, nil, err
	}
	h := http.Header{}
	a.signNotification(h, body, fault)
	return h, body, nil
}

// RefundComplete makes a PROCESSING or ABNORMAL refund succeed now, with
// its REFUND.SUCCESS notification; a refund that succeeded already is left
// as it is.
func (a *Sim) RefundComplete(outRefundNo string) error {
	return a.settleRefund(outRefundNo, wxRefundSuccess)
}

// RefundFail ends a PROCESSING refund in status (ABNORMAL or CLOSED), with
// its REFUND.ABNORMAL or REFUND.CLOSED notification.
func (a *Sim) RefundFail(outRefundNo string, status paysim.RefundStatus) error {
	return a.settleRefund(outRefundNo, status)
}

// Orders lists the orders (in no particular order; Server.Orders sorts).
func (a *Sim) Orders() []paysim.OrderInfo { return paysim.ListOrders(&a.mu, a.byNo, a.s.Now, a.info) }

// info reports o as of now. Callers hold a.mu.
func (a *Sim) info(o *wxOrder, now time.Time) paysim.OrderInfo {
	a.expire(o, now)
	info := paysim.OrderInfo{
		Provider:      payment.WxPay,
		OutTradeNo:    o.outTradeNo,
		State:         o.state,
		Refunded:      o.refunded(),
		TransactionID: o.transactionID,
		NotifyURL:     o.notifyURL,
		CreatedAt:     o.createdAt,
	}
	info.SetTerms(o.terms, o.transactionID != "")
	for _, r := range o.refunds {
		info.Refunds = append(info.Refunds, paysim.RefundInfo{OutRefundNo: r.outRefundNo, Amount: r.amount, Status: r.status})
	}
	return info
}

func wxCodeURL() string {
	return "weixin://wxpay/bizpayurl?pr=" + paysim.RandomString(paysim.Alphanumeric, 10)
}
