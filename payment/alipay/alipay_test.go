package alipay

import (
	"context"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustCreate(t *testing.T, e *env, o payment.Order) string {
	t.Helper()
	c, err := e.client.Create(ctxT(t), o)
	if err != nil {
		t.Fatalf("Create(%s): %v", o.OutTradeNo, err)
	}
	return c.CodeURL
}

func mustQuery(t *testing.T, e *env, no string) payment.Status {
	t.Helper()
	st, err := e.client.Query(ctxT(t), no)
	if err != nil {
		t.Fatalf("Query(%s): %v", no, err)
	}
	return st
}

func TestLifecycleCreateScanPay(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 1250)
	code := mustCreate(t, e, o)
	if !strings.HasPrefix(code, "https://qr.alipay.com/bax0") {
		t.Fatalf("qr_code %q: want https://qr.alipay.com/bax0…", code)
	}
	if st := mustQuery(t, e, o.OutTradeNo); st.State != payment.StateNotCreated || st.Scanned {
		t.Fatalf("before scan: %+v, want not_created", st)
	}
	if err := e.sim.Scan(o.OutTradeNo); err != nil {
		t.Fatal(err)
	}
	if st := mustQuery(t, e, o.OutTradeNo); st.State != payment.StateWaiting || !st.Scanned || st.Amount != (payment.Amounts{}) {
		t.Fatalf("after scan: %+v, want waiting+scanned", st)
	}
	before := time.Now().Add(-time.Second)
	if err := e.sim.Pay(payment.Alipay, o.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	st := mustQuery(t, e, o.OutTradeNo)
	if st.State != payment.StatePaid || st.Amount.Total != 1250 || st.TransactionID == "" {
		t.Fatalf("after pay: %+v, want paid 1250 with trade_no", st)
	}
	if st.PaidAt.Before(before) || st.PaidAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("PaidAt %v: want about now (send_pay_date read as Beijing time)", st.PaidAt)
	}
	info, _ := e.sim.Order(payment.Alipay, o.OutTradeNo)
	if info.TransactionID != st.TransactionID {
		t.Fatalf("TransactionID %q, sim trade_no %q", st.TransactionID, info.TransactionID)
	}
}

func TestCreateWireFormat(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 1)
	o.NotifyURL = "http://127.0.0.1:9/notify/sim-1/alipay"
	o.ExpireAt = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	mustCreate(t, e, o)
	f := e.lastForm("alipay.trade.precreate")
	if got := f.Get("notify_url"); got != o.NotifyURL {
		t.Errorf("notify_url %q, want %q", got, o.NotifyURL)
	}
	ts, err := time.ParseInLocation(timeLayout, f.Get("timestamp"), payment.Beijing)
	if err != nil || time.Since(ts).Abs() > time.Minute {
		t.Errorf("timestamp %q: want Beijing time now (%v)", f.Get("timestamp"), err)
	}
	biz := f.Get("biz_content")
	for _, want := range []string{`"time_expire":"2030-01-02 11:04:05"`, `"total_amount":"0.01"`, `"product_code":"FACE_TO_FACE_PAYMENT"`, `"out_trade_no":"` + o.OutTradeNo + `"`} {
		if !strings.Contains(biz, want) {
			t.Errorf("biz_content %s: missing %s", biz, want)
		}
	}
	if strings.Contains(biz, "timeout_express") {
		t.Errorf("biz_content %s: timeout_express must not be sent (time_expire is absolute)", biz)
	}
}

func TestCreateOtherMerged(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 100)
	o.Other = map[string]any{"terminal_id": "chair-7", "body": "back massage", "store_id": "S1"}
	mustCreate(t, e, o)
	biz := e.lastForm("alipay.trade.precreate").Get("biz_content")
	for _, want := range []string{`"terminal_id":"chair-7"`, `"body":"back massage"`, `"store_id":"S1"`} {
		if !strings.Contains(biz, want) {
			t.Errorf("biz_content %s: missing %s", biz, want)
		}
	}
}

