package device

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// The money rule: the order total at the provider decides delivery; what
// the buyer paid is recorded and reported, never compared.

func TestDiscountedPaymentDelivered(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "money_0001", 1000, "wxpay")
	// A WeChat coupon: amount.total stays 1000, payer_total is 900.
	if err := h.wx().payAmounts("money_0001", payment.Amounts{Total: 1000, PayerTotal: 900, Discount: 100}); err != nil {
		t.Fatal(err)
	}
	res := h.result("money_0001", "paid")
	if res.Num("total_fee") != 1000 || res.Num("payer_total") != 900 || res.Num("discount") != 100 {
		t.Fatalf("paid result %s: want total_fee 1000, payer_total 900, discount 100", res.Payload)
	}
	h.send(contract.TopicAck, ackPayload("money_0001", true))
	o := h.waitState("money_0001", store.Delivered)
	if l := o.Leg(payment.WxPay); l.Total != 1000 || l.PayerTotal != 900 || l.Discount != 100 || len(o.Refunds) != 0 || len(o.Flags) != 0 {
		t.Fatalf("order %+v", o)
	}
	h.send(contract.TopicQuery, `{"request_id":"q1","out_trade_no":"money_0001"}`)
	if q := h.reply("q1"); q.Num("paid_fee") != 1000 || q.Num("payer_total") != 900 || q.Num("discount") != 100 {
		t.Fatalf("query reply %s", q.Payload)
	}
}

func TestZeroBuyerAmountsDelivered(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "money_0002", 1000, "alipay")
	h.ali().scan("money_0002")
	// A real TRADE_SUCCESS answer with buyer_pay_amount and
	// receipt_amount "0.00": only the total is known.
	if err := h.ali().payAmounts("money_0002", payment.Amounts{Total: 1000}); err != nil {
		t.Fatal(err)
	}
	res := h.result("money_0002", "paid")
	if res.Num("payer_total") != 1000 || res.Num("discount") != 0 || !strings.Contains(string(res.Payload), `"discount":0`) {
		t.Fatalf("paid result %s: want payer_total 1000 and discount 0", res.Payload)
	}
	h.send(contract.TopicAck, ackPayload("money_0002", true))
	h.waitState("money_0002", store.Delivered)
}

func TestResultFieldsOnlyOnPaid(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = 200 * time.Millisecond })
	h.createOK("r1", "money_0003", 500, "wxpay")
	_ = h.wx().pay("money_0003", 0)
	h.result("money_0003", "paid")
	res := h.result("money_0003", "refunded")
	if strings.Contains(string(res.Payload), "payer_total") || res.Num("refund_fee") != 500 {
		t.Fatalf("refunded result %s", res.Payload)
	}
}

func TestAckFailureRefundsProviderTotal(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "money_0004", 1000, "wxpay")
	_ = h.wx().payAmounts("money_0004", payment.Amounts{Total: 1000, PayerTotal: 1, Discount: 999})
	h.result("money_0004", "paid")
	h.send(contract.TopicAck, ackPayload("money_0004", false))
	h.result("money_0004", "refunded")
	// The refund asks for the order total, whatever the buyer paid: the
	// provider returns the buyer's share and the coupon's itself.
	if sum, n := h.wx().refundTotal("money_0004"); sum != 1000 || n != 1 {
		t.Fatalf("refunded %d in %d refunds, want 1000 in one", sum, n)
	}
}

func TestOperatorRefundBoundedByProviderTotal(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "money_0005", 1000, "wxpay")
	_ = h.wx().payAmounts("money_0005", payment.Amounts{Total: 1000, PayerTotal: 800, Discount: 200})
	h.result("money_0005", "paid")
	h.send(contract.TopicAck, ackPayload("money_0005", true))
	h.waitState("money_0005", store.Delivered)
	h.send(contract.TopicRefund, `{"request_id":"f1","out_trade_no":"money_0005","refund_fee":900}`)
	if r := h.reply("f1"); r.Num("code") != 0 || r.Num("refund_fee") != 900 {
		t.Fatalf("refund 900 of a 1000 order paid 800 by the buyer: %s", r.Payload)
	}
	h.send(contract.TopicRefund, `{"request_id":"f2","out_trade_no":"money_0005","refund_fee":101}`)
	if r := h.reply("f2"); r.Str("error") != string(contract.ErrFeeOutOfRange) || r.Str("field") != "refund_fee" {
		t.Fatalf("refund beyond what the provider holds: %s", r.Payload)
	}
	h.send(contract.TopicRefund, `{"request_id":"f3","out_trade_no":"money_0005"}`)
	if r := h.reply("f3"); r.Num("code") != 0 || r.Num("refund_fee") != 100 {
		t.Fatalf("refund of the rest: %s", r.Payload)
	}
	o := h.waitState("money_0005", store.Refunded)
	if o.RefundedFee != 1000 || o.Status != store.StatusRefunded {
		t.Fatalf("order %+v", o)
	}
}

