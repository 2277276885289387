// Package alisim simulates the Alipay OpenAPI gateway (POST /gateway.do,
// form in, signed JSON out) for the face-to-face (当面付) precreate flow of
// one application, with signed trade_status_sync notifications. Register
// adds it to a paysim.Server, which serves it and lends it faults,
// notification delivery, timers and the clock.
//
// Wire rules follow docs/providers.md A and D. Where the real
// service is undocumented the simulator is the stricter of the plausible
// behaviours, so a client that passes here does not depend on leniency:
//   - only charset utf-8 is accepted (Alipay also takes gbk/gb2312);
//   - a subject containing / = & is refused, as the precreate doc says;
//   - a notify_url must be https (http only for loopback hosts) and carry no
//     query string;
//   - re-precreating an out_trade_no whose QR expired unscanned, or that was
//     cancelled, answers ACQ.TRADE_HAS_CLOSE;
//   - time_expire in the past is refused;
//   - reusing an out_request_no with a different refund_amount is refused.
//
// Amounts. Field names and types: smartwalle/alipay v3.2.31 trade_type.go
// (TradeQueryRsp: total_amount, buyer_pay_amount, point_amount,
// invoice_amount, receipt_amount, fund_bill_list [{fund_channel, amount}],
// voucher_detail_list [{id, name, type, amount, merchant_contribute,
// other_contribute}], mdiscount_amount, discount_amount; TradeQuery's
// query_options fund_bill_list / voucher_detail_list / mdiscount_amount) and
// notify_type.go (the notification carries fund_bill_list and
// voucher_detail_list as JSON strings). total_amount is the order total the
// provider holds: the order's, or the /_sim/pay "amount" (a collision).
// buyer_pay_amount = invoice_amount = total − discount; receipt_amount is
// what the merchant receives: the total under a platform-funded voucher,
// total − discount under a merchant-funded one. Refundable is total_amount.
//   - Query answers for paid trades very often carry buyer_pay_amount,
//     invoice_amount, point_amount and receipt_amount as "0.00", without
//     fund_bill_list: https://www.kancloud.cn/thinkphp_teams/newthink_pay/405301
//     (production, 2017, total 0.01), http://hosting.easydoc.net/doc/26227881/4Sklatmw/q2xpqvnP
//     (sandbox, 2021, total 10.00), and answers quoted in public code (a PHP
//     SDK test fixture of 2020-11-20, total 388.00; production answers of
//     2018-12-26 and 2020-01-06; sandbox answers of 2016, 2018, 2020, 2025).
//     Other merchants' answers carry real amounts together with
//     fund_bill_list (seven quoted production answers of 2017–2019, all of
//     0.01 yuan), as the official sample does. Of the captured answers found
//     the "0.00" shape is the more common (9 distinct against 7), so
//     Realism.AlipayZeroQueryAmounts models it; false gives the filled shape
//     with fund_bill_list.
//   - Fund channels (支付渠道列表): ALIPAYACCOUNT for the buyer's money,
//     DISCOUNT (折扣券) for a platform-funded voucher, MDISCOUNT (商户优惠券)
//     for a merchant-funded one. Voucher types as in the SDK comment
//     (ALIPAY_FIX_VOUCHER). Notification JSON uses camelCase keys
//     (fundChannel, merchantContribute, otherContribute, voucherId), as the
//     official notification sample does; query answers use snake_case.
//   - Notifications carry refund_fee "0.00" where nothing was refunded (the
//     official notification sample, trade_status TRADE_SUCCESS); the
//     simulator sends it on refunds and on TRADE_FINISHED only, as a
//     payment notification with refund_fee is what the adapters must learn
//     to read (issue 10) before every notification carries it.
//
// TRADE_FINISHED: a paid trade whose refund window ended (Realism.
// AlipayRefundWindow, default 365 days, "the refund period is generally 365
// days" for in-store payment, which then notifies TRADE_FINISHED:
// https://global.alipay.com/developer/helpcenter/detail?categoryId=67617&knowId=201602456511&sceneCode=AC_DEV;
// the domestic notification doc says TRADE_FINISHED is not notified by
// default: the simulator sends it, the reading a client must survive).
// A refund or cancel then fails with ACQ.TRADE_HAS_FINISHED "交易已完结".
//
// Cancel (alipay.trade.cancel): "action" is returned only "接口调用成功且交易
// 存在时" — when the call succeeds and a trade exists — and trade_no only
// when a trade was closed or refunded (response parameters of
// alipay.trade.cancel, mirrored at https://www.5851388.com/o02ekfr), so
// cancelling a number nobody scanned answers 10000 with out_trade_no and
// retry_flag "N" only. retry_flag "Y" asks the caller to cancel again (the
// official face-to-face demo's needRetry); the simulator sends it with the
// system_error fault.
//
// Faults (stats name = the method, e.g. "alipay.trade.query"): 5xx answers
// HTTP 502 with an HTML body, rate_limit a signed 40005 and 20000 a signed
// "20000 Service Currently Unavailable isp.unknow-error 系统繁忙" (the
// documents' 异常示例), all before the call is processed. timeout, bad_sign,
// stale_ts and system_error (40004 ACQ.SYSTEM_ERROR "系统异常") are applied
// after it was processed — the state changed and only the answer is lost or
// untrustworthy, the case a client must survive by asking again. Alipay
// responses carry no timestamp, so stale_ts answers the node without "sign"
// (the SDK then returns an error); bad_sign carries a valid-looking
// signature over other bytes.
package alisim

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// Layouts and limits of the Alipay gateway.
const (
	aliTimeLayout   = "2006-01-02 15:04:05"
	aliTimestampTol = 15 * time.Minute // request timestamp vs the gateway clock
	aliQRLife       = 2 * time.Hour    // an unscanned precreate QR code's life
	aliCancelWindow = 24 * time.Hour   // alipay.trade.cancel only works this long
	aliMaxBody      = 1 << 20
	aliMaxYuanFen   = payment.Fen(100000000 * 100)
	aliSellerID     = "2088102146225135"
	aliSellerEmail  = "kio***@sandbox.example"
	aliQRAlphabet   = "0123456789abcdefghijklmnopqrstuvwxyz" // of the qr_code token
)