func TestCreateOtherOverrideRefused(t *testing.T) {
	e := newEnv(t)
	for _, key := range []string{"out_trade_no", "total_amount", "subject", "notify_url", "time_expire", "timeout_express", "product_code", "app_id", "discountable_amount", "sign"} {
		t.Run(key, func(t *testing.T) {
			o := newOrder(t, 100)
			o.Other = map[string]any{"store_id": "ok", key: "x"}
			_, err := e.client.Create(ctxT(t), o)
			if !errors.Is(err, payment.ErrOtherOverride) {
				t.Fatalf("err %v: want ErrOtherOverride", err)
			}
			var fe *payment.FieldError
			if !errors.As(err, &fe) || fe.Field != "data.other."+key || fe.Code != payment.CodeInvalidArgument {
				t.Fatalf("err %v: want FieldError data.other.%s", err, key)
			}
		})
	}
	if n := e.sim.Stats()["alipay.trade.precreate"]; n != 0 {
		t.Fatalf("%d precreate calls reached the gateway; a refused Other must not be sent", n)
	}
}

func TestRecreateRules(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	o := newOrder(t, 500)
	code := mustCreate(t, e, o)
	if again := mustCreate(t, e, o); again != code {
		t.Fatalf("same params: qr %q, want the same %q", again, code)
	}
	diff := o
	diff.Total = 501
	if _, err := e.client.Create(ctx, diff); !payment.IsRejected(err, "ACQ.CONTEXT_INCONSISTENT") {
		t.Fatalf("different amount: %v, want ACQ.CONTEXT_INCONSISTENT", err)
	}
	if err := e.sim.Pay(payment.Alipay, o.OutTradeNo, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Create(ctx, o); !payment.IsRejected(err, "ACQ.TRADE_HAS_SUCCESS") {
		t.Fatalf("paid: %v, want ACQ.TRADE_HAS_SUCCESS", err)
	}
	c := newOrder(t, 500)
	mustCreate(t, e, c)
	if _, err := e.client.Close(ctx, c.OutTradeNo); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Create(ctx, c); !payment.IsRejected(err, "ACQ.TRADE_HAS_CLOSE") {
		t.Fatalf("closed: %v, want ACQ.TRADE_HAS_CLOSE", err)
	}
}

func TestCloseBeforeScanBurnsNumber(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 300)
	mustCreate(t, e, o)
	cl, err := e.client.Close(ctxT(t), o.OutTradeNo)
	if err != nil || cl != (payment.Closed{}) {
		t.Fatalf("Close: %+v %v, want plain success", cl, err)
	}
	if n := e.sim.Stats()["alipay.trade.cancel"]; n != 1 {
		t.Fatalf("cancel calls %d: an unscanned code must be burned with alipay.trade.cancel", n)
	}
	if err := e.sim.Scan(o.OutTradeNo); err == nil {
		t.Fatal("scan after cancel succeeded; the QR must be dead")
	}
	if st := mustQuery(t, e, o.OutTradeNo); st.State != payment.StateNotCreated {
		t.Fatalf("after cancel: %+v", st)
	}
}

func TestCloseScanned(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 300)
	mustCreate(t, e, o)
	_ = e.sim.Scan(o.OutTradeNo)
	if cl, err := e.client.Close(ctxT(t), o.OutTradeNo); err != nil || cl != (payment.Closed{}) {
		t.Fatalf("Close: %+v %v", cl, err)
	}
	if st := mustQuery(t, e, o.OutTradeNo); st.State != payment.StateClosed || !st.Scanned {
		t.Fatalf("after close: %+v, want closed", st)
	}
	// Closing again is fine: the trade is closed.
	if cl, err := e.client.Close(ctxT(t), o.OutTradeNo); err != nil || cl != (payment.Closed{}) {
		t.Fatalf("second Close: %+v %v", cl, err)
	}
	if err := e.sim.Pay(payment.Alipay, o.OutTradeNo, 0); err == nil {
		t.Fatal("paying a closed trade succeeded")
	}
}