// alerts counts the non-transition events (from = to) whose reason starts
// with flag.
func (h *harness) alerts(otn, flag string) int {
	n := 0
	for _, m := range h.all(contract.TopicEvent) {
		if m.Str("out_trade_no") == otn && m.Str("from") == m.Str("to") && strings.HasPrefix(m.Str("reason"), flag) {
			n++
		}
	}
	return n
}

func TestRefundStuckBoundedThenSlow(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Retry = Retry{StuckAfter: 3, Slow: time.Hour} })
	wx := h.wx()
	wx.fault("refund", errFakeNetwork, errFakeNetwork, errFakeNetwork, errFakeNetwork)
	h.createOK("r1", "stuck_0001", 700, "wxpay")
	_ = wx.pay("stuck_0001", 0)
	h.result("stuck_0001", "paid")
	h.send(contract.TopicAck, ackPayload("stuck_0001", false))

	ev := h.event("stuck_0001", contract.FlagRefundStuck)
	if ev.Str("from") != ev.Str("to") || ev.Str("to") != string(store.Refunding) || !strings.Contains(ev.Str("reason"), "stuck_0001R1") {
		t.Fatalf("stuck event %s", ev.Payload)
	}
	if n := wx.count("refund"); n != 3 {
		t.Fatalf("%d refund calls when reported stuck, want the bound 3", n)
	}
	// Retrying goes on, but at the slow rate: nothing within the normal
	// backoff, one call once the slow interval passed.
	h.advance(time.Minute)
	time.Sleep(300 * time.Millisecond)
	if n := wx.count("refund"); n != 3 {
		t.Fatalf("%d refund calls a minute after stuck, want still 3 (slow rate is 1 h)", n)
	}
	h.advance(time.Hour)
	for deadline := time.Now().Add(10 * time.Second); wx.count("refund") < 4 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := wx.count("refund"); n != 4 {
		t.Fatalf("%d refund calls after the slow interval, want 4", n)
	}
	h.advance(time.Hour) // the fifth call succeeds
	h.result("stuck_0001", "refunded")
	o := h.waitState("stuck_0001", store.Refunded)
	if !o.HasFlag(contract.FlagRefundStuck) || h.alerts("stuck_0001", contract.FlagRefundStuck) != 1 {
		t.Fatalf("flags %v, %d stuck events; want the flag and one event", o.Flags, h.alerts("stuck_0001", contract.FlagRefundStuck))
	}
	if r := o.Refunds[0]; r.Stuck || r.Unknown != 0 || r.State != store.RefundSuccess {
		t.Fatalf("refund %+v", r)
	}
	h.send(contract.TopicOrders, `{"request_id":"l1","flag":"refund_stuck"}`)
	if l := h.reply("l1"); !strings.Contains(string(l.Payload), `"out_trade_no":"stuck_0001"`) {
		t.Fatalf("orders filtered by refund_stuck: %s", l.Payload)
	}
}

func TestRefundAbnormalReportedOnce(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Retry = Retry{StuckAfter: 3, Slow: time.Hour} })
	wx := h.wx()
	wx.refundsEnd = payment.RefundAbnormal
	h.createOK("r1", "abn_0001", 300, "wxpay")
	_ = wx.pay("abn_0001", 0)
	h.result("abn_0001", "paid")
	h.send(contract.TopicAck, ackPayload("abn_0001", false))
	h.event("abn_0001", contract.FlagRefundAbnormal)
	// Queried at the slow rate, never re-sent, reported once.
	for range 3 {
		h.advance(time.Hour)
		time.Sleep(100 * time.Millisecond)
	}
	o := h.waitState("abn_0001", store.Refunding)
	if n := h.alerts("abn_0001", contract.FlagRefundAbnormal); n != 1 || !o.HasFlag(contract.FlagRefundAbnormal) {
		t.Fatalf("%d abnormal events, flags %v; want one event and the flag", n, o.Flags)
	}
	if wx.count("refund") != 1 || wx.count("query_refund") > 4 || o.Refunds[0].State != store.RefundAbnormal {
		t.Fatalf("refund calls %d, queries %d, refund %+v", wx.count("refund"), wx.count("query_refund"), o.Refunds[0])
	}
	// A human settles it at the merchant platform; the provider's refund
	// notification makes the daemon look at once, not at the slow rate.
	wx.mu.Lock()
	wx.refunds["abn_0001R1"].state = payment.RefundSuccess
	wx.mu.Unlock()
	h.send(contract.TopicNotify, string(wx.refundNotifyPayload("abn_0001", "abn_0001R1")))
	h.result("abn_0001", "refunded")
	h.waitState("abn_0001", store.Refunded)
}