// The methods the gateway serves, each run with a.mu held; the stats name
// of each is the method.
var aliMethods = map[string]func(*Sim, aliRequest) []aliField{
	"alipay.trade.precreate":            (*Sim).precreate,
	"alipay.trade.query":                (*Sim).query,
	"alipay.trade.close":                (*Sim).close,
	"alipay.trade.cancel":               (*Sim).cancel,
	"alipay.trade.refund":               (*Sim).refund,
	"alipay.trade.fastpay.refund.query": (*Sim).refundQuery,
}

// Order states. The first three are simulator-side: no Alipay trade exists
// in them, so query and close answer ACQ.TRADE_NOT_EXIST.
const (
	aliPrecreated  = "PRECREATED"     // QR issued, not scanned
	aliQRExpired   = "QR_EXPIRED"     // unscanned QR past its life / time_expire
	aliQRCancelled = "QR_CANCELLED"   // cancelled before any scan: number burned
	aliWaiting     = "WAIT_BUYER_PAY" // scanned: the trade exists
	aliSuccess     = "TRADE_SUCCESS"
	aliFinished    = "TRADE_FINISHED" // paid, refund window over
	aliClosed      = "TRADE_CLOSED"
)

type aliRefund struct {
	outRequestNo string
	amount       payment.Fen
	reason       string
	at           time.Time
	byCancel     bool // made by alipay.trade.cancel of a paid trade
}

type aliOrder struct {
	outTradeNo string
	subject    string
	body       string
	// terms: Amount is the provider-side order total (total_amount); the
	// discount is set when the trade is paid.
	terms          paysim.Payment
	notifyURL      string
	timeExpire     time.Time // zero when absent
	timeoutExpress string    // "" when absent; counts from the scan
	fingerprint    string    // the precreate parameters that must match on a repeat
	qrCode         string
	createdAt      time.Time

	state        string
	tradeNo      string
	buyerID      string
	buyerLogonID string
	scannedAt    time.Time
	expireAt     time.Time // when the current state times out (zero: never)
	voucherID    string
	paidAt       time.Time
	closedAt     time.Time // TRADE_CLOSED or TRADE_FINISHED
	refunds      []*aliRefund
	refunded     payment.Fen
	stopTimer    func() // cancels the pending expiry; nil when none
}

func (o *aliOrder) hasTrade() bool {
	return o.state == aliWaiting || o.state == aliSuccess || o.state == aliFinished || o.state == aliClosed
}

func (o *aliOrder) wasPaid() bool { return !o.paidAt.IsZero() }

// fundBills are the fund_bill_list entries: k is the channel's key
// ("fund_channel" in answers, "fundChannel" in notifications).
func (o *aliOrder) fundBills(k string) [][]aliField {
	t := o.terms
	bills := [][]aliField{{{k: "amount", v: t.Paid().Yuan()}, {k: k, v: "ALIPAYACCOUNT"}}}
	if t.Discount > 0 {
		ch := "DISCOUNT"
		if t.DiscountBy == paysim.DiscountMerchant {
			ch = "MDISCOUNT"
		}
		bills = append(bills, []aliField{{k: "amount", v: t.Discount.Yuan()}, {k: k, v: ch}})
	}
	return bills
}

// vouchers are the voucher_detail_list entries, snake_case for answers,
// camelCase (as the notification sample) for notifications.
func (o *aliOrder) vouchers(camel bool) [][]aliField {
	d := o.terms.Discount
	if d == 0 {
		return nil
	}
	merchant, other := "0.00", d.Yuan()
	name := "支付宝立减券"
	if o.terms.DiscountBy == paysim.DiscountMerchant {
		merchant, other, name = d.Yuan(), "0.00", "商家代金券"
	}
	if camel {
		return [][]aliField{{{k: "amount", v: d.Yuan()}, {k: "merchantContribute", v: merchant}, {k: "name", v: name},
			{k: "otherContribute", v: other}, {k: "type", v: "ALIPAY_FIX_VOUCHER"}, {k: "voucherId", v: o.voucherID}}}
	}
	return [][]aliField{{{k: "id", v: o.voucherID}, {k: "name", v: name}, {k: "type", v: "ALIPAY_FIX_VOUCHER"},
		{k: "amount", v: d.Yuan()}, {k: "merchant_contribute", v: merchant}, {k: "other_contribute", v: other}}}
}

// Sim simulates the Alipay OpenAPI gateway for one application
// (Keys.AlipayAppID). Business times (expiry, trade times) follow the
// Server's clock; the request timestamp check uses the wall clock, because
// the SDK signs with it.
type Sim struct {
	s *paysim.Server

	mu     sync.Mutex
	byNo   map[string]*aliOrder
	burned map[string]bool // out_trade_nos cancelled before any precreate
}

// Register adds an Alipay simulator for s's application to s and returns it.
func Register(s *paysim.Server) *Sim {
	a := &Sim{s: s, byNo: map[string]*aliOrder{}, burned: map[string]bool{}}
	s.Register(a)
	return a
}

// Name is payment.Alipay.
func (a *Sim) Name() payment.ProviderName { return payment.Alipay }

// Pattern is where the gateway is served.
func (a *Sim) Pattern() string { return "POST /gateway.do" }

// aliField is one member of a response node; nodes are written by hand so
// that field order and escaping are fixed and the signed bytes are exactly
// the bytes sent. A raw value is JSON written as is (a list of objects).
type aliField struct {
	k, v string
	raw  bool
}

// aliList is a raw field holding a JSON array of objects.
func aliList(k string, objs [][]aliField) aliField {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, o := range objs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(aliJSON(o))
	}
	b.WriteByte(']')
	return aliField{k: k, v: b.String(), raw: true}
}

type aliReply struct {
	node     string // "alipay_trade_query_response" or "error_response"
	fields   []aliField
	unsigned bool
}

