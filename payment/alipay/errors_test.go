package alipay

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	sdk "github.com/smartwalle/alipay/v3"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

func platformSign(b []byte) string { return signWith(testKeys.AlipayPlatform, b) }

func signWith(key *rsa.PrivateKey, b []byte) string {
	h := sha256.Sum256(b)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// scripted is a gateway that answers every call with inner as the method's
// node, signed by the platform key unless mangle says otherwise. It covers
// answers paysim has no reason to give (ACQ.SYSTEM_ERROR, 20000…).
func scripted(t *testing.T, inner string, mangle func(node, inner, sign string) string) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		node := strings.ReplaceAll(r.Form.Get("method"), ".", "_") + "_response"
		sign := platformSign([]byte(inner))
		body := fmt.Sprintf(`{%q:%s,"sign":%q}`, node, inner, sign)
		if mangle != nil {
			body = mangle(node, inner, sign)
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{
		AppID:              testKeys.AlipayAppID,
		PrivateKeyPEM:      paysim.PrivatePEM(testKeys.AlipayApp),
		AlipayPublicKeyPEM: paysim.PublicPEM(&testKeys.AlipayPlatform.PublicKey),
		Gateway:            srv.URL + "/gateway.do",
		Timeout:            2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// callAll runs every provider operation that talks to the gateway and
// returns their errors by name.
func callAll(ctx context.Context, c *Client) map[string]error {
	o := payment.Order{OutTradeNo: "T_ERR_1", Total: 100, Subject: "s", ExpireAt: time.Now().Add(time.Minute)}
	_, ec := c.Create(ctx, o)
	_, eq := c.Query(ctx, o.OutTradeNo)
	_, ecl := c.Close(ctx, o.OutTradeNo)
	_, er := c.Refund(ctx, payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: "R1", Total: 100, Refund: 100})
	_, erq := c.QueryRefund(ctx, o.OutTradeNo, "R1")
	return map[string]error{"create": ec, "query": eq, "close": ecl, "refund": er, "query_refund": erq}
}

func bizErr(code, sub string) string {
	return fmt.Sprintf(`{"code":%q,"msg":"m","sub_code":%q,"sub_msg":"sm","out_trade_no":"T_ERR_1"}`, code, sub)
}

func TestErrorCodeMapping(t *testing.T) {
	type want struct {
		rejected string // code of the RejectedError; "" = unknown outcome
		rate     bool
	}
	for _, tc := range []struct {
		name  string
		inner string
		want  want
		ops   []string // default: all
	}{
		{"system error", bizErr("40004", "ACQ.SYSTEM_ERROR"), want{}, nil},
		{"service unavailable", bizErr("20000", "isp.unknow-error"), want{}, nil},
		{"rate limited", bizErr("40005", "aop.ACQ.CALL_LIMITED"), want{rate: true}, nil},
		{"empty code", `{"msg":"?"}`, want{}, nil},
		{"barcode in process", bizErr("10003", ""), want{}, nil},
		{"invalid signature", bizErr("40002", "isv.invalid-signature"), want{rejected: "isv.invalid-signature"}, nil},
		{"invalid timestamp", bizErr("40002", "isv.invalid-timestamp"), want{rejected: "isv.invalid-timestamp"}, nil},
		{"missing param", bizErr("40001", ""), want{rejected: "40001"}, nil},
		{"permission", bizErr("40006", "isv.insufficient-isv-permissions"), want{rejected: "isv.insufficient-isv-permissions"}, nil},
		{"invalid parameter", bizErr("40004", "ACQ.INVALID_PARAMETER"), want{rejected: "ACQ.INVALID_PARAMETER"}, nil},
		{"context inconsistent", bizErr("40004", "ACQ.CONTEXT_INCONSISTENT"), want{rejected: "ACQ.CONTEXT_INCONSISTENT"}, []string{"create"}},
		{"has success", bizErr("40004", "ACQ.TRADE_HAS_SUCCESS"), want{rejected: "ACQ.TRADE_HAS_SUCCESS"}, []string{"create"}},
		{"has close", bizErr("40004", "ACQ.TRADE_HAS_CLOSE"), want{rejected: "ACQ.TRADE_HAS_CLOSE"}, []string{"create"}},
		{"total fee exceed", bizErr("40004", "ACQ.TOTAL_FEE_EXCEED"), want{rejected: "ACQ.TOTAL_FEE_EXCEED"}, []string{"create"}},
		{"access forbidden", bizErr("40004", "ACQ.ACCESS_FORBIDDEN"), want{rejected: "ACQ.ACCESS_FORBIDDEN"}, nil},
		{"refund fee err", bizErr("40004", "ACQ.REASON_TRADE_REFUND_FEE_ERR"), want{rejected: "ACQ.REASON_TRADE_REFUND_FEE_ERR"}, []string{"refund"}},
		{"balance", bizErr("40004", "ACQ.SELLER_BALANCE_NOT_ENOUGH"), want{rejected: "ACQ.SELLER_BALANCE_NOT_ENOUGH"}, []string{"refund"}},
		{"not exist", bizErr("40004", "ACQ.TRADE_NOT_EXIST"), want{rejected: "ACQ.TRADE_NOT_EXIST"}, []string{"create", "refund"}},
		{"cancel time out", bizErr("40004", "ACQ.TRADE_CANCEL_TIME_OUT"), want{rejected: "ACQ.TRADE_CANCEL_TIME_OUT"}, []string{"close"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := scripted(t, tc.inner, nil)
			errs := callAll(ctxT(t), c)
			ops := tc.ops
			if ops == nil {
				ops = []string{"create", "query", "close", "refund", "query_refund"}
			}
			for _, op := range ops {
				err := errs[op]
				switch {
				case err == nil:
					t.Errorf("%s: nil error", op)
				case tc.want.rejected != "":
					if !payment.IsRejected(err, tc.want.rejected) {
						t.Errorf("%s: %v, want rejected %s", op, err, tc.want.rejected)
					}
				default:
					if !payment.IsUnknown(err) {
						t.Errorf("%s: %v, want unknown outcome", op, err)
					}
					if errors.Is(err, payment.ErrRateLimited) != tc.want.rate {
						t.Errorf("%s: %v, rate limited = %v, want %v", op, err, !tc.want.rate, tc.want.rate)
					}
				}
			}
		})
	}
}

// TRADE_NOT_EXIST is a definite answer for query and refund query: no trade,
// so not paid and no refund.
func TestTradeNotExistIsDefinite(t *testing.T) {
	c := scripted(t, bizErr("40004", "ACQ.TRADE_NOT_EXIST"), nil)
	ctx := ctxT(t)
	if st, err := c.Query(ctx, "T_ERR_1"); err != nil || st.State != payment.StateNotCreated {
		t.Fatalf("Query: %+v %v", st, err)
	}
	if rs, err := c.QueryRefund(ctx, "T_ERR_1", "R1"); err != nil || rs.State != payment.RefundNotFound {
		t.Fatalf("QueryRefund: %+v %v", rs, err)
	}
}

// Answers that cannot be trusted must never read as "not paid".
func TestUntrustedAnswersAreUnknown(t *testing.T) {
	paidInner := `{"code":"10000","msg":"Success","trade_no":"2026","out_trade_no":"T_ERR_1","trade_status":"TRADE_SUCCESS","total_amount":"1.00","receipt_amount":"1.00","send_pay_date":"2026-01-01 10:00:00"}`
	notExist := bizErr("40004", "ACQ.TRADE_NOT_EXIST")
	for _, tc := range []struct {
		name   string
		inner  string
		mangle func(node, inner, sign string) string
	}{
		{"tampered node", notExist, func(node, inner, sign string) string {
			return fmt.Sprintf(`{%q:%s,"sign":%q}`, node, strings.Replace(inner, "40004", "10000", 1), sign)
		}},
		{"tampered amount", paidInner, func(node, inner, sign string) string {
			return fmt.Sprintf(`{%q:%s,"sign":%q}`, node, strings.ReplaceAll(inner, "1.00", "9.00"), sign)
		}},
		{"re-encoded node", paidInner, func(node, inner, sign string) string {
			return fmt.Sprintf(`{%q:%s,"sign":%q}`, node, strings.ReplaceAll(inner, ",", ", "), sign)
		}},
		{"missing sign", notExist, func(node, inner, sign string) string { return fmt.Sprintf(`{%q:%s}`, node, inner) }},
		{"missing sign success", paidInner, func(node, inner, sign string) string { return fmt.Sprintf(`{%q:%s}`, node, inner) }},
		{"garbage sign", notExist, func(node, inner, sign string) string { return fmt.Sprintf(`{%q:%s,"sign":"!!"}`, node, inner) }},
		{"error_response", notExist, func(node, inner, sign string) string { return fmt.Sprintf(`{"error_response":%s}`, inner) }},
		{"no node", notExist, func(node, inner, sign string) string { return `{"sign":"x"}` }},
		{"html", notExist, func(node, inner, sign string) string { return `<html>502</html>` }},
		{"empty", notExist, func(node, inner, sign string) string { return `` }},
		{"cert sn", notExist, func(node, inner, sign string) string {
			return fmt.Sprintf(`{%q:%s,"sign":%q,"alipay_cert_sn":"deadbeef"}`, node, inner, sign)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := scripted(t, tc.inner, tc.mangle)
			for op, err := range callAll(ctxT(t), c) {
				if !payment.IsUnknown(err) {
					t.Errorf("%s: %v, want unknown outcome", op, err)
				}
			}
		})
	}
}

func TestSimFaultsAreUnknown(t *testing.T) {
	e := newEnv(t, withTimeout(300*time.Millisecond))
	ctx := ctxT(t)
	o := newOrder(t, 100)
	mustCreate(t, e, o)
	for _, kind := range []paysim.FaultKind{paysim.Fault5xx, paysim.FaultTimeout, paysim.FaultBadSign, paysim.FaultStaleTS, paysim.FaultRateLimit} {
		t.Run(string(kind), func(t *testing.T) {
			if err := e.sim.InjectFault(paysim.Fault{Provider: payment.Alipay, Kind: kind, Count: 5}); err != nil {
				t.Fatal(err)
			}
			defer e.sim.ClearFaults()
			start := time.Now()
			_, err := e.client.Query(ctx, o.OutTradeNo)
			if !payment.IsUnknown(err) {
				t.Fatalf("query under %s: %v, want unknown (never not-paid)", kind, err)
			}
			if kind == paysim.FaultRateLimit && !errors.Is(err, payment.ErrRateLimited) {
				t.Fatalf("rate limit: %v, want ErrRateLimited", err)
			}
			if kind == paysim.FaultTimeout && time.Since(start) > 3*time.Second {
				t.Fatalf("timeout took %v; the client Timeout must bound it", time.Since(start))
			}
			_, err = e.client.Create(ctx, o)
			if !payment.IsUnknown(err) {
				t.Fatalf("create under %s: %v, want unknown", kind, err)
			}
			rs, err := e.client.QueryRefund(ctx, o.OutTradeNo, "R")
			if !payment.IsUnknown(err) {
				t.Fatalf("query refund under %s: %+v %v, want unknown (never not-found)", kind, rs, err)
			}
		})
	}
	// Once the faults clear the same client works again.
	if st := mustQuery(t, e, o.OutTradeNo); st.State != payment.StateNotCreated {
		t.Fatalf("after faults: %+v", st)
	}
}

// A close whose answer is lost still happened; closing again must succeed.
func TestCloseRetriedAfterLostAnswer(t *testing.T) {
	e := newEnv(t, withTimeout(300*time.Millisecond))
	ctx := ctxT(t)
	o := newOrder(t, 100)
	mustCreate(t, e, o)
	_ = e.sim.Scan(o.OutTradeNo)
	_ = e.sim.InjectFault(paysim.Fault{Provider: payment.Alipay, API: "trade.close", Kind: paysim.FaultBadSign, Count: 1})
	if _, err := e.client.Close(ctx, o.OutTradeNo); !payment.IsUnknown(err) {
		t.Fatalf("Close under bad_sign: %v, want unknown", err)
	}
	if cl, err := e.client.Close(ctx, o.OutTradeNo); err != nil || cl != (payment.Closed{}) {
		t.Fatalf("retry Close: %+v %v", cl, err)
	}
}

func TestRetryFlagRetriesCancel(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		method := r.Form.Get("method")
		inner := bizErr("40004", "ACQ.TRADE_NOT_EXIST")
		if method == "alipay.trade.cancel" {
			calls++
			flag := "Y"
			if calls == 2 {
				flag = "N"
			}
			inner = `{"code":"10000","msg":"Success","out_trade_no":"T_ERR_1","retry_flag":"` + flag + `","action":"close"}`
		}
		node := strings.ReplaceAll(method, ".", "_") + "_response"
		fmt.Fprintf(w, `{%q:%s,"sign":%q}`, node, inner, platformSign([]byte(inner)))
	}))
	defer srv.Close()
	c, err := New(Config{AppID: testKeys.AlipayAppID, PrivateKeyPEM: paysim.PrivatePEM(testKeys.AlipayApp),
		AlipayPublicKeyPEM: paysim.PublicPEM(&testKeys.AlipayPlatform.PublicKey), Gateway: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.Close(ctxT(t), "T_ERR_1")
	if err != nil || cl != (payment.Closed{}) || calls != 2 {
		t.Fatalf("Close: %+v %v after %d cancel calls, want success after 2", cl, err, calls)
	}
}

func TestRequestsCarryNoSecrets(t *testing.T) {
	e := newEnv(t)
	mustCreate(t, e, newOrder(t, 100))
	f := e.lastForm("alipay.trade.precreate")
	enc := f.Encode()
	priv := paysim.PrivatePEM(testKeys.AlipayApp)
	body := strings.Split(priv, "\n")[1]
	if strings.Contains(enc, body) || strings.Contains(enc, url.QueryEscape(body)) {
		t.Fatal("request contains private key material")
	}
}

// The simulator's request checks, seen through the real SDK.
func TestGatewayRejectsMisconfiguredClients(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(appID string, key *rsa.PrivateKey, loc *time.Location) *Client {
		c, err := sdk.New(appID, paysim.PrivatePEM(key), true,
			sdk.WithProductionGateway(e.srv.URL+"/gateway.do"), sdk.WithTimeLocation(loc))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.LoadAliPayPublicKey(paysim.PublicPEM(&testKeys.AlipayPlatform.PublicKey)); err != nil {
			t.Fatal(err)
		}
		return &Client{sdk: c, appID: appID, log: slog.New(slog.DiscardHandler)}
	}
	// Signed with a key Alipay does not know for this app: a signed refusal.
	if _, err := mk(testKeys.AlipayAppID, other, payment.Beijing).Query(ctx, "T1"); !payment.IsRejected(err, "isv.invalid-signature") {
		t.Fatalf("wrong app key: %v, want rejected isv.invalid-signature", err)
	}
	// A kiosk on UTC without WithTimeLocation stamps requests 8h off.
	if _, err := mk(testKeys.AlipayAppID, testKeys.AlipayApp, time.UTC).Query(ctx, "T1"); !payment.IsRejected(err, "isv.invalid-timestamp") {
		t.Fatalf("UTC timestamps: %v, want rejected isv.invalid-timestamp", err)
	}
	// An unknown app gets an unsigned answer, which the SDK turns into an
	// error: unknown outcome, but the message says why.
	_, err = mk("2021000000009999", testKeys.AlipayApp, payment.Beijing).Query(ctx, "T1")
	if !payment.IsUnknown(err) || !strings.Contains(err.Error(), "40002") {
		t.Fatalf("unknown app id: %v, want unknown outcome mentioning 40002", err)
	}
}

// byMethod is a gateway answering each method with a fixed, signed node.
func byMethod(t *testing.T, answers map[string]string) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		method := r.Form.Get("method")
		inner, ok := answers[method]
		if !ok {
			t.Errorf("unexpected call %s", method)
			inner = bizErr("40004", "ACQ.SYSTEM_ERROR")
		}
		fmt.Fprintf(w, `{%q:%s,"sign":%q}`, strings.ReplaceAll(method, ".", "_")+"_response", inner, platformSign([]byte(inner)))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{AppID: testKeys.AlipayAppID, PrivateKeyPEM: paysim.PrivatePEM(testKeys.AlipayApp),
		AlipayPublicKeyPEM: paysim.PublicPEM(&testKeys.AlipayPlatform.PublicKey), Gateway: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCloseOutcomes(t *testing.T) {
	notExist := bizErr("40004", "ACQ.TRADE_NOT_EXIST")
	statusErr := bizErr("40004", "ACQ.TRADE_STATUS_ERROR")
	query := func(status, extra string) string {
		return `{"code":"10000","msg":"Success","trade_no":"2026","out_trade_no":"T_ERR_1","trade_status":"` + status + `","total_amount":"1.00","receipt_amount":"1.00"` + extra + `}`
	}
	for _, tc := range []struct {
		name    string
		answers map[string]string
		want    payment.Closed
		wantErr string // "" none, "unknown", or a rejected code
	}{
		{"unscanned, cancel window over", map[string]string{"alipay.trade.close": notExist, "alipay.trade.cancel": bizErr("40004", "ACQ.TRADE_CANCEL_TIME_OUT")}, payment.Closed{}, ""},
		{"unscanned, cancel refunded", map[string]string{"alipay.trade.close": notExist, "alipay.trade.cancel": `{"code":"10000","msg":"Success","retry_flag":"N","action":"refund"}`}, payment.Closed{Refunded: true}, ""},
		{"unscanned, cancel system error", map[string]string{"alipay.trade.close": notExist, "alipay.trade.cancel": bizErr("40004", "ACQ.SYSTEM_ERROR")}, payment.Closed{}, "unknown"},
		{"unscanned, cancel odd action", map[string]string{"alipay.trade.close": notExist, "alipay.trade.cancel": `{"code":"10000","msg":"Success","retry_flag":"N","action":"explode"}`}, payment.Closed{}, "unknown"},
		{"status error, paid", map[string]string{"alipay.trade.close": statusErr, "alipay.trade.query": query("TRADE_SUCCESS", `,"send_pay_date":"2026-01-01 10:00:00"`)}, payment.Closed{Paid: true}, ""},
		{"status error, finished", map[string]string{"alipay.trade.close": statusErr, "alipay.trade.query": query("TRADE_FINISHED", `,"send_pay_date":"2026-01-01 10:00:00"`)}, payment.Closed{Paid: true}, ""},
		{"status error, refunded", map[string]string{"alipay.trade.close": statusErr, "alipay.trade.query": query("TRADE_CLOSED", `,"send_pay_date":"2026-01-01 10:00:00"`)}, payment.Closed{Refunded: true}, ""},
		{"status error, closed", map[string]string{"alipay.trade.close": statusErr, "alipay.trade.query": query("TRADE_CLOSED", "")}, payment.Closed{}, ""},
		{"status error, still waiting", map[string]string{"alipay.trade.close": statusErr, "alipay.trade.query": query("WAIT_BUYER_PAY", "")}, payment.Closed{}, "unknown"},
		{"status error, query fails", map[string]string{"alipay.trade.close": statusErr, "alipay.trade.query": bizErr("20000", "isp.unknow-error")}, payment.Closed{}, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := byMethod(t, tc.answers).Close(ctxT(t), "T_ERR_1")
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Close: %v", err)
			case tc.wantErr == "unknown" && !payment.IsUnknown(err):
				t.Fatalf("Close: %+v %v, want unknown outcome", cl, err)
			case tc.wantErr == "" && cl != tc.want:
				t.Fatalf("Close: %+v, want %+v", cl, tc.want)
			}
		})
	}
}

