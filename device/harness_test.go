package device

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// testClock is the real clock plus an offset the test can jump forward.
// time.Now().Add keeps the monotonic reading, so the engine's deadlines
// behave as in production.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// msg is one message the stand-in link saw the engine publish.
type msg = testrig.Message

// harness runs an engine over a real bbolt file with a stand-in link that
// publishes everything Due and records it.
type harness struct {
	t      *testing.T
	path   string
	clock  *testClock
	cfg    Config
	db     *store.DB
	e      *Engine
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	msgs []msg
	obs  []View
	// offline stops the stand-in link from publishing, as a lost MQTT
	// session does.
	offline atomic.Bool
}

func (h *harness) OrderChanged(v View) {
	h.mu.Lock()
	h.obs = append(h.obs, v)
	h.mu.Unlock()
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessAt(t, filepath.Join(t.TempDir(), "orders.db"), mod)
}

// newHarnessAt is newHarness over the store file at path (which may hold
// orders already).
func newHarnessAt(t *testing.T, path string, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, path: path, clock: &testClock{}}
	h.cfg = Config{
		DeviceID: "dev-1", Version: "test", DefaultProvider: "wxpay", DefaultExpire: 5 * time.Minute,
		MaxFee: 100000, PollInterval: 50 * time.Millisecond, AckTimeout: 2 * time.Second, OnNoAck: config.OnNoAckRefund,
		Merchants: map[string]map[payment.ProviderName]payment.Provider{
			"default": {payment.WxPay: newFake(payment.WxPay), payment.Alipay: newFake(payment.Alipay)},
		},
		Now: h.clock.Now, Observer: h,
	}
	if mod != nil {
		mod(&h.cfg)
	}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) wx() *fakeProvider {
	return h.cfg.Merchants["default"][payment.WxPay].(*fakeProvider)
}

func (h *harness) ali() *fakeProvider {
	return h.cfg.Merchants["default"][payment.Alipay].(*fakeProvider)
}

func (h *harness) start() {
	h.t.Helper()
	db, err := store.Open(h.path, store.Options{Timeout: time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	e, err := New(db, h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.db, h.e, h.cancel, h.done = db, e, cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := e.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		h.link(ctx, e)
	}()
	go func() { wg.Wait(); close(h.done) }()
}

// link publishes due outbox entries like link/ does (minus MQTT).
func (h *harness) link(ctx context.Context, e *Engine) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.OutboxChanged():
		case <-t.C:
		}
		if h.offline.Load() {
			continue
		}
		due, err := e.Due(h.clock.Now())
		if err != nil {
			continue
		}
		for _, o := range due {
			var m map[string]any
			_ = json.Unmarshal(o.Payload, &m)
			h.mu.Lock()
			h.msgs = append(h.msgs, msg{Topic: o.Topic, Payload: o.Payload, Fields: m})
			h.mu.Unlock()
			if err := e.Published(o.ID); err != nil && ctx.Err() == nil {
				h.t.Errorf("Published: %v", err)
			}
		}
	}
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		h.t.Fatal("engine did not stop")
	}
	h.db.Close()
	h.cancel = nil
}

func (h *harness) restart() {
	h.t.Helper()
	h.stop()
	h.start()
}

func (h *harness) send(topic string, payload string) {
	h.t.Helper()
	if err := h.e.Accept(context.Background(), topic, []byte(payload)); err != nil {
		h.t.Fatal(err)
	}
}

// advance jumps the clock and wakes the engine.
func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	signal(h.e.wakeCh)
}

func (h *harness) all(topic string) []msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []msg
	for _, m := range h.msgs {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// waitMsg waits for a message on topic that satisfies pred.
func (h *harness) waitMsg(topic string, pred func(msg) bool, what string) msg {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range h.all(topic) {
			if pred(m) {
				return m
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("timed out waiting for %s on %s; got:\n%s", what, topic, h.dump())
	return msg{}
}

func (h *harness) dump() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, m := range h.msgs {
		fmt.Fprintf(&b, "  %s %s\n", m.Topic, m.Payload)
	}
	return b.String()
}

func (h *harness) reply(requestID string) msg {
	h.t.Helper()
	return h.waitMsg(contract.TopicReply, func(m msg) bool { return m.Str("request_id") == requestID }, "reply "+requestID)
}

func (h *harness) result(otn, status string) msg {
	h.t.Helper()
	return h.waitMsg(contract.TopicResult, func(m msg) bool { return m.Str("out_trade_no") == otn && m.Str("status") == status }, "result "+status+" for "+otn)
}

func (h *harness) results(otn string) []msg {
	var out []msg
	for _, m := range h.all(contract.TopicResult) {
		if m.Str("out_trade_no") == otn {
			out = append(out, m)
		}
	}
	return out
}

func (h *harness) event(otn, reason string) msg {
	h.t.Helper()
	return h.waitMsg(contract.TopicEvent, func(m msg) bool {
		return m.Str("out_trade_no") == otn && strings.HasPrefix(m.Str("reason"), reason)
	}, "event "+reason+" for "+otn)
}

// waitState waits until the stored order reaches state.
func (h *harness) waitState(otn string, st store.State) store.Order {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var o store.Order
	var err error
	for time.Now().Before(deadline) {
		o, err = h.e.load(otn)
		if err == nil && o.State == st {
			return o
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("order %s: state %s (err %v), want %s; messages:\n%s", otn, o.State, err, st, h.dump())
	return o
}

func createPayload(requestID, otn string, fee int, provider string, extra string) string {
	p := ""
	if provider != "" {
		p = fmt.Sprintf(`"provider":%q,`, provider)
	}
	return fmt.Sprintf(`{"request_id":%q,%s"needQRcode":true,"data":{"out_trade_no":%q,"total_fee":%d,"subject":"Massage 15 min","type":"massage_15","custom":{"seat":3}%s}}`,
		requestID, p, otn, fee, extra)
}

// createOK sends a create and waits for its successful reply.
func (h *harness) createOK(requestID, otn string, fee int, provider string) msg {
	h.t.Helper()
	h.send(contract.TopicCreate, createPayload(requestID, otn, fee, provider, ""))
	r := h.reply(requestID)
	if r.Num("code") != 0 {
		h.t.Fatalf("create %s failed: %s", otn, r.Payload)
	}
	return r
}

func ackPayload(otn string, ok bool) string {
	return fmt.Sprintf(`{"request_id":"ack-%s","out_trade_no":%q,"ok":%v}`, otn, otn, ok)
}