// aliJSON renders fields as a JSON object of strings, escaping "/" as "\/"
// the way Alipay's gateway does: a client that re-encodes the node before
// verifying it fails here as it would in production.
func aliJSON(fields []aliField) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.k)
		b.Write(k)
		b.WriteByte(':')
		if f.raw {
			b.WriteString(f.v)
			continue
		}
		v, _ := json.Marshal(f.v)
		b.Write(bytes.ReplaceAll(v, []byte("/"), []byte(`\/`)))
	}
	b.WriteByte('}')
	return b.Bytes()
}

func aliOK(fields ...aliField) []aliField {
	return append([]aliField{{k: "code", v: "10000"}, {k: "msg", v: "Success"}}, fields...)
}

// aliBizFail is a 40004 business failure, optionally echoing fields.
func aliBizFail(subCode, subMsg string, fields ...aliField) []aliField {
	return append([]aliField{{k: "code", v: "40004"}, {k: "msg", v: "Business Failed"}, {k: "sub_code", v: subCode}, {k: "sub_msg", v: subMsg}}, fields...)
}

func aliGatewayErr(code, subCode, subMsg string) []aliField {
	msg := map[string]string{
		"20000": "Service Currently Unavailable",
		"40001": "Missing Required Arguments",
		"40002": "Invalid Arguments",
		"40005": "Call Limited",
	}[code]
	return []aliField{{k: "code", v: code}, {k: "msg", v: msg}, {k: "sub_code", v: subCode}, {k: "sub_msg", v: subMsg}}
}

// sign is Alipay's RSA2 signature of b with the platform key.
func (a *Sim) sign(b []byte) string { return paysim.SignSHA256(a.s.Keys().AlipayPlatform, b) }

func (a *Sim) write(w http.ResponseWriter, rep aliReply, fault paysim.FaultKind) {
	inner := aliJSON(rep.fields)
	var b bytes.Buffer
	b.WriteString(`{"` + rep.node + `":`)
	b.Write(inner)
	switch {
	case rep.unsigned || fault == paysim.FaultStaleTS:
		// Alipay responses carry no timestamp, so "stale" is modelled as
		// the one freshness failure this wire has: a node without sign,
		// which the SDK turns into an error.
	case fault == paysim.FaultBadSign:
		b.WriteString(`,"sign":"` + a.sign(append(inner, ' ')) + `"`)
	default:
		b.WriteString(`,"sign":"` + a.sign(inner) + `"`)
	}
	b.WriteByte('}')
	// The real gateway labels its JSON text/html; clients must not care.
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// ServeHTTP serves the gateway: every call is counted; a fault answers in
// its place or after it ran, as its kind says (see the package doc).
func (a *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, aliMaxBody)
	parseErr := r.ParseForm()
	method := r.Form.Get("method")
	api := method
	if aliMethods[method] == nil {
		api = "alipay.other"
	}
	a.s.Count(api)
	fault := a.s.TakeFault(payment.Alipay, api)
	switch fault {
	case paysim.Fault5xx:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
		return
	case paysim.FaultRateLimit, paysim.FaultUnavailable:
		// Refused before any processing, like the real limiter, or by a
		// business system that is down.
		node := "error_response"
		if aliMethods[method] != nil {
			node = strings.ReplaceAll(method, ".", "_") + "_response"
		}
		fields := aliGatewayErr("40005", "aop.ACQ.CALL_LIMITED", "调用频次超限")
		if fault == paysim.FaultUnavailable {
			fields = aliGatewayErr("20000", "isp.unknow-error", "系统繁忙")
		}
		a.s.Logger().Debug("alipay fault", "api", api, "fault", fault)
		a.write(w, aliReply{node: node, fields: fields}, "")
		return
	}
	var rep aliReply
	if parseErr != nil {
		rep = aliReply{node: "error_response", fields: aliGatewayErr("40002", "isv.invalid-parameter", "请求参数无法解析"), unsigned: true}
	} else {
		rep = a.handle(r.Form)
	}
	if fault == paysim.FaultSystemError && aliMethods[method] != nil {
		// Processed; the answer says the outcome is unknown.
		rep.unsigned = false
		rep.fields = aliBizFail("ACQ.SYSTEM_ERROR", "系统异常")
		if method == "alipay.trade.cancel" {
			rep.fields = append(rep.fields, aliField{k: "retry_flag", v: "Y"})
		}
	}
	a.s.Logger().Debug("alipay call", "api", api, "code", rep.fields[0].v, "fault", fault)
	if fault == paysim.FaultTimeout {
		// The call took effect; only the answer is lost.
		a.s.Hold(r)
	}
	a.write(w, rep, fault)
}

