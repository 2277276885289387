package wxsim

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/native"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// realism returns Options.Realism: the defaults changed by f.
func realism(f func(*paysim.Realism)) *paysim.Realism {
	r := paysim.DefaultRealism()
	f(&r)
	return &r
}

// A discounted payment read back through wechatpay-go: amount.total is the
// order total, payer_total what the buyer paid, promotion_detail names the
// coupon and who funds it (query doc and payments.PromotionDetail, cited in
// wxsim.go); a full refund returns the coupon's share as discount_refund.
func TestWxDiscountThroughSDK(t *testing.T) {
	for _, tc := range []struct {
		by                  paysim.Funder
		typ, refundType     string // promotion_detail type in the payment and in the refund
		wechatpay, merchant int64  // contributions
		settle              int64  // settlement_total: what the merchant receives
	}{
		{by: paysim.DiscountPlatform, typ: "CASH", refundType: "COUPON", wechatpay: 100, settle: 1000},
		{by: paysim.DiscountMerchant, typ: "NOCASH", refundType: "DISCOUNT", merchant: 100, settle: 900},
	} {
		t.Run(string(tc.by), func(t *testing.T) {
			k, _ := wxTestKeys(t)
			s, srv := wxTestServer(t, paysim.Options{Realism: realism(func(r *paysim.Realism) { r.WxRefundMax = paysim.Never })})
			sdk := newWxSDK(t, k, srv)
			sink := newWxSink(t, k)
			no := "DISC_" + string(tc.by)
			sdk.prepay(t, no, 1000, sink.URL)
			if err := s.PayWith(payment.WxPay, no, paysim.Payment{Discount: 100, DiscountBy: tc.by}); err != nil {
				t.Fatal(err)
			}
			tx, _, err := sdk.native.QueryOrderByOutTradeNo(sdkCtx(t), native.QueryOrderByOutTradeNoRequest{OutTradeNo: core.String(no), Mchid: core.String(k.WxMchID)})
			if err != nil {
				t.Fatal(err)
			}
			if *tx.TradeState != "SUCCESS" || *tx.Amount.Total != 1000 || *tx.Amount.PayerTotal != 900 || *tx.Amount.Currency != "CNY" {
				t.Fatalf("query: %s", tx)
			}
			if len(tx.PromotionDetail) != 1 {
				t.Fatalf("promotion_detail: %s", tx)
			}
			p := tx.PromotionDetail[0]
			if *p.Type != tc.typ || *p.Amount != 100 || *p.Scope != "GLOBAL" || *p.CouponId == "" || *p.StockId == "" || *p.Currency != "CNY" ||
				*p.WechatpayContribute != tc.wechatpay || *p.MerchantContribute != tc.merchant || *p.OtherContribute != 0 {
				t.Fatalf("promotion_detail[0]: %s", p)
			}
			// The notification carries the same resource.
			ev := sink.next(t)
			amount, _ := ev.Resource["amount"].(map[string]any)
			promos, _ := ev.Resource["promotion_detail"].([]any)
			if ev.Type != "TRANSACTION.SUCCESS" || amount["total"] != 1000.0 || amount["payer_total"] != 900.0 || len(promos) != 1 {
				t.Fatalf("notification %s %v", ev.Type, ev.Resource)
			}
			if o, _ := s.Order(payment.WxPay, no); o.Total != 1000 || o.Paid != 900 || o.Received != payment.Fen(tc.settle) || o.Discount != 100 || o.DiscountBy != tc.by {
				t.Fatalf("orders view %+v", o)
			}

			// A partial refund returns the coupon in proportion, the
			// last one whatever is left.
			r1 := sdk.refund(t, no, no+"R1", 300, 1000, "")
			if *r1.Amount.DiscountRefund != 30 || *r1.Amount.PayerRefund != 270 || *r1.Amount.PayerTotal != 900 || *r1.Amount.SettlementTotal != tc.settle {
				t.Fatalf("partial refund amount: %s", r1.Amount)
			}
			r2 := sdk.refund(t, no, no+"R2", 700, 1000, "")
			if *r2.Amount.DiscountRefund != 70 || *r2.Amount.PayerRefund != 630 {
				t.Fatalf("final refund amount: %s", r2.Amount)
			}
			if len(r2.PromotionDetail) != 1 || string(*r2.PromotionDetail[0].Type) != tc.refundType || *r2.PromotionDetail[0].RefundAmount != 70 || *r2.PromotionDetail[0].Amount != 100 {
				t.Fatalf("refund promotion_detail: %v", r2.PromotionDetail)
			}
			wantSettle := int64(700)
			if tc.by == paysim.DiscountMerchant {
				wantSettle = 630 // the merchant's own coupon is not settled back
			}
			if *r2.Amount.SettlementRefund != wantSettle {
				t.Fatalf("settlement_refund %d, want %d", *r2.Amount.SettlementRefund, wantSettle)
			}
		})
	}
}