func TestClosePaidReportsPaid(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 300)
	mustCreate(t, e, o)
	_ = e.sim.Pay(payment.Alipay, o.OutTradeNo, 0)
	cl, err := e.client.Close(ctxT(t), o.OutTradeNo)
	if err != nil || !cl.Paid || cl.Refunded {
		t.Fatalf("Close of a paid trade: %+v %v, want Paid", cl, err)
	}
	if st := mustQuery(t, e, o.OutTradeNo); st.State != payment.StatePaid {
		t.Fatalf("close must not touch a paid trade: %+v", st)
	}
}

// The race the kiosk worries about: close finds no trade (never scanned),
// then the buyer scans and pays before the cancel lands. Cancel refunds it.
func TestClosePaymentSneaksInBeforeCancel(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 300)
	mustCreate(t, e, o)
	e.beforeNext("alipay.trade.cancel", func() {
		if err := e.sim.Pay(payment.Alipay, o.OutTradeNo, 0); err != nil {
			t.Error(err)
		}
	})
	cl, err := e.client.Close(ctxT(t), o.OutTradeNo)
	if err != nil || !cl.Refunded {
		t.Fatalf("Close: %+v %v, want Refunded (cancel action=refund)", cl, err)
	}
	st := mustQuery(t, e, o.OutTradeNo)
	if st.State != payment.StateRefunded || st.Amount.Total != 300 {
		t.Fatalf("after cancel-refund: %+v, want refunded", st)
	}
	if cl, err := e.client.Close(ctxT(t), o.OutTradeNo); err != nil || !cl.Refunded {
		t.Fatalf("Close again: %+v %v, want Refunded", cl, err)
	}
}

func TestRefundPartialIdempotentAndFull(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	o := newOrder(t, 1000)
	mustCreate(t, e, o)
	_ = e.sim.Pay(payment.Alipay, o.OutTradeNo, 0)

	r1 := payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "_R1", Total: 1000, Refund: 300, Reason: "not delivered"}
	for i := 0; i < 2; i++ { // the repeat must not pay twice
		rs, err := e.client.Refund(ctx, r1)
		if err != nil || rs.State != payment.RefundSuccess || rs.Amount != 300 {
			t.Fatalf("refund attempt %d: %+v %v", i+1, rs, err)
		}
	}
	if info, _ := e.sim.Order(payment.Alipay, o.OutTradeNo); info.Refunded != 300 {
		t.Fatalf("refunded %d after a repeated refund, want 300", info.Refunded)
	}
	if e.lastForm("alipay.trade.refund").Get("biz_content") == "" || !strings.Contains(e.lastForm("alipay.trade.refund").Get("biz_content"), `"out_request_no":"`+r1.OutRefundNo+`"`) {
		t.Fatalf("refund sent without out_request_no: %v", e.lastForm("alipay.trade.refund"))
	}
	if st := mustQuery(t, e, o.OutTradeNo); st.State != payment.StatePaid {
		t.Fatalf("after partial refund: %+v, want still paid (TRADE_SUCCESS)", st)
	}
	over := payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "_R2", Total: 1000, Refund: 701}
	if _, err := e.client.Refund(ctx, over); !payment.IsRejected(err, "ACQ.REASON_TRADE_REFUND_FEE_ERR") {
		t.Fatalf("over-refund: %v, want ACQ.REASON_TRADE_REFUND_FEE_ERR", err)
	}
	rest := payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: o.OutTradeNo + "_R3", Total: 1000, Refund: 700}
	if _, err := e.client.Refund(ctx, rest); err != nil {
		t.Fatal(err)
	}
	st := mustQuery(t, e, o.OutTradeNo)
	if st.State != payment.StateRefunded || st.Amount.Total != 1000 {
		t.Fatalf("after full refund: %+v, want refunded (TRADE_CLOSED with send_pay_date)", st)
	}

	rs, err := e.client.QueryRefund(ctx, o.OutTradeNo, r1.OutRefundNo)
	if err != nil || rs.State != payment.RefundSuccess || rs.Amount != 300 {
		t.Fatalf("QueryRefund R1: %+v %v", rs, err)
	}
	rs, err = e.client.QueryRefund(ctx, o.OutTradeNo, o.OutTradeNo+"_R9")
	if err != nil || rs.State != payment.RefundNotFound {
		t.Fatalf("QueryRefund unknown: %+v %v, want not_found", rs, err)
	}
	rs, err = e.client.QueryRefund(ctx, "NO_SUCH_ORDER_1", "X")
	if err != nil || rs.State != payment.RefundNotFound {
		t.Fatalf("QueryRefund unknown trade: %+v %v, want not_found", rs, err)
	}
}