// handle checks the public parameters and the signature, then runs the
// method. Replies are signed unless the app is unknown (Alipay cannot pick
// a key for it) or the method cannot be named.
func (a *Sim) handle(form url.Values) aliReply {
	method := form.Get("method")
	if method == "" {
		return aliReply{node: "error_response", fields: aliGatewayErr("40001", "isv.missing-method", "缺少方法名参数"), unsigned: true}
	}
	run := aliMethods[method]
	if run == nil {
		return aliReply{node: "error_response", fields: aliGatewayErr("40002", "isv.invalid-method", "不存在的方法名"), unsigned: true}
	}
	node := strings.ReplaceAll(method, ".", "_") + "_response"
	fail := func(code, sub, msg string) aliReply {
		return aliReply{node: node, fields: aliGatewayErr(code, sub, msg)}
	}
	switch appID := form.Get("app_id"); {
	case appID == "":
		return aliReply{node: node, fields: aliGatewayErr("40001", "isv.missing-app-id", "缺少AppID参数"), unsigned: true}
	case appID != a.s.Keys().AlipayAppID:
		return aliReply{node: node, fields: aliGatewayErr("40002", "isv.invalid-app-id", "无效的AppID参数"), unsigned: true}
	}
	for k, vs := range form {
		if len(vs) > 1 {
			return fail("40002", "isv.invalid-parameter", "参数"+k+"重复")
		}
	}
	if c := form.Get("charset"); c != "" && !strings.EqualFold(c, "utf-8") {
		return fail("40002", "isv.invalid-charset", "字符集错误: 模拟器只接受utf-8")
	}
	if f := form.Get("format"); f != "" && !strings.EqualFold(f, "JSON") {
		return fail("40002", "isv.invalid-format", "参数format无效")
	}
	// The required public parameters, in the order the gateway checks them:
	// a missing one is a 40001, a bad one (check's sub_code and sub_msg) a
	// 40002.
	for _, p := range []struct {
		key, missingSub, missingMsg string
		check                       func(string) (sub, msg string)
	}{
		{"sign_type", "isv.missing-signature-type", "缺少签名类型参数", func(v string) (string, string) {
			if v != "RSA2" {
				return "isv.invalid-signature-type", "无效签名类型"
			}
			return "", ""
		}},
		{"sign", "isv.missing-signature", "缺少签名参数", nil},
		{"timestamp", "isv.missing-timestamp", "缺少时间戳参数", func(v string) (string, string) {
			t, err := time.ParseInLocation(aliTimeLayout, v, payment.Beijing)
			if err != nil {
				return "isv.invalid-timestamp", "非法的时间戳参数"
			}
			if d := time.Since(t); d > aliTimestampTol || d < -aliTimestampTol {
				return "isv.invalid-timestamp", "非法的时间戳参数: 与网关时间相差超过15分钟"
			}
			return "", ""
		}},
		{"version", "isv.missing-version", "缺少版本参数", func(v string) (string, string) {
			if v != "1.0" {
				return "isv.invalid-parameter", "无效的版本参数"
			}
			return "", ""
		}},
	} {
		v := form.Get(p.key)
		if v == "" {
			return fail("40001", p.missingSub, p.missingMsg)
		}
		if p.check == nil {
			continue
		}
		if sub, msg := p.check(v); sub != "" {
			return fail("40002", sub, msg)
		}
	}
	if content, ok := a.verifyRequest(form); !ok {
		return fail("40002", "isv.invalid-signature",
			"验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为："+strings.ReplaceAll(content, "&", "&amp;"))
	}
	biz := map[string]json.RawMessage{}
	if bc := form.Get("biz_content"); bc != "" {
		if err := json.Unmarshal([]byte(bc), &biz); err != nil || biz == nil {
			return fail("40002", "isv.invalid-parameter", "biz_content不是合法的JSON对象")
		}
	}
	req := aliRequest{biz: biz, form: form}
	a.mu.Lock()
	defer a.mu.Unlock()
	return aliReply{node: node, fields: run(a, req)}
}

// aliSignContent is what a request signature covers: every parameter except
// sign (sign_type included), as raw k=v pairs sorted as strings, joined by &.
func aliSignContent(form url.Values, ignore ...string) string {
	var pairs []string
	for k, vs := range form {
		skip := false
		for _, ig := range ignore {
			skip = skip || k == ig
		}
		if skip {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, k+"="+v)
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

func (a *Sim) verifyRequest(form url.Values) (string, bool) {
	content := aliSignContent(form, "sign")
	return content, paysim.VerifySHA256(&a.s.Keys().AlipayApp.PublicKey, []byte(content), form.Get("sign")) == nil
}

// aliRequest is a verified request's parameters.
type aliRequest struct {
	biz  map[string]json.RawMessage
	form url.Values
}

var errAliNotString = errors.New("not a string")

// str returns a biz_content field. "" and null count as absent, as Alipay
// treats the empty strings the SDK always sends ("trade_no":"",
// "discountable_amount":""). A number is taken as its literal text (the
// gateway's JSON parser is lenient about that); anything else is an error.
func (r aliRequest) str(key string) (string, error) {
	raw, ok := r.biz[key]
	if !ok {
		return "", nil
	}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errAliNotString
		}
		return s, nil
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		return string(raw), nil
	}
	return "", errAliNotString
}

// strList reads an array of strings (query_options) as a set.
func (r aliRequest) strList(key string) (map[string]bool, []aliField) {
	raw, ok := r.biz[key]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: "+key+"格式错误")
	}
	set := make(map[string]bool, len(list))
	for _, v := range list {
		set[v] = true
	}
	return set, nil
}

// strs reads several fields; the first bad one is reported.
func (r aliRequest) strs(keys ...string) ([]string, []aliField) {
	out := make([]string, len(keys))
	for i, k := range keys {
		v, err := r.str(k)
		if err != nil {
			return nil, aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: "+k+"格式错误")
		}
		out[i] = v
	}
	return out, nil
}

var (
	aliOutTradeNoRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
	aliYuanRE       = regexp.MustCompile(`^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$`)
	aliTimeoutRE    = regexp.MustCompile(`^([1-9][0-9]*)([mhd])$`)
)

// aliParseYuan parses an Alipay amount: yuan with at most two decimals.
func aliParseYuan(s string) (payment.Fen, bool) {
	if !aliYuanRE.MatchString(s) {
		return 0, false
	}
	f, err := payment.ParseYuan(s)
	return f, err == nil
}

func aliParseTimeoutExpress(s string) (time.Duration, bool) {
	if s == "1c" {
		return 0, true // today: handled by the caller
	}
	m := aliTimeoutRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, false
	}
	d := time.Duration(n) * map[string]time.Duration{"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	return d, d >= time.Minute && d <= 15*24*time.Hour
}

// aliCheckNotifyURL applies the simulator's notify_url rule: https, or http
// to a loopback host (a documented test deviation), at most 256 bytes and
// without a query string (its parameters would enter the notify signature).
func aliCheckNotifyURL(s string) error {
	if len(s) > 256 {
		return errors.New("notify_url超过256个字符")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return errors.New("notify_url不是合法的URL")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return errors.New("notify_url不能带参数")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if paysim.LoopbackHost(u.Hostname()) {
			return nil
		}
	}
	return errors.New("notify_url必须是https地址")
}

func aliFmt(t time.Time) string { return t.In(payment.Beijing).Format(aliTimeLayout) }

// advance applies time to o: unscanned QR codes expire, waiting trades
// close at their deadline (sending TRADE_CLOSED), paid trades finish when
// their refund window ends (sending TRADE_FINISHED). Callers hold a.mu.
func (a *Sim) advance(o *aliOrder, now time.Time) {
	if o.expireAt.IsZero() || now.Before(o.expireAt) {
		return
	}
	switch o.state {
	case aliPrecreated:
		o.state = aliQRExpired
	case aliWaiting:
		o.state = aliClosed
		o.closedAt = o.expireAt
		a.notify(o, nil)
	case aliSuccess:
		o.state = aliFinished
		o.closedAt = o.expireAt
		a.notify(o, nil)
	default:
		return
	}
	o.expireAt = time.Time{}
}

