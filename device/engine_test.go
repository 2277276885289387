package device

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

func TestCreatePaidAckDelivered(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ResultKey = []byte("result-key") })
	r := h.createOK("r1", "order_0001", 1000, "")
	info, _ := r.Fields["orderInfo"].(map[string]any)
	if info["code_url"] != "fake://wxpay/order_0001" || r.Str("pay_type") != contract.PayTypeWxNative ||
		r.Fields["needQRcode"] != true || !strings.HasPrefix(r.Str("qrcodeImage"), "data:image/png;base64,") ||
		r.Num("total_fee") != 1000 || r.Str("expires_at") == "" || r.Str("action") != contract.ActionCreate {
		t.Fatalf("create reply %s", r.Payload)
	}
	if err := h.wx().pay("order_0001", 0); err != nil {
		t.Fatal(err)
	}
	res := h.result("order_0001", "paid")
	var got contract.Result
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatal(err)
	}
	if got.TotalFee != 1000 || got.TransactionID != "tx-wxpay-order_0001" || got.Type != "massage_15" ||
		string(got.Custom) != `{"seat":3}` || got.Seq == 0 || got.PaidAt == "" || got.PayType != contract.PayTypeWxNative ||
		!got.VerifySignature([]byte("result-key")) {
		t.Fatalf("paid result %s", res.Payload)
	}
	h.send(contract.TopicAck, ackPayload("order_0001", true))
	h.reply("ack-order_0001")
	o := h.waitState("order_0001", store.Delivered)
	if o.Status != store.StatusPaid {
		t.Fatalf("status %d", o.Status)
	}
	h.event("order_0001", "ack")
	// Acked: no more re-publication even when the schedule comes round.
	n := len(h.results("order_0001"))
	h.advance(2 * time.Minute)
	time.Sleep(200 * time.Millisecond)
	if m := len(h.results("order_0001")); m != n {
		t.Fatalf("result re-published after ack: %d → %d", n, m)
	}
	// The display saw the QR and then the payment.
	h.mu.Lock()
	defer h.mu.Unlock()
	var states []string
	for _, v := range h.obs {
		states = append(states, v.State)
	}
	if !strings.Contains(strings.Join(states, ","), "pending,paid") {
		t.Fatalf("observer states %v", states)
	}
}

func TestResultRepublishedUntilAckSameSeq(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = time.Hour })
	h.createOK("r1", "order_0002", 500, "")
	_ = h.wx().pay("order_0002", 0)
	first := h.result("order_0002", "paid")
	for i := 0; i < 3; i++ {
		h.advance(61 * time.Second)
		want := i + 2
		h.waitMsg(contract.TopicResult, func(msg) bool { return len(h.results("order_0002")) >= want }, "re-publication")
	}
	for _, m := range h.results("order_0002") {
		if string(m.Payload) != string(first.Payload) {
			t.Fatalf("re-published result differs:\n%s\n%s", first.Payload, m.Payload)
		}
	}
}

func TestExpiryWithFinalClose(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0003", 100, "")
	h.advance(5*time.Minute + time.Second)
	res := h.result("order_0003", "expired")
	if res.Num("seq") == 0 {
		t.Fatalf("result %s", res.Payload)
	}
	o := h.waitState("order_0003", store.Expired)
	if o.Status != store.StatusClosed || h.wx().count("close") != 1 || h.wx().state("order_0003") != payment.StateClosed {
		t.Fatalf("status %d closes %d state %s", o.Status, h.wx().count("close"), h.wx().state("order_0003"))
	}
}

func TestPaidDuringFinalClose(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0004", 100, "")
	h.wx().mu.Lock()
	h.wx().payOnClose["order_0004"] = true
	h.wx().mu.Unlock()
	h.advance(5*time.Minute + time.Second)
	h.result("order_0004", "paid")
	h.event("order_0004", "paid_during_close")
	h.waitState("order_0004", store.Paid)
}

func TestCancel(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0005", 100, "")
	h.send(contract.TopicCancel, `{"request_id":"c1","out_trade_no":"order_0005"}`)
	if r := h.reply("c1"); r.Num("code") != 0 {
		t.Fatalf("cancel reply %s", r.Payload)
	}
	h.result("order_0005", "cancelled")
	h.waitState("order_0005", store.Cancelled)
	h.send(contract.TopicCancel, `{"request_id":"c2","out_trade_no":"order_0005"}`)
	if r := h.reply("c2"); r.Str("error") != string(contract.ErrOrderFinished) {
		t.Fatalf("second cancel %s", r.Payload)
	}
}