// The /_sim/pay "amount" is the provider-side total (docs/contract.md §7): both
// amount.total and payer_total show it. Until WxStrictRefundTotal, a refund
// may still name the total the order was created with; strictly, only the
// provider's total is accepted, as at the real service.
func TestWxProviderTotalAndRefundTotal(t *testing.T) {
	k, _ := wxTestKeys(t)
	for _, strict := range []bool{false, true} {
		s, srv := wxTestServer(t, paysim.Options{Realism: realism(func(r *paysim.Realism) { r.WxRefundMax = paysim.Never; r.WxStrictRefundTotal = strict })})
		sdk := newWxSDK(t, k, srv)
		sdk.prepay(t, "COLLIDE_1", 1000, "https://kiosk.example.com/wx")
		if err := s.Pay(payment.WxPay, "COLLIDE_1", 999); err != nil {
			t.Fatal(err)
		}
		tx, _, err := sdk.native.QueryOrderByOutTradeNo(sdkCtx(t), native.QueryOrderByOutTradeNoRequest{OutTradeNo: core.String("COLLIDE_1"), Mchid: core.String(k.WxMchID)})
		if err != nil || *tx.Amount.Total != 999 || *tx.Amount.PayerTotal != 999 || tx.PromotionDetail != nil {
			t.Fatalf("query: %v %v", tx, err)
		}
		_, _, err = sdk.refunds.Create(sdkCtx(t), refunddomestic.CreateRequest{
			OutTradeNo: core.String("COLLIDE_1"), OutRefundNo: core.String("COLLIDE_1R1"),
			Amount: &refunddomestic.AmountReq{Refund: core.Int64(999), Total: core.Int64(1000), Currency: core.String("CNY")},
		})
		var ae *core.APIError
		if !strict {
			if err != nil {
				t.Fatalf("lenient: refund naming the created total: %v", err)
			}
			continue
		}
		if !errors.As(err, &ae) || ae.Code != "PARAM_ERROR" {
			t.Fatalf("strict: refund naming the created total: %v, want PARAM_ERROR", err)
		}
		if r := sdk.refund(t, "COLLIDE_1", "COLLIDE_1R2", 999, 999, ""); *r.Amount.Total != 999 {
			t.Fatalf("refund naming the provider's total: %s", r)
		}
	}
}

// Refunds complete by themselves after the configured delay and notify the
// refund's own notify_url; the test waits on that notification.
func TestWxRefundCompletesByItself(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{Realism: realism(func(r *paysim.Realism) { r.WxRefundMin, r.WxRefundMax = 10*time.Millisecond, 30*time.Millisecond })})
	sdk := newWxSDK(t, k, srv)
	sink := newWxSink(t, k)
	sdk.prepay(t, "AUTO_1", 500, sink.URL)
	if err := s.Pay(payment.WxPay, "AUTO_1", 0); err != nil {
		t.Fatal(err)
	}
	if ev := sink.next(t); ev.Type != "TRANSACTION.SUCCESS" {
		t.Fatalf("first notification %s", ev.Type)
	}
	r := sdk.refund(t, "AUTO_1", "AUTO_1R1", 500, 500, sink.URL)
	if *r.Status != refunddomestic.STATUS_PROCESSING {
		t.Fatalf("refund answered %s, want PROCESSING", *r.Status)
	}
	ev := sink.next(t)
	if ev.Type != "REFUND.SUCCESS" || ev.Resource["refund_status"] != "SUCCESS" || ev.Resource["out_refund_no"] != "AUTO_1R1" || ev.Resource["success_time"] == nil {
		t.Fatalf("refund notification %s %v", ev.Type, ev.Resource)
	}
	q := sdk.queryRefund(t, "AUTO_1R1")
	if *q.Status != refunddomestic.STATUS_SUCCESS || q.SuccessTime == nil {
		t.Fatalf("refund query after completion: %s", q)
	}
	// The hook on a refund that already succeeded is a no-op, not an error.
	if err := s.RefundComplete(payment.WxPay, "AUTO_1R1"); err != nil {
		t.Fatalf("refund-complete after auto-completion: %v", err)
	}
}