func TestRefundUnpaidRejected(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	o := newOrder(t, 1000)
	mustCreate(t, e, o)
	req := payment.RefundRequest{OutTradeNo: o.OutTradeNo, OutRefundNo: "R1", Total: 1000, Refund: 1000}
	if _, err := e.client.Refund(ctx, req); !payment.IsRejected(err, "ACQ.TRADE_NOT_EXIST") {
		t.Fatalf("refund unscanned: %v, want ACQ.TRADE_NOT_EXIST", err)
	}
	_ = e.sim.Scan(o.OutTradeNo)
	if _, err := e.client.Refund(ctx, req); !payment.IsRejected(err, "ACQ.TRADE_STATUS_ERROR") {
		t.Fatalf("refund waiting: %v, want ACQ.TRADE_STATUS_ERROR", err)
	}
}

func TestTimeExpireClosesTrade(t *testing.T) {
	e := newEnv(t)
	o := newOrder(t, 100)
	// time_expire has whole-second resolution; two seconds is the shortest
	// deadline that cannot already be past when the gateway checks it.
	o.ExpireAt = time.Now().Add(2 * time.Second)
	mustCreate(t, e, o)
	_ = e.sim.Scan(o.OutTradeNo)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := mustQuery(t, e, o.OutTradeNo)
		if st.State == payment.StateClosed {
			break
		}
		if st.State != payment.StateWaiting || time.Now().After(deadline) {
			t.Fatalf("%+v: want waiting, then closed at time_expire", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNewValidatesWithoutNetwork(t *testing.T) {
	good := Config{
		AppID:              testKeys.AlipayAppID,
		PrivateKeyPEM:      paysim.PrivatePEM(testKeys.AlipayApp),
		AlipayPublicKeyPEM: paysim.PublicPEM(&testKeys.AlipayPlatform.PublicKey),
		Gateway:            "http://192.0.2.1:1/gateway.do", // unroutable: New must not dial
	}
	if _, err := New(good); err != nil {
		t.Fatalf("New: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no app id":       func(c *Config) { c.AppID = "" },
		"bad private key": func(c *Config) { c.PrivateKeyPEM = garbagePEM },
		"no public key":   func(c *Config) { c.AlipayPublicKeyPEM = "" },
		"bad public key":  func(c *Config) { c.AlipayPublicKeyPEM = "garbage" },
		"bad gateway":     func(c *Config) { c.Gateway = "ftp://x" },
	} {
		c := good
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New succeeded", name)
		} else if strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: error leaks key material: %v", name, err)
		}
	}
	if c, _ := New(Config{AppID: good.AppID, PrivateKeyPEM: good.PrivateKeyPEM, AlipayPublicKeyPEM: good.AlipayPublicKeyPEM}); c.Name() != payment.Alipay {
		t.Fatal("Name")
	}
}

// garbagePEM is a PRIVATE KEY block whose content is not a key. It is built
// at run time so that no key-shaped text is committed.
var garbagePEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE " + "KEY", Bytes: []byte{0, 0, 0}}))