func TestSupersede(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0006", 100, "")
	h.createOK("r2", "order_0007", 200, "")
	res := h.result("order_0006", "cancelled")
	if !strings.Contains(res.Str("reason"), "superseded") {
		t.Fatalf("result %s", res.Payload)
	}
	if h.wx().state("order_0006") != payment.StateClosed {
		t.Fatal("superseded order not closed at the provider")
	}
	h.waitState("order_0007", store.Pending)
}

func TestSupersedeFindsPayment(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PollInterval = time.Hour })
	h.createOK("r1", "order_0008", 100, "")
	_ = h.wx().pay("order_0008", 0) // not yet seen: polls are an hour apart
	h.createOK("r2", "order_0009", 200, "")
	h.result("order_0008", "paid")
}

func TestRecreateSameAndConflict(t *testing.T) {
	h := newHarness(t, nil)
	a := h.createOK("r1", "order_0010", 100, "")
	b := h.createOK("r2", "order_0010", 100, "")
	if a.Str("qrcodeImage") != b.Str("qrcodeImage") || h.wx().count("create") != 1 {
		t.Fatalf("re-create made a new provider order (%d creates)", h.wx().count("create"))
	}
	// The refusal names the field that differs.
	h.send(contract.TopicCreate, createPayload("r3", "order_0010", 200, "", ""))
	if r := h.reply("r3"); r.Str("error") != string(contract.ErrDuplicateConflict) || r.Num("code") != 409 ||
		r.Str("field") != "data.total_fee" || r.Str("msg") != "order order_0010 is pending with data.total_fee 100, not 200" {
		t.Fatalf("conflict reply %s", r.Payload)
	}
	h.send(contract.TopicCreate, strings.Replace(createPayload("r3b", "order_0010", 100, "", ""), `"seat":3`, `"seat":4`, 1))
	if r := h.reply("r3b"); r.Str("field") != "data.custom" || !strings.Contains(r.Str("msg"), "data.custom differs") {
		t.Fatalf("conflict reply %s", r.Payload)
	}
	h.send(contract.TopicCreate, createPayload("r3c", "order_0010", 100, "alipay", ""))
	if r := h.reply("r3c"); r.Str("field") != "provider" {
		t.Fatalf("conflict reply %s", r.Payload)
	}
	h.send(contract.TopicCancel, `{"request_id":"c1","out_trade_no":"order_0010"}`)
	h.waitState("order_0010", store.Cancelled)
	h.send(contract.TopicCreate, createPayload("r4", "order_0010", 100, "", ""))
	if r := h.reply("r4"); r.Str("error") != string(contract.ErrOrderFinished) {
		t.Fatalf("finished reply %s", r.Payload)
	}
}