func TestQueryOutcomes(t *testing.T) {
	q := func(fields string) map[string]string {
		return map[string]string{"alipay.trade.query": `{"code":"10000","msg":"Success","out_trade_no":"T_ERR_1"` + fields + `}`}
	}
	for _, tc := range []struct {
		name    string
		answers map[string]string
		want    payment.Status
		unknown bool
	}{
		{"finished", q(`,"trade_no":"N1","trade_status":"TRADE_FINISHED","total_amount":"2.00","receipt_amount":"2.00","send_pay_date":"2026-03-04 05:06:07"`),
			payment.Status{State: payment.StatePaid, Scanned: true, Amount: payment.Amounts{Total: 200, PayerTotal: 0, Receipt: 200}, TransactionID: "N1", PaidAt: time.Date(2026, 3, 4, 5, 6, 7, 0, payment.Beijing)}, false},
		{"merchant discount: receipt below total", q(`,"trade_no":"N1","trade_status":"TRADE_SUCCESS","total_amount":"2.00","receipt_amount":"1.50","buyer_pay_amount":"1.50"`),
			payment.Status{State: payment.StatePaid, Scanned: true, Amount: payment.Amounts{Total: 200, PayerTotal: 150, Receipt: 150, Discount: 50}, TransactionID: "N1"}, false},
		{"no receipt_amount: total", q(`,"trade_no":"N1","trade_status":"TRADE_SUCCESS","total_amount":"2.00"`),
			payment.Status{State: payment.StatePaid, Scanned: true, Amount: payment.Amounts{Total: 200}, TransactionID: "N1"}, false},
		{"paid with unparsable total", q(`,"trade_no":"N1","trade_status":"TRADE_SUCCESS","total_amount":"2.005","receipt_amount":"2.00"`), payment.Status{}, true},
		{"paid without any amount", q(`,"trade_no":"N1","trade_status":"TRADE_SUCCESS"`), payment.Status{}, true},
		{"unknown status", q(`,"trade_no":"N1","trade_status":"TRADE_PENDING"`), payment.Status{}, true},
		{"no status", q(``), payment.Status{}, true},
		{"other order's answer", map[string]string{"alipay.trade.query": `{"code":"10000","msg":"Success","out_trade_no":"T_OTHER","trade_status":"WAIT_BUYER_PAY"}`}, payment.Status{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := byMethod(t, tc.answers).Query(ctxT(t), "T_ERR_1")
			if tc.unknown {
				if !payment.IsUnknown(err) {
					t.Fatalf("Query: %+v %v, want unknown outcome", st, err)
				}
				return
			}
			if err != nil || st.State != tc.want.State || st.Amount != tc.want.Amount || st.TransactionID != tc.want.TransactionID || !st.PaidAt.Equal(tc.want.PaidAt) || st.Scanned != tc.want.Scanned {
				t.Fatalf("Query: %+v %v, want %+v", st, err, tc.want)
			}
		})
	}
}