func TestRefundClosedReportedOnce(t *testing.T) {
	h := newHarness(t, nil)
	h.wx().refundsEnd = payment.RefundClosed
	h.createOK("r1", "rcl_0001", 300, "wxpay")
	_ = h.wx().pay("rcl_0001", 0)
	h.result("rcl_0001", "paid")
	h.send(contract.TopicAck, ackPayload("rcl_0001", false))
	o := h.waitState("rcl_0001", store.RefundFailed)
	h.event("rcl_0001", contract.FlagRefundClosed)
	if n := h.alerts("rcl_0001", contract.FlagRefundClosed); n != 1 || !o.HasFlag(contract.FlagRefundClosed) {
		t.Fatalf("%d refund_closed alerts (the transition's own event aside), flags %v", n, o.Flags)
	}
}

func TestUnsendableRefundClosedAtOnce(t *testing.T) {
	h := newHarness(t, nil)
	wx := h.wx()
	wx.fault("refund", &payment.RejectedError{Provider: payment.WxPay, Op: "refund", Code: payment.CodeInvalidRefundAmount})
	h.createOK("r1", "bad_0001", 300, "wxpay")
	_ = wx.pay("bad_0001", 0)
	h.result("bad_0001", "paid")
	h.send(contract.TopicAck, ackPayload("bad_0001", false))
	o := h.waitState("bad_0001", store.RefundFailed)
	if wx.count("refund") != 1 || o.Refunds[0].State != store.RefundClosed {
		t.Fatalf("%d refund calls, refund %+v: an unsendable amount is a definite refusal, not retried", wx.count("refund"), o.Refunds[0])
	}
}

func TestCloseStuckBoundedThenSlow(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Retry = Retry{StuckAfter: 3, Slow: time.Hour} })
	wx := h.wx()
	h.createOK("r1", "cst_0001", 300, "wxpay")
	faults := make([]error, 50)
	for i := range faults {
		faults[i] = errFakeNetwork
	}
	wx.fault("query", faults...)
	h.send(contract.TopicCancel, `{"request_id":"c1","out_trade_no":"cst_0001"}`)
	ev := h.event("cst_0001", contract.FlagCloseStuck)
	if ev.Str("from") != string(store.Closing) || ev.Str("to") != string(store.Closing) {
		t.Fatalf("close_stuck event %s", ev.Payload)
	}
	calls := wx.count("query")
	h.advance(time.Minute)
	time.Sleep(300 * time.Millisecond)
	if n := wx.count("query"); n != calls {
		t.Fatalf("%d queries a minute after stuck, want still %d", n, calls)
	}
	wx.mu.Lock()
	wx.faults["query"] = nil
	wx.mu.Unlock()
	h.advance(time.Hour)
	o := h.waitState("cst_0001", store.Cancelled)
	if !o.HasFlag(contract.FlagCloseStuck) || h.alerts("cst_0001", contract.FlagCloseStuck) != 1 {
		t.Fatalf("flags %v, %d close_stuck events", o.Flags, h.alerts("cst_0001", contract.FlagCloseStuck))
	}
}

func TestOrdersFlagFilterValidated(t *testing.T) {
	h := newHarness(t, nil)
	h.send(contract.TopicOrders, `{"request_id":"l1","flag":"nonsense"}`)
	if r := h.reply("l1"); r.Str("error") != string(contract.ErrInvalidArgument) || r.Str("field") != "flag" {
		t.Fatalf("bad flag: %s", r.Payload)
	}
}

// logLines decodes a JSON log, one object a line.
func logLines(s string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(s, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestEventLogLevels(t *testing.T) {
	var logs syncbuf.Buffer
	h := newHarness(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	h.createOK("r1", "log_0001", 300, "wxpay")
	_ = h.wx().pay("log_0001", 0)
	h.result("log_0001", "paid")
	h.send(contract.TopicAck, ackPayload("log_0001", false))
	h.waitState("log_0001", store.Refunded)
	h.wx().mu.Lock()
	h.wx().refundsEnd = payment.RefundClosed
	h.wx().mu.Unlock()
	h.createOK("r2", "log_0002", 300, "wxpay")
	_ = h.wx().pay("log_0002", 0)
	h.result("log_0002", "paid")
	h.send(contract.TopicAck, ackPayload("log_0002", false))
	h.waitState("log_0002", store.RefundFailed)
	levels := map[string]string{}
	for _, l := range logLines(logs.String()) {
		if r, ok := l["reason"].(string); ok && (l["msg"] == "order event" || l["msg"] == "order needs attention") {
			levels[strings.SplitN(r, ":", 2)[0]] = fmt.Sprint(l["level"])
		}
	}
	if levels["refund_success"] != "INFO" || levels[contract.FlagRefundClosed] != "WARN" {
		t.Errorf("levels by event %v: want refund_success at INFO, refund_closed at WARN", levels)
	}
}