func TestErrorReplies(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Catalog = map[string]payment.Fen{"massage_15": 1000}
		delete(c.Merchants["default"], payment.Alipay)
	})
	big := `{"request_id":"big","pad":"` + strings.Repeat("x", contract.MaxPayload) + `"}`
	cases := []struct {
		topic, payload, id string
		want               contract.ErrorName
		code               int
	}{
		{contract.TopicCreate, big, "big", contract.ErrPayloadTooLarge, 400}, // the id before the cut is echoed
		{contract.TopicCreate, "{\"request_id\":\"u\xff\"}", "", contract.ErrBadJSON, 400},
		{contract.TopicCreate, `{"request_id":"bj",`, "", contract.ErrBadJSON, 400},
		{contract.TopicCreate, `{"request_id":"ia","data":{"out_trade_no":"order_0011","total_fee":"1000","subject":"s","type":"massage_15"}}`, "ia", contract.ErrInvalidArgument, 400},
		{contract.TopicCreate, createPayload("fe", "order_0011", 100001, "", ""), "fe", contract.ErrFeeOutOfRange, 400},
		{contract.TopicCreate, createPayload("pm", "order_0011", 999, "", ""), "pm", contract.ErrPriceMismatch, 400},
		{contract.TopicCreate, createPayload("up", "order_0011", 1000, "alipay", ""), "up", contract.ErrUnsupportedProvider, 400},
		{contract.TopicCreate, createPayload("um", "order_0011", 1000, "", `,"pid":"other"`), "um", contract.ErrUnknownMerchant, 400},
		{contract.TopicQuery, `{"request_id":"nf","out_trade_no":"order_9999"}`, "nf", contract.ErrOrderNotFound, 400},
		{contract.TopicAck, `{"request_id":"ak","out_trade_no":"order_9999"}`, "ak", contract.ErrInvalidArgument, 400},
		{contract.TopicRefund, `{"request_id":"rf","out_trade_no":"order_9999"}`, "rf", contract.ErrOrderNotFound, 400},
		{contract.TopicNotify, `{"request_id":"nt","provider":"wxpay","headers":{},"body":"{}"}`, "nt", contract.ErrSignatureInvalid, 400},
	}
	for _, c := range cases {
		h.send(c.topic, c.payload)
	}
	// Malformed payloads without a readable request_id reply with "";
	// count them instead of matching ids.
	for _, c := range cases {
		if c.id == "" {
			continue
		}
		r := h.reply(c.id)
		if r.Str("error") != string(c.want) || int(r.Num("code")) != c.code || r.Str("msg") == "" {
			t.Errorf("%s: reply %s, want %s", c.id, r.Payload, c.want)
		}
	}
	h.waitMsg(contract.TopicReply, func(msg) bool { return len(h.all(contract.TopicReply)) >= len(cases) }, "all replies")
	anon := map[string]bool{}
	for _, m := range h.all(contract.TopicReply) {
		if m.Str("request_id") == "" {
			anon[m.Str("error")] = true
		}
	}
	if !anon[string(contract.ErrBadJSON)] || anon[string(contract.ErrPayloadTooLarge)] {
		t.Fatalf("anonymous replies %v", anon)
	}
	if n := len(h.all(contract.TopicReply)); n != len(cases) {
		t.Fatalf("%d replies for %d commands:\n%s", n, len(cases), h.dump())
	}
}

func TestClockNotSynced(t *testing.T) {
	synced := false
	h := newHarness(t, func(c *Config) { c.ClockSynced = func() (bool, error) { return synced, nil } })
	h.send(contract.TopicCreate, createPayload("r1", "order_0012", 100, "", ""))
	if r := h.reply("r1"); r.Str("error") != string(contract.ErrClockNotSynced) || r.Num("code") != 503 {
		t.Fatalf("reply %s", r.Payload)
	}
	h2 := newHarness(t, func(c *Config) { c.BuildTime = time.Now().Add(time.Hour) })
	h2.send(contract.TopicCreate, createPayload("r1", "order_0012", 100, "", ""))
	if r := h2.reply("r1"); r.Str("error") != string(contract.ErrClockNotSynced) {
		t.Fatalf("reply before build time %s", r.Payload)
	}
}

func TestSignedRequests(t *testing.T) {
	key := []byte("k1")
	h := newHarness(t, func(c *Config) { c.ResultKey, c.RequireSignedRequests = key, true })
	h.send(contract.TopicCreate, createPayload("r1", "order_0013", 100, "", ""))
	if r := h.reply("r1"); r.Str("error") != string(contract.ErrSignatureInvalid) {
		t.Fatalf("unsigned reply %s", r.Payload)
	}
	ts := h.clock.Now().Unix()
	sig := contract.SignCreate(key, "order_0013", 100, "massage_15", ts)
	p := strings.Replace(createPayload("r2", "order_0013", 100, "", ""), `"needQRcode"`, fmt.Sprintf(`"ts":%d,"sig":%q,"needQRcode"`, ts, sig), 1)
	h.send(contract.TopicCreate, p)
	if r := h.reply("r2"); r.Num("code") != 0 {
		t.Fatalf("signed reply %s", r.Payload)
	}
	_ = h.wx().pay("order_0013", 0)
	h.result("order_0013", "paid")
	h.send(contract.TopicAck, ackPayload("order_0013", true)) // unsigned: refused
	if r := h.reply("ack-order_0013"); r.Str("error") != string(contract.ErrSignatureInvalid) {
		t.Fatalf("unsigned ack %s", r.Payload)
	}
	h.send(contract.TopicAck, fmt.Sprintf(`{"request_id":"a2","out_trade_no":"order_0013","ok":true,"ts":%d,"sig":%q}`, ts, contract.SignAck(key, "order_0013", true, ts)))
	h.reply("a2")
	h.waitState("order_0013", store.Delivered)
}