// schedule makes o's expiry happen on time (with its notification) even if
// nobody asks about the order. Callers hold a.mu.
func (a *Sim) schedule(o *aliOrder) {
	if o.stopTimer != nil {
		o.stopTimer()
		o.stopTimer = nil
	}
	if o.expireAt.IsZero() {
		return
	}
	o.stopTimer = a.s.After(time.Until(o.expireAt)+10*time.Millisecond, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.advance(o, a.s.Now())
	})
}

func (a *Sim) lookup(r aliRequest) (*aliOrder, string, []aliField) {
	v, bad := r.strs("out_trade_no", "trade_no")
	if bad != nil {
		return nil, "", bad
	}
	no, tradeNo := v[0], v[1]
	if no == "" && tradeNo == "" {
		return nil, "", aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no和trade_no不能同时为空")
	}
	now := a.s.Now()
	if no != "" {
		o := a.byNo[no]
		if o != nil {
			a.advance(o, now)
			if tradeNo != "" && o.tradeNo != tradeNo {
				return nil, no, nil
			}
		}
		return o, no, nil
	}
	for _, o := range a.byNo {
		if o.tradeNo == tradeNo {
			a.advance(o, now)
			return o, o.outTradeNo, nil
		}
	}
	return nil, "", nil
}

func (a *Sim) precreate(r aliRequest) []aliField {
	v, bad := r.strs("out_trade_no", "total_amount", "subject", "product_code", "body", "time_expire", "timeout_express", "discountable_amount", "undiscountable_amount")
	if bad != nil {
		return bad
	}
	no, amount, subject, product, body, timeExpire, timeoutExpress := v[0], v[1], v[2], v[3], v[4], v[5], v[6]
	invalid := func(msg string) []aliField {
		return aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: "+msg, aliField{k: "out_trade_no", v: no})
	}
	if no == "" || amount == "" || subject == "" {
		return aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: 缺少out_trade_no、total_amount或subject")
	}
	if !aliOutTradeNoRE.MatchString(no) {
		return invalid("out_trade_no只能包含字母、数字、下划线，最长64位")
	}
	total, ok := aliParseYuan(amount)
	if !ok || total < 1 {
		return invalid("total_amount必须是[0.01,100000000]之间最多两位小数的金额")
	}
	if total > aliMaxYuanFen {
		return aliBizFail("ACQ.TOTAL_FEE_EXCEED", "订单金额超过限额", aliField{k: "out_trade_no", v: no})
	}
	for _, k := range []string{"discountable_amount", "undiscountable_amount"} {
		s, _ := r.str(k)
		if s == "" {
			continue
		}
		if f, ok := aliParseYuan(s); !ok || f > total {
			return invalid(k + "格式错误或超过订单金额")
		}
	}
	if !utf8.ValidString(subject) || utf8.RuneCountInString(subject) > 256 || strings.ContainsAny(subject, "/=&") {
		return invalid("subject最长256个字符，不能包含/、=、&等特殊字符")
	}
	if utf8.RuneCountInString(body) > 128 {
		return invalid("body最长128个字符")
	}
	if product != "" && product != "FACE_TO_FACE_PAYMENT" {
		return aliBizFail("ACQ.ACCESS_FORBIDDEN", "产品码"+product+"未签约", aliField{k: "out_trade_no", v: no})
	}
	now := a.s.Now()
	var expire time.Time
	if timeExpire != "" {
		t, err := time.ParseInLocation(aliTimeLayout, timeExpire, payment.Beijing)
		if err != nil {
			return invalid("time_expire格式必须为yyyy-MM-dd HH:mm:ss")
		}
		expire = t
	}
	if timeoutExpress != "" {
		if _, ok := aliParseTimeoutExpress(timeoutExpress); !ok {
			return invalid("timeout_express取值范围1m～15d或1c，不接受小数")
		}
	}
	notifyURL := r.form.Get("notify_url")
	if notifyURL != "" {
		if err := aliCheckNotifyURL(notifyURL); err != nil {
			return invalid(err.Error())
		}
	}
	fp := strings.Join([]string{total.Yuan(), subject, body, timeExpire, timeoutExpress}, "\x00")
	if a.burned[no] {
		return aliBizFail("ACQ.TRADE_HAS_CLOSE", "交易已经关闭", aliField{k: "out_trade_no", v: no})
	}
	if o := a.byNo[no]; o != nil {
		a.advance(o, now)
		switch o.state {
		case aliSuccess:
			return aliBizFail("ACQ.TRADE_HAS_SUCCESS", "交易已被支付", aliField{k: "out_trade_no", v: no})
		case aliClosed, aliQRExpired, aliQRCancelled:
			return aliBizFail("ACQ.TRADE_HAS_CLOSE", "交易已经关闭", aliField{k: "out_trade_no", v: no})
		}
		if o.fingerprint != fp {
			return aliBizFail("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改", aliField{k: "out_trade_no", v: no})
		}
		return aliOK(aliField{k: "out_trade_no", v: no}, aliField{k: "qr_code", v: o.qrCode})
	}
	if !expire.IsZero() && !expire.After(now) {
		return invalid("time_expire不能早于当前时间")
	}
	o := &aliOrder{
		outTradeNo: no, subject: subject, body: body, terms: paysim.Payment{Amount: total}, notifyURL: notifyURL,
		timeExpire: expire, timeoutExpress: timeoutExpress, fingerprint: fp,
		createdAt: now, state: aliPrecreated, expireAt: now.Add(aliQRLife),
	}
	if !expire.IsZero() && expire.Before(o.expireAt) {
		o.expireAt = expire
	}
	for {
		o.qrCode = "https://qr.alipay.com/bax0" + paysim.RandomString(aliQRAlphabet, 20)
		dup := false
		for _, other := range a.byNo {
			dup = dup || other.qrCode == o.qrCode
		}
		if !dup {
			break
		}
	}
	a.byNo[no] = o
	a.schedule(o)
	return aliOK(aliField{k: "out_trade_no", v: no}, aliField{k: "qr_code", v: o.qrCode})
}

