package device

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/store"
)

// leaveInInbox records messages as if the daemon had accepted them at at
// and died before handling them.
func (h *harness) leaveInInbox(at time.Time, msgs ...[2]string) {
	h.t.Helper()
	h.stop()
	db, err := store.Open(h.path, store.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	err = db.Update(func(tx *store.Tx) error {
		for _, m := range msgs {
			if _, err := tx.AddInbox(store.InboxEntry{Topic: m[0], Payload: []byte(m[1]), ReceivedAt: at}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	db.Close()
}

// A create or cancel left in the inbox longer than the stale bound (here:
// across a long outage) is answered COMMAND_STALE and not executed: it must
// not supersede the order on screen. An ack, a query and a refund of the
// same age are processed.
func TestStaleInboxCommands(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0901", 100, "")
	_ = h.wx().pay("order_0901", 0)
	h.result("order_0901", "paid")
	h.createOK("r2", "order_0902", 200, "")

	old := h.clock.Now().Add(-2 * time.Minute)
	h.leaveInInbox(old,
		[2]string{contract.TopicCreate, createPayload("r3", "order_0903", 300, "", "")},
		[2]string{contract.TopicCancel, `{"request_id":"c1","out_trade_no":"order_0902"}`},
		[2]string{contract.TopicAck, ackPayload("order_0901", true)},
		[2]string{contract.TopicQuery, `{"request_id":"q1","out_trade_no":"order_0902"}`},
	)
	h.start()
	for _, id := range []string{"r3", "c1"} {
		if r := h.reply(id); r.Str("error") != string(contract.ErrCommandStale) || r.Num("code") != 409 {
			t.Errorf("%s: %s, want COMMAND_STALE 409", id, r.Payload)
		}
	}
	if r := h.reply("ack-order_0901"); r.Num("code") != 0 {
		t.Errorf("old ack refused: %s", r.Payload)
	}
	if r := h.reply("q1"); r.Num("code") != 0 || r.Str("state") != "pending" {
		t.Errorf("old query: %s", r.Payload)
	}
	h.waitState("order_0901", store.Delivered)
	if o := h.waitState("order_0902", store.Pending); o.State != store.Pending {
		t.Errorf("the stale cancel or create changed order_0902: %s", o.State)
	}
	if _, err := h.e.load("order_0903"); err == nil {
		t.Errorf("the stale create made an order")
	}
	if n := h.wx().count("create"); n != 2 {
		t.Errorf("%d provider creates, want 2", n)
	}
}

// A create from a controller still within the bound is executed after a
// restart, as before.
func TestFreshInboxCreateAfterRestart(t *testing.T) {
	h := newHarness(t, nil)
	h.leaveInInbox(h.clock.Now().Add(-5*time.Second), [2]string{contract.TopicCreate, createPayload("r1", "order_0904", 100, "", "")})
	h.start()
	if r := h.reply("r1"); r.Num("code") != 0 {
		t.Fatalf("fresh create: %s", r.Payload)
	}
}

// A signed create or cancel whose ts is outside the signature window is
// COMMAND_STALE; a signed ack of the same age is still a bad signature.
func TestSignedTSOutsideWindow(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	h := newHarness(t, func(c *Config) { c.ResultKey, c.RequireSignedRequests = key, true })
	now := h.clock.Now()
	old := now.Add(-10 * time.Minute).Unix()
	ts := now.Unix()
	h.send(contract.TopicCreate, fmt.Sprintf(`{"request_id":"r1","data":{"out_trade_no":"order_0905","total_fee":100,"subject":"s","type":"massage_15"},"ts":%d,"sig":%q}`,
		old, contract.SignCreate(key, "order_0905", 100, "massage_15", old)))
	if r := h.reply("r1"); r.Str("error") != string(contract.ErrCommandStale) || r.Str("field") != "ts" {
		t.Errorf("old signed create: %s", r.Payload)
	}
	h.send(contract.TopicCreate, fmt.Sprintf(`{"request_id":"r2","data":{"out_trade_no":"order_0906","total_fee":100,"subject":"s","type":"massage_15"},"ts":%d,"sig":%q}`,
		ts, contract.SignCreate(key, "order_0906", 100, "massage_15", ts)))
	if r := h.reply("r2"); r.Num("code") != 0 {
		t.Fatalf("signed create: %s", r.Payload)
	}
	h.send(contract.TopicCancel, fmt.Sprintf(`{"request_id":"c1","out_trade_no":"order_0906","ts":%d,"sig":%q}`, old, contract.SignCancel(key, "order_0906", old)))
	if r := h.reply("c1"); r.Str("error") != string(contract.ErrCommandStale) {
		t.Errorf("old signed cancel: %s", r.Payload)
	}
	h.send(contract.TopicAck, fmt.Sprintf(`{"request_id":"a1","out_trade_no":"order_0906","ok":true,"ts":%d,"sig":%q}`, old, contract.SignAck(key, "order_0906", true, old)))
	if r := h.reply("a1"); r.Str("error") != string(contract.ErrSignatureInvalid) {
		t.Errorf("old signed ack: %s", r.Payload)
	}
}

// An ack timeout waits for an ack that is already in the inbox: here the
// window is busy with creates held at the provider, so the ack waits its
// turn while the deadline passes.
func TestAckTimeoutWaitsForQueuedAck(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0907", 100, "")
	_ = h.wx().pay("order_0907", 0)
	h.result("order_0907", "paid")
	gate := make(chan struct{})
	h.wx().mu.Lock()
	h.wx().createGate = gate
	h.wx().mu.Unlock()
	for i := range InboxWindow {
		h.send(contract.TopicCreate, createPayload(fmt.Sprintf("busy%d", i), fmt.Sprintf("order_%04d", 1000+i), 100, "", ""))
	}
	h.send(contract.TopicAck, ackPayload("order_0907", true))
	h.advance(h.cfg.AckTimeout + time.Second)
	time.Sleep(300 * time.Millisecond)
	if o, _ := h.e.load("order_0907"); o.State != store.Paid {
		t.Fatalf("state %s with its ack in the inbox, want paid", o.State)
	}
	h.wx().mu.Lock()
	h.wx().createGate = nil
	h.wx().mu.Unlock()
	close(gate)
	h.waitState("order_0907", store.Delivered)
	if h.wx().count("refund") != 0 {
		t.Fatal("refunded an order whose ack was waiting in the inbox")
	}
}

// When the engine loop notices it stood still (the process was stopped),
// an ack deadline that fell due meanwhile gets one fresh ack_timeout: the
// ack may still be on its way from the broker.
func TestAckTimeoutGraceAfterStall(t *testing.T) {
	h := newHarness(t, nil)
	h.createOK("r1", "order_0908", 100, "")
	_ = h.wx().pay("order_0908", 0)
	h.result("order_0908", "paid")
	h.e.noteStall(time.Now(), 40*time.Second)
	h.advance(h.cfg.AckTimeout + time.Second)
	// The deadline passed during the "stall": no refund yet; the ack that
	// comes in within the grace delivers.
	time.Sleep(300 * time.Millisecond)
	if o, _ := h.e.load("order_0908"); o.State != store.Paid {
		t.Fatalf("state %s right after the stall, want paid", o.State)
	}
	h.send(contract.TopicAck, ackPayload("order_0908", true))
	h.waitState("order_0908", store.Delivered)

	// Without a stall the ack timeout acts as always.
	h.createOK("r2", "order_0909", 100, "")
	_ = h.wx().pay("order_0909", 0)
	h.result("order_0909", "paid")
	h.e.mu.Lock()
	h.e.stallAt = time.Time{}
	h.e.mu.Unlock()
	h.advance(h.cfg.AckTimeout + time.Second)
	h.waitState("order_0909", store.Refunded)
}

// A paid result that reached the broker may have been acted on, and the
// controller's ack be stuck while the MQTT session is down: the ack
// timeout waits, and once the session is back it waits a full ack_timeout
// more, so the ack that comes then delivers. A session that stays down
// holds it at most maxLinkHold: the customer is refunded without the
// broker. A session that has been up for ack_timeout changes nothing.
// (Found by a fault soak with the broker restarting every 15 s: the
// daemon's session was down 10 s at a time, and paid orders whose result
// had gone out were refunded past their 5 s ack timeout while the
// controller's ack waited at the broker.) A paid result that never left
// the device cannot have been acted on: its timeout acts on time and the
// result is withdrawn (the e2e TestBrokerOutageLongerThanAckTimeout shows
// the same with a real broker).
func TestAckTimeoutWaitsForLink(t *testing.T) {
	var logs syncbuf.Buffer
	h := newHarness(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	held := func(otn string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !heldFor(logs.String(), otn) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the ack timeout was not held for the session", otn)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if o, _ := h.e.load(otn); o.State != store.Paid {
			t.Fatalf("%s: %s while the session was away, want paid", otn, o.State)
		}
	}
	paid := func(otn string) {
		t.Helper()
		h.createOK("r-"+otn, otn, 100, "")
		_ = h.wx().pay(otn, 0)
		h.result(otn, "paid")
	}

	// Down past the deadline, then back: the late ack delivers.
	h.e.SetOnline(true)
	paid("order_0911")
	h.e.SetOnline(false)
	h.advance(h.cfg.AckTimeout + time.Second)
	held("order_0911")
	h.e.SetOnline(true)
	h.send(contract.TopicAck, ackPayload("order_0911", true))
	h.waitState("order_0911", store.Delivered)

	// Down for good: refunded maxLinkHold after the hold began.
	paid("order_0912")
	h.e.SetOnline(false)
	h.advance(h.cfg.AckTimeout + time.Second)
	held("order_0912")
	h.advance(maxLinkHold)
	h.waitState("order_0912", store.Refunded)

	// Up for longer than ack_timeout: the timeout acts as always.
	h.e.SetOnline(true)
	h.advance(h.cfg.AckTimeout + time.Second)
	paid("order_0913")
	h.advance(h.cfg.AckTimeout + time.Second)
	h.waitState("order_0913", store.Refunded)

	// Down before the payment: the paid result never left, so the
	// timeout does not wait, and the result is not sent after the
	// reconnect: the controller hears of the refund instead.
	h.createOK("r-order_0914", "order_0914", 100, "")
	h.offline.Store(true)
	h.e.SetOnline(false)
	_ = h.wx().pay("order_0914", 0)
	h.advance(time.Second) // the next poll sees the payment
	if o := h.waitState("order_0914", store.Paid); o.State != store.Paid {
		t.Fatalf("order_0914 %s", o.State)
	}
	h.advance(h.cfg.AckTimeout + time.Second)
	h.waitState("order_0914", store.Refunded)
	h.e.SetOnline(true)
	h.offline.Store(false)
	h.result("order_0914", "refunded")
	for _, m := range h.results("order_0914") {
		if m.Str("status") == "paid" {
			t.Fatalf("a paid result went out for an order refunded unseen: %s", m.Payload)
		}
	}
	if heldFor(logs.String(), "order_0914") {
		t.Error("order_0914's timeout waited for the session, though its result never left")
	}
}

// heldFor reports whether log has the line that holds otn's ack timeout
// for the MQTT session.
func heldFor(log, otn string) bool {
	for _, l := range logLines(log) {
		if l["order"] == otn && strings.HasPrefix(fmt.Sprint(l["msg"]), "ack timeout fell due while the MQTT session") {
			return true
		}
	}
	return false
}

// A payload over the limit is answered at once, in the commit that would
// have recorded it, and never enters the inbox.
func TestOversizedAnsweredOnAccept(t *testing.T) {
	h := newHarness(t, nil)
	big := `{"request_id":"big-1","out_trade_no":"order_0910","pad":"` + strings.Repeat("x", contract.MaxPayload) + `"}`
	h.send(contract.TopicQuery, big)
	r := h.reply("big-1")
	if r.Str("error") != string(contract.ErrPayloadTooLarge) || r.Str("action") != contract.ActionQuery {
		t.Fatalf("oversized: %s", r.Payload)
	}
	if !strings.Contains(r.Str("msg"), fmt.Sprint(len(big))) {
		t.Errorf("message does not give the real size %d: %s", len(big), r.Str("msg"))
	}
	err := h.db.View(func(tx *store.Tx) error {
		if n, _, _ := tx.InboxSize(); n != 0 {
			t.Errorf("%d inbox entries", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Many messages at once: handled at most InboxWindow at a time, every one
// answered exactly once.
func TestInboxWindow(t *testing.T) {
	h := newHarness(t, nil)
	var msgs []contract.Inbound
	for i := range 300 {
		msgs = append(msgs, contract.Inbound{Topic: contract.TopicQuery, Payload: fmt.Appendf(nil, `{"request_id":"q%d","out_trade_no":"order_%04d"}`, i, i)})
	}
	if err := h.e.AcceptAll(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(h.all(contract.TopicReply)) < len(msgs) && time.Now().Before(deadline) {
		h.e.mu.Lock()
		n := len(h.e.inflight)
		h.e.mu.Unlock()
		if n > InboxWindow {
			t.Fatalf("%d messages in flight, window is %d", n, InboxWindow)
		}
		time.Sleep(time.Millisecond)
	}
	seen := map[string]int{}
	for _, m := range h.all(contract.TopicReply) {
		seen[m.Str("request_id")]++
	}
	for i := range msgs {
		if n := seen[fmt.Sprintf("q%d", i)]; n != 1 {
			t.Errorf("q%d: %d replies", i, n)
		}
	}
	if n := h.e.inboxLen.Load(); n != 0 {
		t.Errorf("inbox count %d after all were answered", n)
	}
}
