package link

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/mqttclient"
)

// fakeEngine records what the link hands it and serves an in-memory outbox.
type fakeEngine struct {
	mu        sync.Mutex
	accepted  []accepted
	acceptErr error // returned by Accept while set
	outbox    []contract.Outgoing
	published []uint64
	status    contract.Status

	acceptedC  chan accepted
	publishedC chan uint64
	outboxC    chan struct{}
	statusC    chan struct{}
	onlineC    chan bool // every SetOnline
}

type accepted struct {
	suffix  string
	payload []byte
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{
		status:     contract.Status{Version: "test-1", Pending: 0, ClockSynced: true, StartedAt: "2026-01-02T03:04:05Z"},
		acceptedC:  make(chan accepted, 100),
		publishedC: make(chan uint64, 100),
		outboxC:    make(chan struct{}, 1),
		statusC:    make(chan struct{}, 1),
		onlineC:    make(chan bool, 100),
	}
}

func (e *fakeEngine) SetOnline(up bool) { e.onlineC <- up }

// waitOnline returns the next SetOnline report within d.
func waitOnline(t *testing.T, e *fakeEngine, d time.Duration) bool {
	t.Helper()
	return receive(t, e.onlineC, d, "no SetOnline report")
}

func (e *fakeEngine) Accept(ctx context.Context, msgs []contract.Inbound) error {
	e.mu.Lock()
	err := e.acceptErr
	if err == nil {
		for _, m := range msgs {
			a := accepted{m.Topic, append([]byte(nil), m.Payload...)}
			e.accepted = append(e.accepted, a)
			e.acceptedC <- a
		}
	}
	e.mu.Unlock()
	return err
}

func (e *fakeEngine) setAcceptErr(err error) {
	e.mu.Lock()
	e.acceptErr = err
	e.mu.Unlock()
}

func (e *fakeEngine) Due(now time.Time) ([]contract.Outgoing, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]contract.Outgoing(nil), e.outbox...), nil
}

func (e *fakeEngine) Published(id uint64) error {
	e.mu.Lock()
	for i, m := range e.outbox {
		if m.ID == id {
			e.outbox = append(e.outbox[:i:i], e.outbox[i+1:]...)
			break
		}
	}
	e.published = append(e.published, id)
	e.mu.Unlock()
	e.publishedC <- id
	return nil
}

func (e *fakeEngine) enqueue(m contract.Outgoing) {
	e.mu.Lock()
	e.outbox = append(e.outbox, m)
	e.mu.Unlock()
	select {
	case e.outboxC <- struct{}{}:
	default:
	}
}

func (e *fakeEngine) setPending(n int) {
	e.mu.Lock()
	e.status.Pending = n
	e.mu.Unlock()
	select {
	case e.statusC <- struct{}{}:
	default:
	}
}

func (e *fakeEngine) OutboxChanged() <-chan struct{} { return e.outboxC }
func (e *fakeEngine) StatusChanged() <-chan struct{} { return e.statusC }
func (e *fakeEngine) Status() contract.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