// queryFields is the trade query answer for an existing trade; options are
// the request's query_options.
func (a *Sim) queryFields(o *aliOrder, options map[string]bool) []aliField {
	const zero = "0.00"
	buyer, receipt := zero, zero
	filled := o.wasPaid() && !a.s.Realism().AlipayZeroQueryAmounts
	if filled {
		buyer, receipt = o.terms.Paid().Yuan(), o.terms.Received().Yuan()
	}
	f := aliOK(
		aliField{k: "trade_no", v: o.tradeNo},
		aliField{k: "out_trade_no", v: o.outTradeNo},
		aliField{k: "buyer_logon_id", v: o.buyerLogonID},
		aliField{k: "trade_status", v: o.state},
		aliField{k: "total_amount", v: o.terms.Amount.Yuan()},
		aliField{k: "buyer_pay_amount", v: buyer},
		aliField{k: "point_amount", v: zero},
		aliField{k: "invoice_amount", v: buyer},
		aliField{k: "receipt_amount", v: receipt},
	)
	if o.wasPaid() {
		f = append(f, aliField{k: "send_pay_date", v: aliFmt(o.paidAt)})
		if filled || options["fund_bill_list"] {
			f = append(f, aliList("fund_bill_list", o.fundBills("fund_channel")))
		}
		if options["voucher_detail_list"] && o.terms.Discount > 0 {
			f = append(f, aliList("voucher_detail_list", o.vouchers(false)))
		}
		if options["mdiscount_amount"] && o.terms.DiscountBy == paysim.DiscountMerchant {
			f = append(f, aliField{k: "mdiscount_amount", v: o.terms.Discount.Yuan()})
		}
		if options["discount_amount"] && o.terms.DiscountBy == paysim.DiscountPlatform {
			f = append(f, aliField{k: "discount_amount", v: o.terms.Discount.Yuan()})
		}
	}
	return append(f, aliField{k: "buyer_user_id", v: o.buyerID}, aliField{k: "subject", v: o.subject})
}

func aliNotExist(no string) []aliField {
	f := aliBizFail("ACQ.TRADE_NOT_EXIST", "交易不存在")
	if no != "" {
		f = append(f, aliField{k: "out_trade_no", v: no})
	}
	return append(f,
		aliField{k: "buyer_pay_amount", v: "0.00"}, aliField{k: "invoice_amount", v: "0.00"},
		aliField{k: "point_amount", v: "0.00"}, aliField{k: "receipt_amount", v: "0.00"})
}

func (a *Sim) query(r aliRequest) []aliField {
	o, no, bad := a.lookup(r)
	if bad != nil {
		return bad
	}
	if o == nil || !o.hasTrade() {
		return aliNotExist(no)
	}
	options, bad := r.strList("query_options")
	if bad != nil {
		return bad
	}
	return a.queryFields(o, options)
}

func (a *Sim) close(r aliRequest) []aliField {
	o, no, bad := a.lookup(r)
	if bad != nil {
		return bad
	}
	if o == nil || !o.hasTrade() {
		return aliBizFail("ACQ.TRADE_NOT_EXIST", "交易不存在", aliField{k: "out_trade_no", v: no})
	}
	if o.state != aliWaiting {
		return aliBizFail("ACQ.TRADE_STATUS_ERROR", "交易状态不合法", aliField{k: "out_trade_no", v: no}, aliField{k: "trade_no", v: o.tradeNo})
	}
	a.closeTrade(o, a.s.Now(), nil)
	return aliOK(aliField{k: "trade_no", v: o.tradeNo}, aliField{k: "out_trade_no", v: o.outTradeNo})
}

// closeTrade makes o TRADE_CLOSED at at and sends the notification (of
// refund rf, when a refund closed it).
func (a *Sim) closeTrade(o *aliOrder, at time.Time, rf *aliRefund) {
	o.state = aliClosed
	o.closedAt = at
	o.expireAt = time.Time{}
	a.schedule(o)
	a.notify(o, rf)
}

func (a *Sim) cancel(r aliRequest) []aliField {
	o, no, bad := a.lookup(r)
	if bad != nil {
		return bad
	}
	// action only when a trade exists; trade_no only when one was closed
	// or refunded (see the package doc).
	done := func(action string) []aliField {
		return aliOK(aliField{k: "trade_no", v: o.tradeNo}, aliField{k: "out_trade_no", v: no},
			aliField{k: "retry_flag", v: "N"}, aliField{k: "action", v: action})
	}
	noTrade := aliOK(aliField{k: "out_trade_no", v: no}, aliField{k: "retry_flag", v: "N"})
	refused := func(sub, msg string) []aliField {
		return aliBizFail(sub, msg, aliField{k: "out_trade_no", v: no}, aliField{k: "retry_flag", v: "N"})
	}
	if o == nil {
		// Cancelling a number Alipay never saw succeeds and burns it.
		if no != "" {
			a.burned[no] = true
		}
		return noTrade
	}
	if o.hasTrade() && a.s.Now().Sub(o.createdAt) > aliCancelWindow {
		return refused("ACQ.TRADE_CANCEL_TIME_OUT", "超过撤销时间范围")
	}
	switch o.state {
	case aliPrecreated, aliQRExpired, aliQRCancelled:
		o.state = aliQRCancelled
		o.expireAt = time.Time{}
		a.schedule(o)
		return noTrade
	case aliWaiting:
		a.closeTrade(o, a.s.Now(), nil)
		return done("close")
	case aliFinished:
		return refused("ACQ.TRADE_HAS_FINISHED", "交易已完结")
	case aliSuccess:
		if o.refunded > 0 {
			return refused("ACQ.CANCEL_NOT_ALLOWED", "交易已有退款，不能撤销，请使用退款接口")
		}
		a.addRefund(o, &aliRefund{outRequestNo: o.outTradeNo, amount: o.terms.Amount, at: a.s.Now(), byCancel: true})
		return done("refund")
	default: // aliClosed: cancelling again repeats the earlier outcome
		if o.wasPaid() {
			for _, rf := range o.refunds {
				if rf.byCancel {
					return done("refund")
				}
			}
			return refused("ACQ.REASON_TRADE_REFUND_FEE_ERR", "交易已全额退款")
		}
		return done("close")
	}
}