func TestNoAckRefundsOnce(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = 300 * time.Millisecond })
	h.createOK("r1", "order_0014", 100, "")
	_ = h.wx().pay("order_0014", 0)
	h.result("order_0014", "paid")
	res := h.result("order_0014", "refunded")
	if res.Num("refund_fee") != 100 {
		t.Fatalf("refunded result %s", res.Payload)
	}
	o := h.waitState("order_0014", store.Refunded)
	if o.Status != store.StatusRefunded || !o.HasFlag(contract.FlagNoAck) {
		t.Fatalf("order %+v", o)
	}
	time.Sleep(300 * time.Millisecond)
	if sum, n := h.wx().refundTotal("order_0014"); sum != 100 || n != 1 || o.Refunds[0].OutRefundNo != "order_0014R1" {
		t.Fatalf("refunds %d fen in %d refunds (%+v)", sum, n, o.Refunds)
	}
	// A late ack changes nothing but is recorded.
	h.send(contract.TopicAck, ackPayload("order_0014", true))
	h.reply("ack-order_0014")
	h.event("order_0014", contract.FlagLateAck)
}

func TestAckFalseRefunds(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = time.Hour })
	h.createOK("r1", "order_0015", 300, "")
	_ = h.wx().pay("order_0015", 0)
	h.result("order_0015", "paid")
	h.send(contract.TopicAck, `{"request_id":"a1","out_trade_no":"order_0015","ok":false,"reason":"motor jammed"}`)
	h.reply("a1")
	h.result("order_0015", "refunded")
	h.waitState("order_0015", store.Refunded)
	if sum, _ := h.wx().refundTotal("order_0015"); sum != 300 {
		t.Fatalf("refunded %d", sum)
	}
}

func TestNoAckHold(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = 200 * time.Millisecond; c.OnNoAck = config.OnNoAckHold })
	h.createOK("r1", "order_0016", 100, "")
	_ = h.wx().pay("order_0016", 0)
	h.event("order_0016", "ack_timeout_hold")
	h.waitState("order_0016", store.Held)
	if _, n := h.wx().refundTotal("order_0016"); n != 0 {
		t.Fatal("hold refunded")
	}
	h.send(contract.TopicAck, ackPayload("order_0016", true))
	h.waitState("order_0016", store.Delivered)
}

func TestAnyModePayOneClosesOther(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DefaultProvider = contract.ProviderAny })
	r := h.createOK("r1", "order_0017", 100, "")
	info, _ := r.Fields["orderInfo"].(map[string]any)
	if info["code_url"] == nil || info["qr_code"] == nil || r.Str("pay_type") != contract.PayTypeAny {
		t.Fatalf("any reply %s", r.Payload)
	}
	h.ali().scan("order_0017")
	_ = h.ali().pay("order_0017", 0)
	res := h.result("order_0017", "paid")
	if res.Str("pay_type") != contract.PayTypeAlipayPrecreate || res.Str("provider") != "alipay" {
		t.Fatalf("result %s", res.Payload)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.wx().state("order_0017") != payment.StateClosed && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.wx().state("order_0017") != payment.StateClosed {
		t.Fatal("losing WeChat order not closed")
	}
}

func TestAnyModePayBoth(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DefaultProvider = contract.ProviderAny; c.AckTimeout = time.Hour })
	h.createOK("r1", "order_0018", 100, "")
	_ = h.wx().pay("order_0018", 0)
	_ = h.ali().pay("order_0018", 0)
	res := h.result("order_0018", "paid")
	winner := res.Str("provider")
	h.event("order_0018", contract.FlagDuplicatePayment)
	loser := h.ali()
	if winner == "alipay" {
		loser = h.wx()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if sum, _ := loser.refundTotal("order_0018"); sum == 100 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sum, n := loser.refundTotal("order_0018"); sum != 100 || n != 1 {
		t.Fatalf("duplicate refunded %d in %d", sum, n)
	}
	h.send(contract.TopicAck, ackPayload("order_0018", true))
	o := h.waitState("order_0018", store.Delivered)
	if string(o.Winner) != winner || !o.HasFlag(contract.FlagDuplicatePayment) {
		t.Fatalf("order %+v", o)
	}
	if len(h.results("order_0018")) < 1 {
		t.Fatal("no result")
	}
	for _, m := range h.results("order_0018") {
		if m.Str("status") != "paid" {
			t.Fatalf("unexpected result %s", m.Payload)
		}
	}
}

