package alisim

import (
	"testing"
	"time"

	alipay "github.com/smartwalle/alipay/v3"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// aliPrecreate places an order through the SDK, as the adapter does.
func aliPrecreate(t *testing.T, c *alipay.Client, no, yuan, notifyURL string) {
	t.Helper()
	rsp, err := c.TradePreCreate(sdkCtx(t), alipay.TradePreCreate{Trade: alipay.Trade{
		NotifyURL: notifyURL, Subject: "洗车 10 分钟", OutTradeNo: no, TotalAmount: yuan, ProductCode: "FACE_TO_FACE_PAYMENT",
	}})
	if err != nil || rsp.Code != alipay.CodeSuccess {
		t.Fatalf("precreate %s: %v %+v", no, err, rsp)
	}
}

// A discounted payment read back through smartwalle/alipay: total_amount is
// the order total, buyer_pay_amount what the buyer paid, receipt_amount what
// the merchant receives (lower only when the merchant funds the voucher);
// the details come with query_options, and the notification carries them as
// JSON strings (fields cited in alisim.go).
func TestAlipayDiscountThroughSDK(t *testing.T) {
	for _, tc := range []struct {
		by                paysim.Funder
		channel           string
		receipt           string
		merchant, other   string // voucher contributions
		mdiscount, pdisct string // mdiscount_amount, discount_amount
	}{
		{by: paysim.DiscountPlatform, channel: "DISCOUNT", receipt: "10.00", merchant: "0.00", other: "1.00", pdisct: "1.00"},
		{by: paysim.DiscountMerchant, channel: "MDISCOUNT", receipt: "9.00", merchant: "1.00", other: "0.00", mdiscount: "1.00"},
	} {
		t.Run(string(tc.by), func(t *testing.T) {
			e := newAliEnv(t, filledAmounts)
			c := aliSDK(t, e.k, e.srv)
			sink := newAliSink(t, c)
			no := "DISC_" + string(tc.by)
			aliPrecreate(t, c, no, "10.00", sink.URL)
			if err := e.s.PayWith(payment.Alipay, no, paysim.Payment{Discount: 100, DiscountBy: tc.by}); err != nil {
				t.Fatal(err)
			}
			// Without query_options: amounts, and the fund channels of a
			// merchant whose answers are filled.
			q, err := c.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: no})
			if err != nil || q.Code != alipay.CodeSuccess {
				t.Fatalf("query: %v %+v", err, q)
			}
			if q.TradeStatus != alipay.TradeStatusSuccess || q.TotalAmount != "10.00" || q.BuyerPayAmount != "9.00" || q.InvoiceAmount != "9.00" ||
				q.ReceiptAmount != tc.receipt || q.PointAmount != "0.00" || len(q.FundBillList) != 2 || q.VoucherDetailList != nil || q.MdiscountAmount != "" {
				t.Fatalf("query: %+v", q)
			}
			if f := q.FundBillList; f[0].FundChannel != "ALIPAYACCOUNT" || f[0].Amount != "9.00" || f[1].FundChannel != tc.channel || f[1].Amount != "1.00" {
				t.Fatalf("fund_bill_list %+v %+v", f[0], f[1])
			}
			q, err = c.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: no, QueryOptions: []string{"voucher_detail_list", "mdiscount_amount", "discount_amount"}})
			if err != nil || len(q.VoucherDetailList) != 1 || q.MdiscountAmount != tc.mdiscount || q.DiscountAmount != tc.pdisct {
				t.Fatalf("query with options: %v %+v", err, q)
			}
			if v := q.VoucherDetailList[0]; v.Id == "" || v.Type != "ALIPAY_FIX_VOUCHER" || v.Amount != "1.00" || v.MerchantContribute != tc.merchant || v.OtherContribute != tc.other {
				t.Fatalf("voucher %+v", v)
			}

			n := sink.next(t)
			if n.TradeStatus != alipay.TradeStatusSuccess || n.TotalAmount != "10.00" || n.BuyerPayAmount != "9.00" || n.ReceiptAmount != tc.receipt || n.RefundFee != "" {
				t.Fatalf("notification %+v", n)
			}
			bills := jsonList(t, "fund_bill_list", n.FundBillList)
			if len(bills) != 2 || bills[1]["fundChannel"] != tc.channel || bills[1]["amount"] != "1.00" {
				t.Fatalf("notification fund_bill_list %s", n.FundBillList)
			}
			vs := jsonList(t, "voucher_detail_list", n.VoucherDetailList)
			if len(vs) != 1 || vs[0]["merchantContribute"] != tc.merchant || vs[0]["otherContribute"] != tc.other || vs[0]["voucherId"] == "" {
				t.Fatalf("notification voucher_detail_list %s", n.VoucherDetailList)
			}
			if o, _ := e.s.Order(payment.Alipay, no); o.Total != 1000 || o.Paid != 900 || o.Received.Yuan() != tc.receipt {
				t.Fatalf("orders view %+v", o)
			}
			// The whole total_amount is refundable, voucher included.
			r, err := c.TradeRefund(sdkCtx(t), alipay.TradeRefund{OutTradeNo: no, RefundAmount: "10.00", OutRequestNo: no + "R1"})
			if err != nil || r.Code != alipay.CodeSuccess || r.RefundFee != "10.00" {
				t.Fatalf("refund of the total: %v %+v", err, r)
			}
			if q, _ := c.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: no}); q.TradeStatus != alipay.TradeStatusClosed {
				t.Fatalf("after the full refund: %+v", q)
			}
		})
	}
}