func (a *Sim) refund(r aliRequest) []aliField {
	o, no, bad := a.lookup(r)
	if bad != nil {
		return bad
	}
	v, bad := r.strs("refund_amount", "out_request_no", "refund_reason")
	if bad != nil {
		return bad
	}
	amountStr, reqNo, reason := v[0], v[1], v[2]
	amount, ok := aliParseYuan(amountStr)
	if !ok || amount < 1 {
		return aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: refund_amount格式错误", aliField{k: "out_trade_no", v: no})
	}
	if len(reqNo) > 64 {
		return aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: out_request_no最长64位", aliField{k: "out_trade_no", v: no})
	}
	if o == nil || !o.hasTrade() {
		return aliBizFail("ACQ.TRADE_NOT_EXIST", "交易不存在", aliField{k: "out_trade_no", v: no})
	}
	fullKey := reqNo == ""
	if fullKey {
		reqNo = o.outTradeNo
	}
	resp := func(change string) []aliField {
		return aliOK(
			aliField{k: "trade_no", v: o.tradeNo}, aliField{k: "out_trade_no", v: o.outTradeNo},
			aliField{k: "buyer_logon_id", v: o.buyerLogonID}, aliField{k: "fund_change", v: change},
			aliField{k: "refund_fee", v: o.refunded.Yuan()}, aliField{k: "gmt_refund_pay", v: aliFmt(a.s.Now())},
			aliField{k: "buyer_user_id", v: o.buyerID})
	}
	for _, rf := range o.refunds {
		if rf.outRequestNo == reqNo {
			if rf.amount != amount {
				return aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: 同一退款请求号的退款金额不一致", aliField{k: "out_trade_no", v: no})
			}
			return resp("N")
		}
	}
	if o.state == aliFinished {
		return aliBizFail("ACQ.TRADE_HAS_FINISHED", "交易已完结", aliField{k: "out_trade_no", v: no})
	}
	if o.state != aliSuccess {
		return aliBizFail("ACQ.TRADE_STATUS_ERROR", "交易状态不合法", aliField{k: "out_trade_no", v: no})
	}
	remaining := o.terms.Amount - o.refunded
	if amount > remaining {
		return aliBizFail("ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额超限", aliField{k: "out_trade_no", v: no})
	}
	if fullKey && amount != o.terms.Amount {
		return aliBizFail("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额不等于订单金额，部分退款请传out_request_no", aliField{k: "out_trade_no", v: no})
	}
	a.addRefund(o, &aliRefund{outRequestNo: reqNo, amount: amount, reason: reason, at: a.s.Now()})
	return resp("Y")
}

// addRefund records rf, settled at once as Alipay refunds are, and sends
// its notification; the trade closes when nothing is left to refund.
func (a *Sim) addRefund(o *aliOrder, rf *aliRefund) {
	o.refunds = append(o.refunds, rf)
	o.refunded += rf.amount
	if o.refunded == o.terms.Amount {
		a.closeTrade(o, rf.at, rf)
		return
	}
	a.notify(o, rf)
}

func (a *Sim) refundQuery(r aliRequest) []aliField {
	o, no, bad := a.lookup(r)
	if bad != nil {
		return bad
	}
	v, bad := r.strs("out_request_no")
	if bad != nil {
		return bad
	}
	reqNo := v[0]
	if reqNo == "" {
		return aliBizFail("ACQ.INVALID_PARAMETER", "参数无效: 缺少out_request_no", aliField{k: "out_trade_no", v: no})
	}
	if o == nil || !o.hasTrade() {
		return aliBizFail("ACQ.TRADE_NOT_EXIST", "交易不存在", aliField{k: "out_trade_no", v: no})
	}
	for _, rf := range o.refunds {
		if rf.outRequestNo == reqNo {
			return aliOK(
				aliField{k: "trade_no", v: o.tradeNo}, aliField{k: "out_trade_no", v: o.outTradeNo},
				aliField{k: "out_request_no", v: reqNo}, aliField{k: "total_amount", v: o.terms.Amount.Yuan()},
				aliField{k: "refund_amount", v: rf.amount.Yuan()}, aliField{k: "refund_status", v: "REFUND_SUCCESS"},
				aliField{k: "gmt_refund_pay", v: aliFmt(rf.at)})
		}
	}
	// Not found: success without any refund fields (docs/providers.md A4.6).
	return aliOK()
}

// scanLocked makes the trade exist. Callers hold a.mu.
func (a *Sim) scanLocked(o *aliOrder) error {
	now := a.s.Now()
	a.advance(o, now)
	switch o.state {
	case aliWaiting:
		return nil
	case aliPrecreated:
	case aliQRExpired:
		return fmt.Errorf("alipay order %s: QR code expired", o.outTradeNo)
	default:
		return fmt.Errorf("alipay order %s: cannot scan in state %s", o.outTradeNo, o.state)
	}
	o.state = aliWaiting
	o.scannedAt = now
	o.tradeNo = now.In(payment.Beijing).Format("20060102") + "22001" + paysim.RandomDigits(15)
	o.buyerID = "2088" + paysim.RandomDigits(12)
	o.buyerLogonID = "159****" + paysim.RandomDigits(4)
	o.expireAt = o.timeExpire
	if o.timeoutExpress != "" && o.timeExpire.IsZero() {
		if o.timeoutExpress == "1c" {
			y, m, d := now.In(payment.Beijing).Date()
			o.expireAt = time.Date(y, m, d+1, 0, 0, 0, 0, payment.Beijing)
		} else {
			d, _ := aliParseTimeoutExpress(o.timeoutExpress)
			o.expireAt = now.Add(d)
		}
	}
	a.schedule(o)
	return nil
}