// A refund without notify_url is not notified, not even to the payment's
// notify_url (refund API doc, cited in wxsim.go).
func TestWxRefundNotifiesOnlyItsOwnURL(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{Realism: realism(func(r *paysim.Realism) { r.WxRefundMax = paysim.Never })})
	sdk := newWxSDK(t, k, srv)
	sink := newWxSink(t, k)
	sdk.prepay(t, "QUIET_1", 500, sink.URL)
	if err := s.Pay(payment.WxPay, "QUIET_1", 0); err != nil {
		t.Fatal(err)
	}
	sink.next(t) // TRANSACTION.SUCCESS
	sdk.refund(t, "QUIET_1", "QUIET_1R1", 100, 500, "")
	sdk.refund(t, "QUIET_1", "QUIET_1R2", 100, 500, sink.URL)
	for _, no := range []string{"QUIET_1R1", "QUIET_1R2"} {
		if err := s.RefundComplete(payment.WxPay, no); err != nil {
			t.Fatal(err)
		}
	}
	if ev := sink.next(t); ev.Resource["out_refund_no"] != "QUIET_1R2" {
		t.Fatalf("notification for %v, want QUIET_1R2 only", ev.Resource["out_refund_no"])
	}
	s.Close() // waits for every delivery in flight
	if n := len(sink.events); n != 0 {
		t.Fatalf("%d more notifications; the refund without notify_url must not be notified", n)
	}
}