func TestAmountMismatchRefunded(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0019", 1000, "")
	_ = h.wx().pay("order_0019", 1)
	res := h.result("order_0019", "refunded")
	o := h.waitState("order_0019", store.Refunded)
	if !o.HasFlag(contract.FlagAmountMismatch) || o.Status != store.StatusRefunded {
		t.Fatalf("order %+v", o)
	}
	for _, m := range h.results("order_0019") {
		if m.Str("status") == "paid" {
			t.Fatalf("mismatched payment delivered: %s", m.Payload)
		}
	}
	if sum, _ := h.wx().refundTotal("order_0019"); sum != 1 {
		t.Fatalf("refunded %d, want the 1 fen paid", sum)
	}
	_ = res
}

func TestLatePaymentRefunded(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0020", 100, "")
	h.send(contract.TopicCancel, `{"request_id":"c1","out_trade_no":"order_0020"}`)
	h.waitState("order_0020", store.Cancelled)
	_ = h.wx().pay("order_0020", 0)
	h.send(contract.TopicNotify, string(h.wx().notifyPayload("order_0020", false)))
	h.event("order_0020", contract.FlagLatePayment)
	o := h.waitState("order_0020", store.Refunded)
	if sum, _ := h.wx().refundTotal("order_0020"); sum != 100 || o.Status != store.StatusRefunded {
		t.Fatalf("refunded %d status %d", sum, o.Status)
	}
	for _, m := range h.results("order_0020") {
		if m.Str("status") != "cancelled" {
			t.Fatalf("late payment produced result %s", m.Payload)
		}
	}
}

func TestForgedNotificationIgnored(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PollInterval = 30 * time.Second })
	h.createOK("r1", "order_0021", 100, "")
	queries := h.wx().count("query")
	p := strings.Replace(string(h.wx().notifyPayload("order_0021", true)), `{"body"`, `{"request_id":"n1","body"`, 1)
	h.send(contract.TopicNotify, p)
	if r := h.reply("n1"); r.Str("error") != string(contract.ErrSignatureInvalid) {
		t.Fatalf("reply %s", r.Payload)
	}
	if h.wx().count("query") != queries {
		t.Fatal("forged notification triggered a query")
	}
	h.waitState("order_0021", store.Pending)
}

func TestNotificationWithoutWaitingForPoll(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PollInterval = 30 * time.Second })
	h.createOK("r1", "order_0022", 100, "")
	_ = h.wx().pay("order_0022", 0)
	start := time.Now()
	h.send(contract.TopicNotify, string(h.wx().notifyPayload("order_0022", false)))
	h.result("order_0022", "paid")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("result took %s", d)
	}
}