// With AlipayZeroQueryAmounts the query answers a paid trade as most
// captured real answers do: "0.00" amounts, no fund_bill_list unless asked;
// notifications still carry the real amounts.
func TestAlipayZeroQueryAmounts(t *testing.T) {
	e := newAliEnv(t, func(o *paysim.Options) {
		o.Realism = realism(func(r *paysim.Realism) { r.AlipayZeroQueryAmounts = true })
	})
	c := aliSDK(t, e.k, e.srv)
	sink := newAliSink(t, c)
	aliPrecreate(t, c, "ZERO_1", "12.50", sink.URL)
	if err := e.s.Pay(payment.Alipay, "ZERO_1", 0); err != nil {
		t.Fatal(err)
	}
	q, err := c.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: "ZERO_1"})
	if err != nil || q.TradeStatus != alipay.TradeStatusSuccess || q.TotalAmount != "12.50" || q.SendPayDate == "" ||
		q.BuyerPayAmount != "0.00" || q.InvoiceAmount != "0.00" || q.ReceiptAmount != "0.00" || q.PointAmount != "0.00" || q.FundBillList != nil {
		t.Fatalf("query: %v %+v", err, q)
	}
	if q, _ := c.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: "ZERO_1", QueryOptions: []string{"fund_bill_list"}}); len(q.FundBillList) != 1 || q.FundBillList[0].Amount != "12.50" {
		t.Fatalf("query with fund_bill_list asked: %+v", q)
	}
	if n := sink.next(t); n.ReceiptAmount != "12.50" || n.BuyerPayAmount != "12.50" {
		t.Fatalf("notification %+v", n)
	}
}