// With WxRefundMax = Never a refund stays PROCESSING until a hook decides:
// ABNORMAL and CLOSED are notified as REFUND.ABNORMAL / REFUND.CLOSED, an
// ABNORMAL refund may still succeed, a CLOSED one frees its amount.
func TestWxRefundFailures(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{Realism: realism(func(r *paysim.Realism) { r.WxRefundMax = paysim.Never })})
	sdk := newWxSDK(t, k, srv)
	sink := newWxSink(t, k)
	sdk.prepay(t, "FAIL_1", 800, sink.URL)
	if err := s.Pay(payment.WxPay, "FAIL_1", 0); err != nil {
		t.Fatal(err)
	}
	sink.next(t)

	sdk.refund(t, "FAIL_1", "FAIL_1R1", 800, 800, sink.URL)
	if q := sdk.queryRefund(t, "FAIL_1R1"); *q.Status != refunddomestic.STATUS_PROCESSING {
		t.Fatalf("refund with completion off: %s", *q.Status)
	}
	post := func(body string) int {
		resp, err := http.Post(srv.URL+"/_sim/refund-fail", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post(`{"provider":"wxpay","out_refund_no":"FAIL_1R1","status":"SUCCESS"}`); c != http.StatusBadRequest {
		t.Fatalf("refund-fail with status SUCCESS: %d, want 400", c)
	}
	if c := post(`{"provider":"wxpay","out_refund_no":"FAIL_1R1","status":"ABNORMAL"}`); c != http.StatusOK {
		t.Fatalf("refund-fail ABNORMAL: %d", c)
	}
	if ev := sink.next(t); ev.Type != "REFUND.ABNORMAL" || ev.Resource["refund_status"] != "ABNORMAL" || ev.Resource["success_time"] != nil {
		t.Fatalf("notification %s %v", ev.Type, ev.Resource)
	}
	if q := sdk.queryRefund(t, "FAIL_1R1"); *q.Status != refunddomestic.STATUS_ABNORMAL {
		t.Fatalf("query: %s", *q.Status)
	}
	if err := s.RefundFail(payment.WxPay, "FAIL_1R1", paysim.RefundClosed); err == nil {
		t.Fatal("an ABNORMAL refund was closed")
	}
	// The merchant resolves it: it succeeds after all.
	if err := s.RefundComplete(payment.WxPay, "FAIL_1R1"); err != nil {
		t.Fatal(err)
	}
	if ev := sink.next(t); ev.Type != "REFUND.SUCCESS" {
		t.Fatalf("notification %s", ev.Type)
	}

	sdk.prepay(t, "FAIL_2", 800, sink.URL)
	if err := s.Pay(payment.WxPay, "FAIL_2", 0); err != nil {
		t.Fatal(err)
	}
	sink.next(t)
	sdk.refund(t, "FAIL_2", "FAIL_2R1", 800, 800, sink.URL)
	if err := s.RefundFail(payment.WxPay, "FAIL_2R1", paysim.RefundClosed); err != nil {
		t.Fatal(err)
	}
	if ev := sink.next(t); ev.Type != "REFUND.CLOSED" || ev.Resource["refund_status"] != "CLOSED" {
		t.Fatalf("notification %s %v", ev.Type, ev.Resource)
	}
	if q := sdk.queryRefund(t, "FAIL_2R1"); *q.Status != refunddomestic.STATUS_CLOSED {
		t.Fatalf("query: %s", *q.Status)
	}
	if err := s.RefundComplete(payment.WxPay, "FAIL_2R1"); err == nil {
		t.Fatal("a CLOSED refund was completed")
	}
	// The closed refund's money is refundable again.
	if r := sdk.refund(t, "FAIL_2", "FAIL_2R2", 800, 800, ""); *r.Status != refunddomestic.STATUS_PROCESSING {
		t.Fatalf("second refund: %s", r)
	}
	if err := s.RefundFail(payment.Alipay, "FAIL_2R2", paysim.RefundAbnormal); err == nil {
		t.Fatal("RefundFail for alipay succeeded")
	}
}

// /_sim/scan moves a WeChat order to USERPAYING (the buyer is entering the
// password); it can still be paid or closed.
func TestWxScanUserPaying(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{})
	sdk := newWxSDK(t, k, srv)
	state := func(no string) string {
		tx, _, err := sdk.native.QueryOrderByOutTradeNo(sdkCtx(t), native.QueryOrderByOutTradeNoRequest{OutTradeNo: core.String(no), Mchid: core.String(k.WxMchID)})
		if err != nil {
			t.Fatal(err)
		}
		return *tx.TradeState
	}
	scan := func(body string) int {
		resp, err := http.Post(srv.URL+"/_sim/scan", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	sdk.prepay(t, "SCAN_1", 300, "https://kiosk.example.com/wx")
	sdk.prepay(t, "SCAN_2", 300, "https://kiosk.example.com/wx")
	if c := scan(`{"out_trade_no":"SCAN_1"}`); c != 200 || state("SCAN_1") != "USERPAYING" {
		t.Fatalf("scan: %d, state %s", c, state("SCAN_1"))
	}
	if c := scan(`{"out_trade_no":"SCAN_1","provider":"wxpay"}`); c != 200 {
		t.Fatalf("second scan: %d", c)
	}
	if c := scan(`{"out_trade_no":"SCAN_2","provider":"alipay"}`); c != http.StatusConflict {
		t.Fatalf("scan at the provider without the order: %d", c)
	}
	if c := scan(`{"out_trade_no":"NOPE_1"}`); c != http.StatusConflict {
		t.Fatalf("scan unknown: %d", c)
	}
	if err := s.Pay(payment.WxPay, "SCAN_1", 0); err != nil || state("SCAN_1") != "SUCCESS" {
		t.Fatalf("pay after scan: %v, state %s", err, state("SCAN_1"))
	}
	if err := s.Scan("SCAN_1"); err == nil {
		t.Fatal("scan of a paid order succeeded")
	}
	_ = s.Scan("SCAN_2")
	if _, err := sdk.native.CloseOrder(sdkCtx(t), native.CloseOrderRequest{OutTradeNo: core.String("SCAN_2"), Mchid: core.String(k.WxMchID)}); err != nil || state("SCAN_2") != "CLOSED" {
		t.Fatalf("close while USERPAYING: %v, state %s", err, state("SCAN_2"))
	}
}

// Fault 202: accepted, not processed (HTTP status code table, cited in
// wxsim.go): a close answered 202 leaves the order open, a query has no
// body to read; only WeChat calls are hit.
func TestWxFault202(t *testing.T) {
	k, _ := wxTestKeys(t)
	s, srv := wxTestServer(t, paysim.Options{})
	sdk := newWxSDK(t, k, srv)
	sdk.prepay(t, "F202_1", 300, "https://kiosk.example.com/wx")
	if err := s.InjectFault(paysim.Fault{Provider: payment.Alipay, Kind: paysim.FaultAccepted}); err == nil {
		t.Fatal("a 202 fault for alipay was accepted")
	}
	if err := s.InjectFault(paysim.Fault{Kind: paysim.FaultAccepted, API: "close", Count: 1}); err != nil {
		t.Fatal(err)
	}
	res, err := sdk.native.CloseOrder(sdkCtx(t), native.CloseOrderRequest{OutTradeNo: core.String("F202_1"), Mchid: core.String(k.WxMchID)})
	if err != nil || res.Response.StatusCode != http.StatusAccepted {
		t.Fatalf("close under a 202 fault: %v %v", res, err)
	}
	if o, _ := s.Order(payment.WxPay, "F202_1"); o.State != "NOTPAY" {
		t.Fatalf("a 202 close closed the order: %+v", o)
	}
	if res, err := sdk.native.CloseOrder(sdkCtx(t), native.CloseOrderRequest{OutTradeNo: core.String("F202_1"), Mchid: core.String(k.WxMchID)}); err != nil || res.Response.StatusCode != http.StatusNoContent {
		t.Fatalf("repeated close: %v %v", res, err)
	}
	if err := s.InjectFault(paysim.Fault{Kind: paysim.FaultAccepted, API: "wxpay.query", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if tx, res, err := sdk.native.QueryOrderByOutTradeNo(sdkCtx(t), native.QueryOrderByOutTradeNoRequest{OutTradeNo: core.String("F202_1"), Mchid: core.String(k.WxMchID)}); err == nil || res.Response.StatusCode != http.StatusAccepted {
		t.Fatalf("query under a 202 fault: %v %v %v, want the SDK's error on the empty body", tx, res, err)
	}
}