// Scan is the buyer scanning the QR code: the trade now exists
// (WAIT_BUYER_PAY).
func (a *Sim) Scan(outTradeNo string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.byNo[outTradeNo]
	if o == nil {
		return fmt.Errorf("alipay order %s: not precreated: %w", outTradeNo, paysim.ErrNoOrder)
	}
	return a.scanLocked(o)
}

// Pay is the buyer paying (scanning first if need be); p.Amount becomes
// total_amount. The trade stays refundable for the refund window, then
// finishes.
func (a *Sim) Pay(outTradeNo string, p paysim.Payment) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.byNo[outTradeNo]
	if o == nil {
		return fmt.Errorf("alipay order %s: not precreated", outTradeNo)
	}
	p, err := p.Resolve(o.terms.Amount)
	if err != nil {
		return fmt.Errorf("alipay order %s: %w", outTradeNo, err)
	}
	if err := a.scanLocked(o); err != nil {
		return err
	}
	o.state = aliSuccess
	o.terms = p
	if p.Discount > 0 {
		o.voucherID = now8(a.s.Now()) + "0007300" + paysim.RandomDigits(13)
	}
	o.paidAt = a.s.Now()
	o.expireAt = time.Time{}
	if w := a.s.Realism().AlipayRefundWindow; w > 0 {
		o.expireAt = o.paidAt.Add(w)
	}
	a.schedule(o)
	a.s.Logger().Debug("alipay paid", "order", outTradeNo, "total", int64(p.Amount), "discount", int64(p.Discount))
	a.notify(o, nil)
	return nil
}

// now8 is t's date as Alipay puts it at the start of its ids.
func now8(t time.Time) string { return t.In(payment.Beijing).Format("20060102") }

// RefundComplete: Alipay refunds of a paid trade settle synchronously, so
// there is nothing to complete; it only confirms the refund exists.
func (a *Sim) RefundComplete(outRefundNo string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range a.byNo {
		for _, rf := range o.refunds {
			if rf.outRequestNo == outRefundNo {
				return nil
			}
		}
	}
	return fmt.Errorf("alipay refund %s: not found", outRefundNo)
}

// RefundFail refuses: ABNORMAL and CLOSED are WeChat refund states.
func (a *Sim) RefundFail(string, paysim.RefundStatus) error {
	return errors.New("alipay refunds settle synchronously; ABNORMAL and CLOSED are WeChat refund states")
}

// Orders lists the orders (in no particular order).
func (a *Sim) Orders() []paysim.OrderInfo { return paysim.ListOrders(&a.mu, a.byNo, a.s.Now, a.info) }

// info reports o as of now. Callers hold a.mu.
func (a *Sim) info(o *aliOrder, now time.Time) paysim.OrderInfo {
	a.advance(o, now)
	info := paysim.OrderInfo{
		Provider: payment.Alipay, OutTradeNo: o.outTradeNo, State: o.state, Refunded: o.refunded,
		TransactionID: o.tradeNo, NotifyURL: o.notifyURL, CreatedAt: o.createdAt,
	}
	info.SetTerms(o.terms, o.wasPaid())
	for _, rf := range o.refunds {
		info.Refunds = append(info.Refunds, paysim.RefundInfo{OutRefundNo: rf.outRequestNo, Amount: rf.amount, Status: paysim.RefundSuccess})
	}
	return info
}

// notify sends the trade_status_sync notification for o's current state
// (and for refund rf, when set). Callers hold a.mu; the values are captured
// now, and each delivery attempt is signed afresh with the same notify_id.
func (a *Sim) notify(o *aliOrder, rf *aliRefund) {
	if o.notifyURL == "" {
		return
	}
	v := url.Values{}
	set := func(k, val string) {
		if val != "" { // Alipay never sends empty fields
			v.Set(k, val)
		}
	}
	idBytes := make([]byte, 16)
	_, _ = rand.Read(idBytes)
	set("notify_type", "trade_status_sync")
	set("notify_id", "2026"+hex.EncodeToString(idBytes))
	set("app_id", a.s.Keys().AlipayAppID)
	set("auth_app_id", a.s.Keys().AlipayAppID)
	set("charset", "utf-8")
	set("version", "1.0")
	set("trade_no", o.tradeNo)
	set("out_trade_no", o.outTradeNo)
	set("buyer_id", o.buyerID)
	set("buyer_logon_id", o.buyerLogonID)
	set("seller_id", aliSellerID)
	set("seller_email", aliSellerEmail)
	set("trade_status", o.state)
	set("total_amount", o.terms.Amount.Yuan())
	set("subject", o.subject)
	set("body", o.body)
	set("gmt_create", aliFmt(o.scannedAt))
	if o.wasPaid() {
		set("receipt_amount", o.terms.Received().Yuan())
		set("invoice_amount", o.terms.Paid().Yuan())
		set("buyer_pay_amount", o.terms.Paid().Yuan())
		set("point_amount", "0.00")
		set("gmt_payment", aliFmt(o.paidAt))
		set("fund_bill_list", aliList("", o.fundBills("fundChannel")).v)
		if o.terms.Discount > 0 {
			set("voucher_detail_list", aliList("", o.vouchers(true)).v)
		}
	}
	if o.state == aliClosed || o.state == aliFinished {
		set("gmt_close", aliFmt(o.closedAt))
	}
	if rf != nil || o.state == aliFinished {
		set("refund_fee", o.refunded.Yuan())
	}
	if rf != nil {
		set("out_biz_no", rf.outRequestNo)
		set("gmt_refund", aliFmt(rf.at))
	}
	kind := "alipay " + o.state + " " + o.outTradeNo
	target := o.notifyURL
	build := func() (*http.Request, error) {
		form := url.Values{}
		for k, vs := range v {
			form[k] = append([]string(nil), vs...)
		}
		form.Set("notify_time", aliFmt(time.Now()))
		form.Set("sign_type", "RSA2")
		form.Set("sign", a.sign([]byte(aliSignContent(form, "sign", "sign_type"))))
		req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		return req, nil
	}
	a.s.Deliver(kind, target, build, func(resp *http.Response, body []byte) bool {
		return resp.StatusCode == http.StatusOK && string(body) == "success"
	})
}