// running is a Link under test.
type running struct {
	link   *Link
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a link for prefix and clientID against url and waits until it
// has connected and subscribed.
func start(t *testing.T, url, prefix, clientID string, eng Engine, tweak func(*Options)) *running {
	t.Helper()
	opts := Options{
		URLs:                 []string{url},
		ClientID:             clientID,
		Prefix:               prefix,
		PublishTimeout:       2 * time.Second,
		ConnectTimeout:       2 * time.Second,
		MaxReconnectInterval: 2 * time.Second,
		DrainInterval:        200 * time.Millisecond,
		Logger:               slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tweak != nil {
		tweak(&opts)
	}
	l, err := New(opts, eng)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{link: l, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(r.stop)
	select {
	case <-l.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("link did not connect")
	}
	return r
}

func (r *running) stop() {
	r.once.Do(func() {
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			panic("link Run did not return after cancel")
		}
	})
}

// testWriter sends log lines to t.Log until the test is over; paho runs
// some callbacks on goroutines of its own, which may log a moment later.
type testWriter struct {
	t    *testing.T
	mu   *sync.Mutex
	done *bool
}

func newTestWriter(t *testing.T) testWriter {
	w := testWriter{t: t, mu: new(sync.Mutex), done: new(bool)}
	t.Cleanup(func() {
		w.mu.Lock()
		*w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func names(t *testing.T) (prefix, clientID string) {
	id := mqtttest.Unique("dev")
	return "kptest/" + id, "kioskpayd-" + id
}

func waitAccepted(t *testing.T, e *fakeEngine, d time.Duration) accepted {
	t.Helper()
	return receive(t, e.acceptedC, d, "engine did not receive the message")
}

func waitPublished(t *testing.T, e *fakeEngine, d time.Duration) uint64 {
	t.Helper()
	return receive(t, e.publishedC, d, "outbox entry was not confirmed")
}

// receive returns the next value on ch, failing the test with what after d.
func receive[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s within %s", what, d)
		var zero T
		return zero
	}
}

func TestInboundReachesEngine(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	eng := newFakeEngine()
	start(t, url, prefix, id, eng, nil)

	for _, suffix := range contract.InboundTopics {
		mqtttest.Publish(t, url, prefix+"/"+suffix, []byte(`{"request_id":"`+suffix+`"}`), false)
		a := waitAccepted(t, eng, 5*time.Second)
		if a.suffix != suffix || !bytes.Contains(a.payload, []byte(suffix)) {
			t.Fatalf("got %q %s, want %q", a.suffix, a.payload, suffix)
		}
	}

	// An oversized payload still reaches the engine, which owns the
	// PAYLOAD_TOO_LARGE reply.
	big := bytes.Repeat([]byte("x"), 20<<10)
	mqtttest.Publish(t, url, prefix+"/pay/create", big, false)
	if a := waitAccepted(t, eng, 5*time.Second); len(a.payload) != len(big) {
		t.Fatalf("oversized payload arrived with %d bytes, want %d", len(a.payload), len(big))
	}

	// Topics outside the contract are not subscribed.
	mqtttest.Publish(t, url, prefix+"/pay/bogus", []byte(`{}`), false)
	mqtttest.Publish(t, url, prefix+"/pay/reply", []byte(`{}`), false)
	mqtttest.Publish(t, url, prefix+"/pay/create/x", []byte(`{}`), false)
	select {
	case a := <-eng.acceptedC:
		t.Fatalf("engine got a message on %q", a.suffix)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestRetainedCommandIgnored(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	mqtttest.Publish(t, url, prefix+"/pay/create", []byte(`{"stale":true}`), true)
	t.Cleanup(func() { mqtttest.Publish(t, url, prefix+"/pay/create", nil, true) }) // clear it
	eng := newFakeEngine()
	start(t, url, prefix, id, eng, nil)
	mqtttest.Publish(t, url, prefix+"/pay/query", []byte(`{"fresh":true}`), false)
	a := waitAccepted(t, eng, 5*time.Second)
	if a.suffix != "pay/query" {
		t.Fatalf("engine got %q %s first; the retained create must be skipped", a.suffix, a.payload)
	}
}

// The broker queues commands sent while the daemon is down; the new process
// receives them because the handler exists before Connect and the session
// persists under the same client id.
func TestPersistentSessionAcrossRestart(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	first := start(t, url, prefix, id, newFakeEngine(), nil)
	first.stop()

	for i := range 3 {
		mqtttest.Publish(t, url, prefix+"/pay/create", []byte(`{"n":`+string(rune('0'+i))+`}`), false)
	}
	eng := newFakeEngine()
	start(t, url, prefix, id, eng, nil)
	got := map[string]bool{}
	for range 3 {
		a := waitAccepted(t, eng, 5*time.Second)
		got[string(a.payload)] = true
	}
	for i := range 3 {
		if p := `{"n":` + string(rune('0'+i)) + `}`; !got[p] {
			t.Errorf("queued message %s not delivered; got %v", p, got)
		}
	}
}

// A message the engine could not record is never acknowledged: the broker
// delivers it again to the next session.
func TestUnrecordedMessageIsRedelivered(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	broken := newFakeEngine()
	broken.setAcceptErr(errors.New("disk full"))
	r := start(t, url, prefix, id, broken, nil)
	mqtttest.Publish(t, url, prefix+"/pay/create", []byte(`{"precious":1}`), false)
	time.Sleep(300 * time.Millisecond) // let the handler fail a few times
	r.stop()

	eng := newFakeEngine()
	start(t, url, prefix, id, eng, nil)
	if a := waitAccepted(t, eng, 10*time.Second); string(a.payload) != `{"precious":1}` {
		t.Fatalf("redelivered %s", a.payload)
	}
}

// A transient Accept failure is retried inside the handler.
func TestAcceptRetried(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	eng := newFakeEngine()
	eng.setAcceptErr(errors.New("transient"))
	start(t, url, prefix, id, eng, nil)
	mqtttest.Publish(t, url, prefix+"/pay/query", []byte(`{}`), false)
	time.Sleep(200 * time.Millisecond)
	eng.setAcceptErr(nil)
	if a := waitAccepted(t, eng, 10*time.Second); a.suffix != "pay/query" {
		t.Fatalf("got %q", a.suffix)
	}
}

func TestOutboxDrains(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	sub := mqtttest.Subscribe(t, url, prefix+"/#")
	eng := newFakeEngine()
	// Entries already waiting at start are published on connect.
	eng.enqueue(contract.Outgoing{ID: 1, Topic: "pay/result", Payload: []byte(`{"n":1}`)})
	start(t, url, prefix, id, eng, nil)
	if m := sub.Next(t, prefix+"/pay/result", 5*time.Second); string(m.Payload) != `{"n":1}` {
		t.Fatalf("published %s", m.Payload)
	}
	if got := waitPublished(t, eng, 5*time.Second); got != 1 {
		t.Fatalf("confirmed %d", got)
	}
	// New entries go out when OutboxChanged fires, in order.
	eng.enqueue(contract.Outgoing{ID: 2, Topic: "pay/reply", Payload: []byte(`{"n":2}`)})
	eng.enqueue(contract.Outgoing{ID: 3, Topic: "pay/event", Payload: []byte(`{"n":3}`)})
	if m := sub.Next(t, prefix+"/pay/reply", 5*time.Second); string(m.Payload) != `{"n":2}` {
		t.Fatalf("published %s", m.Payload)
	}
	if m := sub.Next(t, prefix+"/pay/event", 5*time.Second); string(m.Payload) != `{"n":3}` {
		t.Fatalf("published %s", m.Payload)
	}
	if a, b := waitPublished(t, eng, 5*time.Second), waitPublished(t, eng, 5*time.Second); a != 2 || b != 3 {
		t.Fatalf("confirmed %d, %d; want 2, 3", a, b)
	}
}

// While the broker is unreachable nothing is confirmed; after the reconnect
// the outbox drains.
func TestOutboxDrainsAfterReconnect(t *testing.T) {
	url := mqtttest.Broker(t)
	proxy, purl := mqtttest.NewProxy(t, url)
	prefix, id := names(t)
	sub := mqtttest.Subscribe(t, url, prefix+"/pay/result")
	eng := newFakeEngine()
	r := start(t, purl, prefix, id, eng, nil)

	proxy.Refuse(true)
	proxy.Cut()
	waitFor(t, 5*time.Second, func() bool { return !r.link.Connected() })
	eng.enqueue(contract.Outgoing{ID: 7, Topic: "pay/result", Payload: []byte(`{"paid":true}`)})
	select {
	case id := <-eng.publishedC:
		t.Fatalf("entry %d confirmed while disconnected", id)
	case <-time.After(700 * time.Millisecond):
	}
	proxy.Refuse(false)
	if m := sub.Next(t, prefix+"/pay/result", 15*time.Second); string(m.Payload) != `{"paid":true}` {
		t.Fatalf("published %s", m.Payload)
	}
	if got := waitPublished(t, eng, 5*time.Second); got != 7 {
		t.Fatalf("confirmed %d", got)
	}
}

// The engine hears of every session change (its ack timeouts wait while
// the session is down): down before the first connection, up once
// subscribed, down when the connection drops, up after the reconnect.
func TestOnlineReported(t *testing.T) {
	url := mqtttest.Broker(t)
	proxy, purl := mqtttest.NewProxy(t, url)
	prefix, id := names(t)
	eng := newFakeEngine()
	r := start(t, purl, prefix, id, eng, nil)
	for i, want := range []bool{false, true} {
		if got := waitOnline(t, eng, 5*time.Second); got != want {
			t.Fatalf("report %d at start: up=%v, want %v", i, got, want)
		}
	}
	proxy.Refuse(true)
	proxy.Cut()
	if waitOnline(t, eng, 5*time.Second) {
		t.Fatal("reported up after the connection was cut")
	}
	waitFor(t, 5*time.Second, func() bool { return !r.link.Connected() })
	proxy.Refuse(false)
	if !waitOnline(t, eng, 20*time.Second) {
		t.Fatal("reported down after the reconnect")
	}
}

// When the broker goes away every device of a fleet loses it at the same
// instant; each reconnect attempt waits a random part of ReconnectJitter,
// so the attempts reach the broker spread out instead of all at once.
// With the jitter off the same links retry within milliseconds of each
// other: that half shows the measure can tell the difference.
func TestReconnectJitter(t *testing.T) {
	const links = 12
	for _, tc := range []struct {
		name    string
		jitter  time.Duration
		minSpan time.Duration // of the first attempts after the cut
		maxSpan time.Duration
	}{
		{"jittered", time.Second, 300 * time.Millisecond, 3 * time.Second},
		{"off", time.Nanosecond, 0, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := mqtttest.Broker(t)
			proxy, purl := mqtttest.NewProxy(t, url)
			for range links {
				prefix, id := names(t)
				start(t, purl, prefix, id, newFakeEngine(), func(o *Options) { o.ReconnectJitter = tc.jitter })
			}
			before := len(proxy.Attempts())
			proxy.Refuse(true)
			proxy.Cut()
			var first []time.Time
			waitFor(t, 10*time.Second, func() bool {
				first = proxy.Attempts()[before:]
				return len(first) >= links
			})
			first = first[:links]
			span := first[links-1].Sub(first[0])
			t.Logf("%d links' first reconnect attempts spread over %s", links, span.Round(time.Millisecond))
			if span < tc.minSpan || span > tc.maxSpan {
				t.Errorf("span %s, want %s to %s", span.Round(time.Millisecond), tc.minSpan, tc.maxSpan)
			}
			proxy.Refuse(false)
		})
	}
}

func TestStatusRetainedWillAndCleanStop(t *testing.T) {
	url := mqtttest.Broker(t)
	proxy, purl := mqtttest.NewProxy(t, url)
	prefix, id := names(t)
	statusTopic := prefix + "/status"
	sub := mqtttest.Subscribe(t, url, statusTopic)
	eng := newFakeEngine()
	r := start(t, purl, prefix, id, eng, nil)

	var st map[string]any
	m := sub.Next(t, statusTopic, 5*time.Second)
	if err := json.Unmarshal(m.Payload, &st); err != nil {
		t.Fatal(err)
	}
	if st["online"] != true || st["version"] != "test-1" || st["pending"] != float64(0) || st["clock_synced"] != true || st["started_at"] != "2026-01-02T03:04:05Z" {
		t.Fatalf("status = %s", m.Payload)
	}
	// Retained: a late subscriber sees it.
	late := mqtttest.Subscribe(t, url, statusTopic)
	if m := late.Next(t, statusTopic, 5*time.Second); !m.Retained || !bytes.Contains(m.Payload, []byte(`"online":true`)) {
		t.Fatalf("late subscriber got %s retained=%v", m.Payload, m.Retained)
	}

	// StatusChanged republishes.
	eng.setPending(1)
	sub.Until(t, statusTopic, 5*time.Second, mqtttest.Contains(`"pending":1`))

	// An abnormal disconnect makes the broker publish the Will.
	proxy.Refuse(true)
	proxy.Cut()
	sub.Until(t, statusTopic, 10*time.Second, mqtttest.Equals(`{"online":false}`))
	// Back online after the reconnect.
	proxy.Refuse(false)
	sub.Until(t, statusTopic, 15*time.Second, mqtttest.Contains(`"online":true`))

	// A clean stop leaves {"online":false} retained.
	r.stop()
	sub.Until(t, statusTopic, 5*time.Second, mqtttest.Equals(`{"online":false}`))
	after := mqtttest.Subscribe(t, url, statusTopic)
	if m := after.Next(t, statusTopic, 5*time.Second); !m.Retained || string(m.Payload) != `{"online":false}` {
		t.Fatalf("retained after stop = %s", m.Payload)
	}
}

// Final replies enqueued just before the stop are published before the
// offline status.
func TestCleanStopDrainsFirst(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	sub := mqtttest.Subscribe(t, url, prefix+"/#")
	eng := newFakeEngine()
	r := start(t, url, prefix, id, eng, func(o *Options) { o.DrainInterval = time.Hour })
	sub.Next(t, prefix+"/status", 5*time.Second)
	// Not signalled: only the shutdown drain can pick it up.
	eng.mu.Lock()
	eng.outbox = append(eng.outbox, contract.Outgoing{ID: 9, Topic: "pay/reply", Payload: []byte(`{"last":true}`)})
	eng.mu.Unlock()
	r.stop()
	if m := sub.Next(t, prefix+"/pay/reply", 5*time.Second); string(m.Payload) != `{"last":true}` {
		t.Fatalf("got %s", m.Payload)
	}
	if m := sub.Next(t, prefix+"/status", 5*time.Second); string(m.Payload) != `{"online":false}` {
		t.Fatalf("got %s", m.Payload)
	}
}

// A publish that gets no PUBACK times out and stays in the outbox, and
// inbound commands keep reaching the engine meanwhile.
func TestStalledPublishDoesNotBlockHandlers(t *testing.T) {
	url := mqtttest.Broker(t)
	proxy, purl := mqtttest.NewProxy(t, url)
	prefix, id := names(t)
	sub := mqtttest.Subscribe(t, url, prefix+"/pay/result")
	eng := newFakeEngine()
	start(t, purl, prefix, id, eng, func(o *Options) { o.PublishTimeout = 500 * time.Millisecond })

	proxy.Stall() // nothing the daemon sends reaches the broker
	eng.enqueue(contract.Outgoing{ID: 11, Topic: "pay/result", Payload: []byte(`{"r":11}`)})
	for i := range 3 {
		mqtttest.Publish(t, url, prefix+"/pay/query", []byte(`{"i":`+string(rune('0'+i))+`}`), false)
		waitAccepted(t, eng, 3*time.Second)
	}
	select {
	case id := <-eng.publishedC:
		t.Fatalf("entry %d confirmed without a PUBACK", id)
	default:
	}
	proxy.Unstall()
	if m := sub.Next(t, prefix+"/pay/result", 10*time.Second); string(m.Payload) != `{"r":11}` {
		t.Fatalf("got %s", m.Payload)
	}
	if got := waitPublished(t, eng, 10*time.Second); got != 11 {
		t.Fatalf("confirmed %d", got)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{ClientID: "c", Prefix: "p"},
		{URLs: []string{"tcp://x:1"}, Prefix: "p"},
		{URLs: []string{"tcp://x:1"}, ClientID: "c", Prefix: "a/#"},
	} {
		if _, err := New(o, newFakeEngine()); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

// A stop before the broker was ever reached returns promptly.
func TestStopWhileUnreachable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	l, err := New(Options{URLs: []string{"tcp://" + addr}, ClientID: "c", Prefix: "p/d", ConnectTimeout: time.Second}, newFakeEngine())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// With several brokers the link takes the first that answers, and when
// that one goes away it moves to the next: the session (here one broker
// behind two addresses, as a cluster shares it) carries the subscriptions,
// the status is republished and the outbox drains through the new node.
func TestFailoverToNextBroker(t *testing.T) {
	url := mqtttest.Broker(t)
	a, aURL := mqtttest.NewProxy(t, url)
	b, bURL := mqtttest.NewProxy(t, url)
	prefix, id := names(t)
	statusTopic := prefix + "/status"
	sub := mqtttest.Subscribe(t, url, prefix+"/#")
	eng := newFakeEngine()
	start(t, "", prefix, id, eng, func(o *Options) { o.URLs = []string{aURL, bURL} })
	if a.Accepted() != 1 || b.Accepted() != 0 {
		t.Fatalf("connections: first broker %d, second %d; want the first", a.Accepted(), b.Accepted())
	}
	sub.Until(t, statusTopic, 5*time.Second, mqtttest.Contains(`"online":true`))

	a.Refuse(true)
	a.Cut()
	// The link is back, through the second broker, and says so. (The Will
	// may or may not come first: when the link reconnects before the broker
	// has noticed the cut, the broker takes the session over and sends no
	// Will; a test that waited for it failed about 1 run in 40.)
	deadline := time.Now().Add(15 * time.Second)
	for {
		// An online status seen before the link reached the second broker
		// is an earlier one (the first session's, delivered twice).
		sub.Until(t, statusTopic, time.Until(deadline), mqtttest.Contains(`"online":true`))
		if b.Accepted() > 0 {
			break
		}
	}
	eng.enqueue(contract.Outgoing{ID: 9, Topic: "pay/result", Payload: []byte(`{"via":"b"}`)})
	if m := sub.Next(t, prefix+"/pay/result", 10*time.Second); string(m.Payload) != `{"via":"b"}` {
		t.Fatalf("published %s", m.Payload)
	}
	if got := waitPublished(t, eng, 5*time.Second); got != 9 {
		t.Fatalf("confirmed %d", got)
	}
	mqtttest.Publish(t, url, prefix+"/pay/query", []byte(`{"after":"failover"}`), false)
	if got := waitAccepted(t, eng, 5*time.Second); string(got.payload) != `{"after":"failover"}` {
		t.Fatalf("accepted %s", got.payload)
	}
}

// The device says it is online only once its subscriptions are in place:
// a controller that sees the status sends commands at once, and a broker
// drops a command no subscription matches yet. (Found on a NATS cluster,
// where a first session's consumers take seconds to create: a create sent
// on the strength of an early status was never delivered.)
func TestNoOnlineStatusBeforeSubscribed(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	sub := mqtttest.Subscribe(t, url, prefix+"/status")
	l, err := New(Options{URLs: []string{url}, ClientID: id, Prefix: prefix}, newFakeEngine())
	if err != nil {
		t.Fatal(err)
	}
	// Connected, but the link has not subscribed yet.
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true))
	if err := mqttclient.Wait(context.Background(), c.Connect(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	l.client = c
	l.statusDirty.Store(true)
	l.publishStatus(context.Background())
	sub.None(t, prefix+"/status", 300*time.Millisecond)
	if !l.statusDirty.Load() {
		t.Fatal("the held-back status was forgotten")
	}
	l.subscribed.Store(true)
	l.publishStatus(context.Background())
	sub.Until(t, prefix+"/status", 5*time.Second, mqtttest.Contains(`"online":true`))
}

// A dead first broker is skipped at start-up.
func TestStartsOnSecondBrokerWhenFirstIsDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "tcp://" + ln.Addr().String()
	ln.Close()
	url := mqtttest.Broker(t)
	prefix, id := names(t)
	eng := newFakeEngine()
	r := start(t, "", prefix, id, eng, func(o *Options) { o.URLs = []string{dead, url} })
	if !r.link.Connected() {
		t.Fatal("not connected")
	}
	mqtttest.Publish(t, url, prefix+"/pay/query", []byte(`{"n":1}`), false)
	waitAccepted(t, eng, 5*time.Second)
}

// --- TLS ---

func newPKI(t *testing.T) *mqtttest.PKI { return mqtttest.NewPKI(t) }

func TestTLS(t *testing.T) {
	p := newPKI(t)
	_, url := mqtttest.Mochi(t, nil, p.ServerTLS)
	cfg, err := mqttclient.TLSConfig(p.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	prefix, id := names(t)
	eng := newFakeEngine()
	start(t, url, prefix, id, eng, func(o *Options) { o.TLS = cfg })
	mqtttest.Publish(t, url, prefix+"/pay/query", []byte(`{"tls":1}`), false)
	waitAccepted(t, eng, 5*time.Second)
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	srv := p.ServerTLS.Clone()
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = p.CAPool
	_, url := mqtttest.Mochi(t, nil, srv)

	cfg, err := mqttclient.TLSConfig(p.CAFile, p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	prefix, id := names(t)
	eng := newFakeEngine()
	start(t, url, prefix, id, eng, func(o *Options) { o.TLS = cfg })

	// A certificate from a CA the broker does not trust never connects,
	// and neither does no certificate at all.
	for name, files := range map[string][2]string{"untrusted client CA": {p.OtherClientCert, p.OtherClientKey}, "no client cert": {"", ""}} {
		t.Run(name, func(t *testing.T) {
			cfg, err := mqttclient.TLSConfig(p.CAFile, files[0], files[1])
			if err != nil {
				t.Fatal(err)
			}
			l, _ := New(Options{URLs: []string{url}, ClientID: mqtttest.Unique("bad-"), Prefix: prefix, TLS: cfg, ConnectTimeout: time.Second}, newFakeEngine())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx) }()
			select {
			case <-l.Ready():
				t.Fatal("connected without a trusted client certificate")
			case <-time.After(1500 * time.Millisecond):
			}
			cancel()
			<-done
		})
	}
}

func TestWebSocket(t *testing.T) {
	p := newPKI(t)
	cfg, err := mqttclient.TLSConfig(p.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for name, url := range map[string]string{"ws": mqtttest.MochiWS(t, nil), "wss": mqtttest.MochiWS(t, p.ServerTLS)} {
		t.Run(name, func(t *testing.T) {
			prefix, id := names(t)
			eng := newFakeEngine()
			start(t, url, prefix, id, eng, func(o *Options) { o.TLS = cfg })
			mqtttest.Publish(t, url, prefix+"/pay/query", []byte(`{"ws":1}`), false)
			waitAccepted(t, eng, 5*time.Second)
			eng.enqueue(contract.Outgoing{ID: 1, Topic: "pay/reply", Payload: []byte(`{}`)})
			waitPublished(t, eng, 5*time.Second)
		})
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