// A paid trade finishes when its refund window ends: TRADE_FINISHED with a
// notification (refund_fee and gmt_close set), then refund and cancel fail
// with ACQ.TRADE_HAS_FINISHED (sources in alisim.go).
func TestAlipayTradeFinished(t *testing.T) {
	e := newAliEnv(t, func(o *paysim.Options) {
		o.Realism = realism(func(r *paysim.Realism) { r.AlipayRefundWindow = time.Hour })
	})
	c := aliSDK(t, e.k, e.srv)
	sink := newAliSink(t, c)
	aliPrecreate(t, c, "FIN_1", "20.00", sink.URL)
	aliPrecreate(t, c, "FIN_2", "20.00", sink.URL)
	for _, no := range []string{"FIN_1", "FIN_2"} {
		if err := e.s.Pay(payment.Alipay, no, 0); err != nil {
			t.Fatal(err)
		}
		sink.next(t)
	}
	if r, err := c.TradeRefund(sdkCtx(t), alipay.TradeRefund{OutTradeNo: "FIN_2", RefundAmount: "5.00", OutRequestNo: "FIN_2R1"}); err != nil || r.Code != alipay.CodeSuccess {
		t.Fatalf("partial refund: %v %+v", err, r)
	}
	if n := sink.next(t); n.RefundFee != "5.00" || n.TradeStatus != alipay.TradeStatusSuccess {
		t.Fatalf("refund notification %+v", n)
	}
	e.advance(59 * time.Minute)
	if q, _ := c.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: "FIN_1"}); q.TradeStatus != alipay.TradeStatusSuccess {
		t.Fatalf("inside the window: %+v", q)
	}
	e.advance(2 * time.Minute)
	for _, tc := range []struct{ no, refunded string }{{"FIN_1", "0.00"}, {"FIN_2", "5.00"}} {
		q, err := c.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: tc.no})
		if err != nil || q.TradeStatus != alipay.TradeStatusFinished || q.SendPayDate == "" {
			t.Fatalf("%s after the window: %v %+v", tc.no, err, q)
		}
		n := sink.next(t)
		if n.OutTradeNo != tc.no || n.TradeStatus != alipay.TradeStatusFinished || n.RefundFee != tc.refunded || n.GmtClose == "" || n.OutBizNo != "" || n.ReceiptAmount != "20.00" {
			t.Fatalf("TRADE_FINISHED notification %+v", n)
		}
	}
	r, err := c.TradeRefund(sdkCtx(t), alipay.TradeRefund{OutTradeNo: "FIN_1", RefundAmount: "1.00", OutRequestNo: "FIN_1R1"})
	if err != nil || r.SubCode != "ACQ.TRADE_HAS_FINISHED" {
		t.Fatalf("refund of a finished trade: %v %+v", err, r)
	}
	if r, err := c.TradeRefund(sdkCtx(t), alipay.TradeRefund{OutTradeNo: "FIN_2", RefundAmount: "5.00", OutRequestNo: "FIN_2R1"}); err != nil || r.Code != alipay.CodeSuccess || r.FundChange != "N" {
		t.Fatalf("repeat of an earlier refund: %v %+v", err, r)
	}
	if cl, err := c.TradeCancel(sdkCtx(t), alipay.TradeCancel{OutTradeNo: "FIN_1"}); err != nil || cl.SubCode != "ACQ.TRADE_HAS_FINISHED" || cl.RetryFlag != "N" {
		t.Fatalf("cancel of a finished trade: %v %+v", err, cl)
	}

	// AlipayRefundWindow 0: never finishes.
	e2 := newAliEnv(t, func(o *paysim.Options) { o.Realism = realism(func(r *paysim.Realism) { r.AlipayRefundWindow = 0 }) })
	c2 := aliSDK(t, e2.k, e2.srv)
	aliPrecreate(t, c2, "FIN_3", "1.00", "")
	_ = e2.s.Pay(payment.Alipay, "FIN_3", 0)
	e2.advance(10 * 365 * 24 * time.Hour)
	if q, _ := c2.TradeQuery(sdkCtx(t), alipay.TradeQuery{OutTradeNo: "FIN_3"}); q.TradeStatus != alipay.TradeStatusSuccess {
		t.Fatalf("window 0: %+v", q)
	}
}