func TestProviderUnavailableOnCreateClosesOrder(t *testing.T) {
	h := newHarness(t, nil)
	h.wx().fault("create", errFakeNetwork)
	h.send(contract.TopicCreate, createPayload("r1", "order_0023", 100, "", ""))
	if r := h.reply("r1"); r.Str("error") != string(contract.ErrProviderUnavailable) || r.Num("code") != 503 {
		t.Fatalf("reply %s", r.Payload)
	}
	h.waitState("order_0023", store.Failed)
	h.wx().fault("create", &payment.RejectedError{Provider: payment.WxPay, Op: "create", Code: "INVALID_REQUEST", Message: "bad"})
	h.send(contract.TopicCreate, createPayload("r2", "order_0024", 100, "", ""))
	if r := h.reply("r2"); r.Str("error") != string(contract.ErrProviderRejected) || !strings.Contains(r.Str("msg"), "INVALID_REQUEST") {
		t.Fatalf("reply %s", r.Payload)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range h.obs {
		if (v.OutTradeNo == "order_0023" || v.OutTradeNo == "order_0024") && len(v.Codes) > 0 {
			t.Fatalf("failed order shown: %+v", v)
		}
	}
}

func TestUnknownQueryBacksOff(t *testing.T) {
	h := newHarness(t, nil)
	h.wx().fault("query", errFakeNetwork, errFakeNetwork, fmt.Errorf("429: %w", payment.ErrRateLimited))
	h.createOK("r1", "order_0025", 100, "")
	_ = h.wx().pay("order_0025", 0)
	h.result("order_0025", "paid")
}

func TestOperatorPartialRefund(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0026", 1000, "")
	_ = h.wx().pay("order_0026", 0)
	h.result("order_0026", "paid")
	h.send(contract.TopicAck, ackPayload("order_0026", true))
	h.waitState("order_0026", store.Delivered)
	h.send(contract.TopicRefund, `{"request_id":"f1","out_trade_no":"order_0026","refund_fee":300}`)
	if r := h.reply("f1"); r.Num("code") != 0 || r.Str("out_refund_no") != "order_0026R1" {
		t.Fatalf("reply %s", r.Payload)
	}
	o := h.waitState("order_0026", store.Refunded)
	if o.Status != store.StatusPartlyRefunded || o.RefundedFee != 300 {
		t.Fatalf("status %d refunded %d", o.Status, o.RefundedFee)
	}
	h.send(contract.TopicRefund, `{"request_id":"f1","out_trade_no":"order_0026","refund_fee":300}`) // redelivery
	h.waitMsg(contract.TopicReply, func(msg) bool {
		n := 0
		for _, m := range h.all(contract.TopicReply) {
			if m.Str("request_id") == "f1" {
				n++
			}
		}
		return n == 2
	}, "second reply")
	h.send(contract.TopicRefund, `{"request_id":"f2","out_trade_no":"order_0026","refund_fee":800}`)
	if r := h.reply("f2"); r.Str("error") != string(contract.ErrFeeOutOfRange) {
		t.Fatalf("over-refund reply %s", r.Payload)
	}
	if sum, n := h.wx().refundTotal("order_0026"); sum != 300 || n != 1 {
		t.Fatalf("refunded %d in %d", sum, n)
	}
}

func TestRefundProcessingThenSuccess(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = 100 * time.Millisecond })
	h.wx().refundsProcess = true
	h.createOK("r1", "order_0027", 100, "")
	_ = h.wx().pay("order_0027", 0)
	h.waitState("order_0027", store.Refunding)
	time.Sleep(200 * time.Millisecond)
	h.wx().completeRefunds()
	h.result("order_0027", "refunded")
	h.waitState("order_0027", store.Refunded)
}

func TestOrdersAndQuery(t *testing.T) {
	h := newHarness(t, nil)
	for i := 1; i <= 3; i++ {
		h.createOK(fmt.Sprintf("r%d", i), fmt.Sprintf("order_003%d", i), 100*i, "")
	}
	h.send(contract.TopicOrders, `{"request_id":"o1","limit":2}`)
	r := h.reply("o1")
	list, _ := r.Fields["orders"].([]any)
	if len(list) != 2 || r.Str("next") != "order_0032" || list[0].(map[string]any)["out_trade_no"] != "order_0033" {
		t.Fatalf("orders %s", r.Payload)
	}
	h.send(contract.TopicOrders, `{"request_id":"o2","after":"order_0032"}`)
	r = h.reply("o2")
	if list, _ := r.Fields["orders"].([]any); len(list) != 1 || r.Str("next") != "" {
		t.Fatalf("page 2 %s", r.Payload)
	}
	h.send(contract.TopicQuery, `{"request_id":"q1","out_trade_no":"order_0031"}`)
	if r := h.reply("q1"); r.Str("state") != "cancelled" || r.Num("status") != -1 {
		t.Fatalf("query %s", r.Payload)
	}
	h.send(contract.TopicReconcile, `{"request_id":"rc"}`)
	r = h.reply("rc")
	if r.Num("checked") != 3 || r.Num("provider_orders") != 3 {
		t.Fatalf("reconcile %s", r.Payload)
	}
	// An order with both codes is one order and two provider orders.
	h.createOK("r4", "order_0034", 400, "any")
	h.send(contract.TopicReconcile, `{"request_id":"rc2"}`)
	r = h.reply("rc2")
	if r.Num("checked") != 4 || r.Num("provider_orders") != 5 {
		t.Fatalf("reconcile with an any order %s", r.Payload)
	}
}

func TestReconcileFindsLatePayment(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0040", 100, "")
	h.send(contract.TopicCancel, `{"request_id":"c1","out_trade_no":"order_0040"}`)
	h.waitState("order_0040", store.Cancelled)
	_ = h.wx().pay("order_0040", 0)
	h.send(contract.TopicReconcile, `{"request_id":"rc"}`)
	r := h.reply("rc")
	if mm, _ := r.Fields["mismatches"].([]any); len(mm) != 1 {
		t.Fatalf("reconcile %s", r.Payload)
	}
	h.waitState("order_0040", store.Refunded)
}

