package device

import (
	"context"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// seqs returns every distinct seq published per result status of an order.
func (h *harness) seqs(otn string) map[string]map[float64]bool {
	out := map[string]map[float64]bool{}
	for _, m := range h.results(otn) {
		s := m.Str("status")
		if out[s] == nil {
			out[s] = map[float64]bool{}
		}
		out[s][m.Num("seq")] = true
	}
	return out
}

func TestRestartPendingResumesPolling(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0101", 100, "")
	h.restart()
	_ = h.wx().pay("order_0101", 0)
	h.result("order_0101", "paid")
	if n := h.wx().count("create"); n != 1 {
		t.Fatalf("%d creates", n)
	}
}

func TestRestartPendingPastDeadlineExpires(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0102", 100, "")
	h.stop()
	h.clock.Advance(10 * time.Minute) // powered off past the deadline
	h.start()
	h.result("order_0102", "expired")
	if h.wx().count("close") != 1 {
		t.Fatal("not closed at the provider")
	}
}

func TestRestartMidCreate(t *testing.T) {
	h := newHarness(t, nil)
	gate := make(chan struct{})
	h.wx().mu.Lock()
	h.wx().createGate = gate
	h.wx().mu.Unlock()
	h.send(contract.TopicCreate, createPayload("r1", "order_0103", 100, "", ""))
	h.waitState("order_0103", store.Creating)
	h.stop() // crash while the provider call is in flight
	h.wx().mu.Lock()
	h.wx().createGate = nil
	h.wx().mu.Unlock()
	h.start()
	r := h.reply("r1")
	if r.Num("code") != 0 || r.Str("out_trade_no") != "order_0103" {
		t.Fatalf("reply after resume %s", r.Payload)
	}
	h.waitState("order_0103", store.Pending)
	if n := len(h.all(contract.TopicReply)); n != 1 {
		t.Fatalf("%d replies for one create:\n%s", n, h.dump())
	}
}

func TestRestartInboxReprocessed(t *testing.T) {
	h := newHarness(t, nil)
	h.stop()
	// Accepted (on disk, PUBACK sent) but the daemon died before handling it.
	db, err := store.Open(h.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(db, h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Accept(context.Background(), contract.TopicCreate, []byte(createPayload("r1", "order_0104", 100, "", ""))); err != nil {
		t.Fatal(err)
	}
	db.Close()
	h.start()
	if r := h.reply("r1"); r.Num("code") != 0 {
		t.Fatalf("reply %s", r.Payload)
	}
}

func TestRestartPaidUnackedRepublishesSameSeq(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = time.Hour })
	h.createOK("r1", "order_0105", 100, "")
	_ = h.wx().pay("order_0105", 0)
	first := h.result("order_0105", "paid")
	for i := 0; i < 2; i++ {
		want := len(h.results("order_0105")) + 1
		h.restart()
		h.waitMsg(contract.TopicResult, func(msg) bool { return len(h.results("order_0105")) >= want }, "re-publication after restart")
	}
	if s := h.seqs("order_0105"); len(s["paid"]) != 1 || !s["paid"][first.Num("seq")] {
		t.Fatalf("seqs %v", s)
	}
	h.send(contract.TopicAck, ackPayload("order_0105", true))
	h.waitState("order_0105", store.Delivered)
	// A new order after the restarts gets a larger seq.
	h.createOK("r2", "order_0106", 100, "")
	_ = h.wx().pay("order_0106", 0)
	if r := h.result("order_0106", "paid"); r.Num("seq") <= first.Num("seq") {
		t.Fatalf("seq %v after %v", r.Num("seq"), first.Num("seq"))
	}
}

func TestRestartAckGraceThenRefundOnce(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = 400 * time.Millisecond })
	h.createOK("r1", "order_0107", 100, "")
	_ = h.wx().pay("order_0107", 0)
	h.result("order_0107", "paid")
	h.stop()
	h.clock.Advance(time.Hour) // long power cut: the persisted ack deadline passed
	h.start()
	// The resumed order waits a full ack_timeout before refunding.
	h.waitState("order_0107", store.Refunded)
	h.restart()
	time.Sleep(300 * time.Millisecond)
	if sum, n := h.wx().refundTotal("order_0107"); sum != 100 || n != 1 {
		t.Fatalf("refunded %d in %d refunds", sum, n)
	}
	if s := h.seqs("order_0107"); len(s["paid"]) != 1 || len(s["refunded"]) != 1 {
		t.Fatalf("seqs %v", s)
	}
}

func TestRestartRefundingContinues(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = 100 * time.Millisecond })
	h.wx().refundsProcess = true
	h.createOK("r1", "order_0108", 100, "")
	_ = h.wx().pay("order_0108", 0)
	h.waitState("order_0108", store.Refunding)
	time.Sleep(100 * time.Millisecond)
	h.restart()
	h.wx().completeRefunds()
	h.result("order_0108", "refunded")
	if sum, n := h.wx().refundTotal("order_0108"); sum != 100 || n != 1 {
		t.Fatalf("refunded %d in %d refunds", sum, n)
	}
}

func TestRestartRefundUnknownOutcomeRetriedSameNumber(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AckTimeout = 100 * time.Millisecond })
	// The refund reaches the provider but the answer is lost, twice.
	h.wx().fault("refund", errFakeNetwork)
	h.createOK("r1", "order_0109", 100, "")
	_ = h.wx().pay("order_0109", 0)
	h.waitState("order_0109", store.Refunding)
	h.restart()
	h.waitState("order_0109", store.Refunded)
	if sum, n := h.wx().refundTotal("order_0109"); sum != 100 || n != 1 {
		t.Fatalf("refunded %d in %d refunds", sum, n)
	}
}

func TestRestartClosingRetries(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0110", 100, "")
	h.wx().fault("close", errFakeNetwork, errFakeNetwork, errFakeNetwork, errFakeNetwork)
	h.send(contract.TopicCancel, `{"request_id":"c1","out_trade_no":"order_0110"}`)
	h.waitState("order_0110", store.Closing)
	h.restart()
	h.result("order_0110", "cancelled")
	if h.wx().state("order_0110") != payment.StateClosed {
		t.Fatal("not closed")
	}
}