// Cancel through the SDK: no action for a number nobody scanned, close for
// a scanned one, and retry_flag Y under ACQ.SYSTEM_ERROR.
func TestAlipayCancelThroughSDK(t *testing.T) {
	e := newAliEnv(t)
	c := aliSDK(t, e.k, e.srv)
	aliPrecreate(t, c, "CX_1", "3.00", "")
	cl, err := c.TradeCancel(sdkCtx(t), alipay.TradeCancel{OutTradeNo: "CX_1"})
	if err != nil || cl.Code != alipay.CodeSuccess || cl.Action != "" || cl.TradeNo != "" || cl.RetryFlag != "N" || cl.OutTradeNo != "CX_1" {
		t.Fatalf("cancel unscanned: %v %+v", err, cl)
	}
	aliPrecreate(t, c, "CX_2", "3.00", "")
	_ = e.s.Scan("CX_2")
	if err := e.s.InjectFault(paysim.Fault{Kind: paysim.FaultSystemError, API: "trade.cancel", Count: 1}); err != nil {
		t.Fatal(err)
	}
	cl, err = c.TradeCancel(sdkCtx(t), alipay.TradeCancel{OutTradeNo: "CX_2"})
	if err != nil || cl.SubCode != "ACQ.SYSTEM_ERROR" || cl.RetryFlag != "Y" {
		t.Fatalf("cancel under system_error: %v %+v", err, cl)
	}
	// It was processed: cancelling again reports the close.
	cl, err = c.TradeCancel(sdkCtx(t), alipay.TradeCancel{OutTradeNo: "CX_2"})
	if err != nil || cl.Code != alipay.CodeSuccess || cl.Action != "close" || cl.TradeNo == "" {
		t.Fatalf("cancel again: %v %+v", err, cl)
	}
}

// 20000 isp.unknow-error is refused before processing; ACQ.SYSTEM_ERROR
// after it; neither hits WeChat calls.
func TestAlipayUnknownOutcomeFaults(t *testing.T) {
	e := newAliEnv(t)
	c := aliSDK(t, e.k, e.srv)
	aliPrecreate(t, c, "UF_1", "4.00", "")
	_ = e.s.Pay(payment.Alipay, "UF_1", 0)
	if err := e.s.InjectFault(paysim.Fault{Provider: payment.WxPay, Kind: paysim.FaultUnavailable}); err == nil {
		t.Fatal("a 20000 fault for wxpay was accepted")
	}
	if err := e.s.InjectFault(paysim.Fault{Kind: paysim.FaultUnavailable, API: "trade.refund", Count: 1}); err != nil {
		t.Fatal(err)
	}
	r, err := c.TradeRefund(sdkCtx(t), alipay.TradeRefund{OutTradeNo: "UF_1", RefundAmount: "1.00", OutRequestNo: "UF_1R1"})
	if err != nil || r.Code != "20000" || r.SubCode != "isp.unknow-error" {
		t.Fatalf("refund under 20000: %v %+v", err, r)
	}
	if o, _ := e.s.Order(payment.Alipay, "UF_1"); o.Refunded != 0 {
		t.Fatalf("a 20000 refund was applied: %+v", o)
	}
	if err := e.s.InjectFault(paysim.Fault{Kind: paysim.FaultSystemError, API: "trade.refund", Count: 1}); err != nil {
		t.Fatal(err)
	}
	r, err = c.TradeRefund(sdkCtx(t), alipay.TradeRefund{OutTradeNo: "UF_1", RefundAmount: "1.00", OutRequestNo: "UF_1R1"})
	if err != nil || r.Code != "40004" || r.SubCode != "ACQ.SYSTEM_ERROR" {
		t.Fatalf("refund under system_error: %v %+v", err, r)
	}
	if o, _ := e.s.Order(payment.Alipay, "UF_1"); o.Refunded != 100 {
		t.Fatalf("the system_error refund was not applied: %+v", o)
	}
	// The repeat with the same out_request_no reports it, once.
	if r, err := c.TradeRefund(sdkCtx(t), alipay.TradeRefund{OutTradeNo: "UF_1", RefundAmount: "1.00", OutRequestNo: "UF_1R1"}); err != nil || r.FundChange != "N" || r.RefundFee != "1.00" {
		t.Fatalf("repeat: %v %+v", err, r)
	}
	// A fault without provider that only Alipay can answer leaves WeChat alone.
	if err := e.s.InjectFault(paysim.Fault{Kind: paysim.FaultUnavailable}); err != nil {
		t.Fatal(err)
	}
	if f := e.s.TakeFault(payment.WxPay, "wxpay.query"); f != "" {
		t.Fatalf("wxpay call got fault %q", f)
	}
}