func TestHealthyAndStatus(t *testing.T) {
	h := newHarness(t, nil)
	if !h.e.Healthy(time.Second) {
		t.Fatal("not healthy")
	}
	h.createOK("r1", "order_0041", 100, "")
	deadline := time.Now().Add(5 * time.Second)
	for h.e.Status().Pending != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := h.e.Status()
	if st.Pending != 1 || !st.Online || !st.ClockSynced || st.StartedAt == "" || st.Version != "test" {
		t.Fatalf("status %+v", st)
	}
}

func TestAnyModeOneLegUnknownStillPayable(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DefaultProvider = contract.ProviderAny })
	h.ali().fault("create", errFakeNetwork)
	r := h.createOK("r1", "order_0042", 100, "")
	info, _ := r.Fields["orderInfo"].(map[string]any)
	if info["code_url"] == nil || info["qr_code"] != nil {
		t.Fatalf("reply %s", r.Payload)
	}
	// The Alipay order whose creation outcome is unknown is closed in the
	// background; the WeChat one stays payable.
	deadline := time.Now().Add(5 * time.Second)
	for h.ali().count("close") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.ali().count("close") == 0 || h.wx().count("close") != 0 {
		t.Fatalf("closes: alipay %d wechat %d", h.ali().count("close"), h.wx().count("close"))
	}
	_ = h.wx().pay("order_0042", 0)
	h.result("order_0042", "paid")
}

func TestIdleWakeups(t *testing.T) {
	h := newHarness(t, nil)
	time.Sleep(100 * time.Millisecond)
	before := h.e.passes.Load()
	time.Sleep(1500 * time.Millisecond)
	if n := h.e.passes.Load() - before; n > 2 {
		t.Fatalf("%d loop passes in 1.5 s while idle", n)
	}
	if !h.e.Healthy(6 * time.Second) {
		t.Fatal("idle engine reported unhealthy")
	}
}

func TestRefundedDuringClose(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DefaultProvider = "alipay" })
	h.createOK("r1", "order_0043", 100, "")
	a := h.ali()
	a.mu.Lock()
	a.payOnClose["order_0043"], a.refundOnClose = true, true
	a.mu.Unlock()
	h.advance(5*time.Minute + time.Second)
	res := h.result("order_0043", "refunded")
	o := h.waitState("order_0043", store.Refunded)
	if !o.HasFlag(contract.FlagRefundedOnClose) || o.Status != store.StatusRefunded {
		t.Fatalf("order %+v", o)
	}
	for _, m := range h.results("order_0043") {
		if m.Str("status") == "paid" {
			t.Fatalf("delivered: %s", m.Payload)
		}
	}
	_ = res
}

// TestWxOrderNotExistDoesNotCloseOpenLeg: WeChat answers 4xx without a
// signature the SDK checks, so an ORDER_NOT_EXIST for an order whose prepay
// succeeded is not evidence that no money arrived. The order must stay in
// closing until a trustworthy answer, and a payment found then still counts.
func TestWxOrderNotExistDoesNotCloseOpenLeg(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_nx01", 100, "wxpay")
	wx := h.wx()
	wx.mu.Lock()
	saved := wx.orders["order_nx01"]
	delete(wx.orders, "order_nx01") // the provider now claims the order does not exist
	wx.mu.Unlock()
	h.advance(5*time.Minute + time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for wx.count("close") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if o, _ := h.e.load("order_nx01"); o.State != store.Closing {
		t.Fatalf("state %s after ORDER_NOT_EXIST for an open WeChat order, want closing", o.State)
	}
	if got := h.results("order_nx01"); len(got) != 0 {
		t.Fatalf("published %s on an untrustworthy answer", got[0].Payload)
	}
	// The provider answers properly again: the order was paid after all.
	wx.mu.Lock()
	wx.orders["order_nx01"] = saved
	wx.payLocked(saved, "order_nx01", payment.Amounts{Total: saved.total})
	wx.mu.Unlock()
	for i := 0; i < 20 && len(h.results("order_nx01")) == 0; i++ {
		h.advance(time.Minute)
		time.Sleep(20 * time.Millisecond)
	}
	h.result("order_nx01", "paid")
}
