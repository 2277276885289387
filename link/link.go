// Package link connects the order engine to the MQTT broker (docs/contract.md §3).
//
// The link owns nothing durable: every inbound message is handed to the
// engine, which records it on disk before the link acknowledges it (so the
// PUBACK goes out only for a recorded message), and every outbound message
// comes from the engine's outbox, which the link drains and confirms one
// message at a time. A crash, a broker outage or a stalled publish
// therefore loses nothing; the worst case is a message delivered twice,
// which both sides dedupe.
//
// Inbound flow control is the link's own. MQTT 3.1.1 has none, and
// Mosquitto 2.0 (Debian's) does not hold its max_inflight_messages once
// PUBACKs flow: measured, a client acknowledging in order as fast as it
// records received 1,795 of 2,000 queued messages before acknowledging
// them with a limit of 10. So messages are handed in arrival order to one
// recorder through a short queue (RecvWindow); while the engine's inbox is
// full the recorder waits, the queue fills, paho's reader stops, and TCP
// holds the rest at the broker. Memory stays bounded by RecvWindow
// whatever the broker sends, and commands keep their order on disk.
//
// paho.mqtt.golang v1.5.1 is used with the settings its pitfalls call for:
// a persistent session (CleanSession=false) under a stable client id, the
// message handler registered before Connect so queued messages are accepted
// at once, acknowledgements sent by the link once a message is on disk
// (SetAutoAckDisabled), and no token waited on without a timeout.
package link

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
)

// RecvWindow is how many received messages wait for the engine at most;
// beyond it the link stops reading from the broker.
const RecvWindow = 32

// Engine is what the link needs from the order engine.
type Engine interface {
	// Accept durably records inbound messages, in order, and returns; they
	// are acknowledged to the broker only after it returns nil. It may
	// wait (until ctx ends) while the engine has no room for them.
	Accept(ctx context.Context, msgs []contract.Inbound) error
	// Due returns the outbox entries to publish now, oldest first.
	Due(now time.Time) ([]contract.Outgoing, error)
	// Published reports that the broker acknowledged entry id.
	Published(id uint64) error
	// OutboxChanged fires when something was enqueued.
	OutboxChanged() <-chan struct{}
	// Status and StatusChanged feed the retained status topic.
	Status() contract.Status
	StatusChanged() <-chan struct{}
	// SetOnline reports that the session came up (subscribed: commands
	// flow and results can be published) or was lost. Run reports it down
	// before its first connection.
	SetOnline(up bool)
}

// Options configure a Link.
type Options struct {
	// URLs are the brokers, tcp://, ssl://, ws:// or wss:// (all TLS or
	// all plain): one broker, or the nodes of a cluster that shares
	// sessions and retained messages, tried in order on every (re)connect.
	URLs []string
	// ClientID must be stable across restarts: the broker keeps the
	// persistent session (and queues commands while we are away) under it.
	ClientID string
	Username string
	Password string
	// TLS is used for ssl:// and wss:// URLs; nil means the system roots.
	TLS *tls.Config
	// Prefix is P, "<topic_prefix>/<device_id>".
	Prefix string

	// PublishTimeout bounds the wait for one PUBACK (default 10s).
	PublishTimeout time.Duration
	// ConnectTimeout bounds one connection attempt (default 10s).
	ConnectTimeout time.Duration
	// KeepAlive is the MQTT keepalive (default 30s).
	KeepAlive time.Duration
	// MaxReconnectInterval caps the backoff between attempts (default
	// 10s). paho's own default of a minute would turn a 20-second broker
	// blip into a minute offline, longer than the controller's ack window
	// (unlock.ack_timeout, 30 s by default), and refund a paid customer.
	MaxReconnectInterval time.Duration
	// ReconnectJitter is the most each reconnect attempt waits, at random,
	// before paho's own backoff (default 1s). Every device of a fleet
	// loses the broker at the same instant and paho retries on the same
	// schedule everywhere: without it, all of them would hit the broker
	// that comes back in the same few milliseconds.
	ReconnectJitter time.Duration
	// DrainInterval is how often the outbox is checked without being
	// told (default 30s). The engine signals OutboxChanged whenever an
	// entry is enqueued or falls due, so this is only a safety net; a
	// short interval would wake an idle device every second for nothing.
	DrainInterval time.Duration
	// ShutdownTimeout bounds the final drain and offline status on stop
	// (default 5s).
	ShutdownTimeout time.Duration

	Logger *slog.Logger
}

// Link is the daemon's MQTT connection.
type Link struct {
	opts    Options
	eng     Engine
	log     *slog.Logger
	brokers *mqttclient.Brokers

	ready     chan struct{} // closed after the first successful connect
	readyOnce sync.Once
	// in carries received messages to the recorder, in arrival order.
	in        chan received
	connected chan struct{} // one signal per (re)connect, after subscribing

	mu     sync.Mutex
	client mqtt.Client

	// stopping is closed when Run's context ends; closed when the client
	// has been disconnected. Handlers that could not record a message
	// wait for closed before returning, so that paho's automatic PUBACK
	// (sent when the handler returns) goes nowhere.
	stopping chan struct{}
	closed   chan struct{}
	// stopCtx ends with stopping: it bounds a handler's wait for room in
	// the engine's inbox.
	stopCtx  context.Context
	stopNow  context.CancelFunc
	stopOnce sync.Once

	statusDirty atomic.Bool
	// subscribed is true while the current connection's subscriptions are
	// acknowledged. The online status waits for it: a controller that
	// sees the device online sends commands at once, and a broker drops a
	// command that matches no subscription yet (a first session; a
	// cluster still creating the session's consumers).
	subscribed atomic.Bool
	lastDrain  atomic.Int64 // unix nanos of the last completed drain
}

// New returns a Link; nothing happens until Run.
func New(opts Options, eng Engine) (*Link, error) {
	if _, err := brokerurl.CheckList(opts.URLs); err != nil {
		return nil, fmt.Errorf("link: broker %w", err)
	}
	if opts.ClientID == "" {
		return nil, errors.New("link: ClientID is required")
	}
	if opts.Prefix == "" || strings.ContainsAny(opts.Prefix, "+#") {
		return nil, fmt.Errorf("link: bad topic prefix %q", opts.Prefix)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.PublishTimeout, 10*time.Second)
	def(&opts.ConnectTimeout, 10*time.Second)
	def(&opts.KeepAlive, 30*time.Second)
	def(&opts.MaxReconnectInterval, 10*time.Second)
	def(&opts.ReconnectJitter, time.Second)
	def(&opts.DrainInterval, 30*time.Second)
	def(&opts.ShutdownTimeout, 5*time.Second)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	stopCtx, stopNow := context.WithCancel(context.Background())
	return &Link{
		stopCtx:   stopCtx,
		stopNow:   stopNow,
		opts:      opts,
		eng:       eng,
		log:       opts.Logger.With("client_id", opts.ClientID),
		brokers:   mqttclient.NewBrokers(opts.URLs),
		ready:     make(chan struct{}),
		connected: make(chan struct{}, 1),
		stopping:  make(chan struct{}),
		closed:    make(chan struct{}),
		in:        make(chan received, RecvWindow),
	}, nil
}

// received is a message waiting to be recorded, with its acknowledgement.
type received struct {
	msg contract.Inbound
	ack func()
}

// Ready is closed once the link has connected and subscribed for the first
// time.
func (l *Link) Ready() <-chan struct{} { return l.ready }

// Connected reports whether the link has a live connection right now (not
// merely a reconnect in progress).
func (l *Link) Connected() bool {
	l.mu.Lock()
	c := l.client
	l.mu.Unlock()
	return c != nil && c.IsConnectionOpen()
}

// Broker is the broker of the latest connection attempt (after Ready, the
// one the link connected to), without credentials.
func (l *Link) Broker() string { return l.brokers.Current() }

// topic returns the full topic for a suffix.
func (l *Link) topic(suffix string) string { return l.opts.Prefix + "/" + suffix }

// Run connects (retrying with backoff until it succeeds), then keeps the
// connection, delivers inbound messages to the engine and drains the
// outbox until ctx ends. On the way out it drains the outbox once more,
// publishes the retained offline status and disconnects; it returns nil
// after a clean stop. Call Run once.
func (l *Link) Run(ctx context.Context) error {
	defer close(l.closed)
	recorded := make(chan struct{})
	defer func() { <-recorded }()
	go func() {
		defer close(recorded)
		l.record()
	}()
	l.eng.SetOnline(false)
	if err := l.connect(ctx); err != nil {
		l.stop()
		return nil // ctx ended before the first connection: a clean stop
	}
	tick := time.NewTicker(l.opts.DrainInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			l.stop()
			l.shutdown(ctx)
			return nil
		case <-l.connected:
			l.readyOnce.Do(func() { close(l.ready) })
			l.statusDirty.Store(true)
			l.publishStatus(ctx)
			l.drain(ctx)
		case <-l.eng.StatusChanged():
			l.statusDirty.Store(true)
			l.publishStatus(ctx)
		case <-l.eng.OutboxChanged():
			l.drain(ctx)
		case <-tick.C:
			if l.statusDirty.Load() {
				l.publishStatus(ctx)
			}
			l.drain(ctx)
		}
	}
}

// stop marks the link as stopping.
func (l *Link) stop() {
	l.stopOnce.Do(func() {
		close(l.stopping)
		l.stopNow()
	})
}

// LastDrain reports when the outbox was last drained completely; the
// daemon's health check uses it to tell a live link from a wedged one.
func (l *Link) LastDrain() time.Time {
	n := l.lastDrain.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (l *Link) newClient() mqtt.Client {
	o := mqttclient.Config{
		Brokers: l.brokers, ClientID: l.opts.ClientID, Username: l.opts.Username, Password: l.opts.Password,
		TLS: l.opts.TLS, ConnectTimeout: l.opts.ConnectTimeout, WriteTimeout: l.opts.PublishTimeout, KeepAlive: l.opts.KeepAlive,
	}.Options()
	o.SetCleanSession(false)
	// One handler at a time, in arrival order; it only queues the message
	// for the recorder, which acknowledges it once it is on disk. A full
	// queue blocks the handler and, through it, paho's reader: that is
	// the flow control (see the package comment).
	o.SetOrderMatters(true)
	o.SetAutoAckDisabled(true)
	// Registered before Connect: with a persistent session the broker
	// sends queued commands right after CONNACK, before any Subscribe.
	o.SetDefaultPublishHandler(l.handle)
	o.SetPingTimeout(l.opts.KeepAlive / 3)
	o.SetAutoReconnect(true)
	o.SetMaxReconnectInterval(l.opts.MaxReconnectInterval)
	o.SetBinaryWill(l.topic(contract.TopicStatus), contract.OfflineStatus(), 1, true)
	o.SetOnConnectHandler(l.onConnect)
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		l.subscribed.Store(false)
		l.eng.SetOnline(false)
		l.log.Warn("mqtt connection lost", "err", err)
	})
	o.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
		// paho calls this on its reconnect goroutine before every attempt,
		// so the wait delays that attempt only; a stop ends it.
		wait := rand.N(l.opts.ReconnectJitter)
		l.log.Info("mqtt reconnecting", "brokers", l.brokers.String(), "jitter", wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-l.stopping:
		}
	})
	if len(l.opts.URLs) > 1 {
		// With one broker the connect error says it all; with several,
		// each node that failed before the next was tried is worth a line.
		o.SetConnectionNotificationHandler(func(_ mqtt.Client, n mqtt.ConnectionNotification) {
			if f, ok := n.(mqtt.ConnectionNotificationBrokerFailed); ok {
				l.log.Warn("mqtt broker unreachable; trying the next", "broker", f.Broker.Scheme+"://"+f.Broker.Host, "err", f.Reason)
			}
		})
	}
	return mqtt.NewClient(o)
}

// connect makes the first connection. paho's own ConnectRetry would retry
// too, but silently and at a fixed interval; this loop logs why each
// attempt failed (wrong password, TLS, refused) and backs off. After the
// first success paho's AutoReconnect takes over.
func (l *Link) connect(ctx context.Context) error {
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		c := l.newClient()
		l.mu.Lock()
		l.client = c
		l.mu.Unlock()
		err := mqttclient.Wait(ctx, c.Connect(), l.opts.ConnectTimeout+5*time.Second)
		if err == nil {
			l.log.Info("mqtt connected", "broker", l.brokers.Current(), "attempt", attempt)
			return nil
		}
		// A client is not reused after a failed or abandoned attempt.
		c.Disconnect(0)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.log.Error("mqtt connect failed; retrying", "brokers", l.brokers.String(), "attempt", attempt, "err", mqttclient.ConnectError(err), "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, l.opts.MaxReconnectInterval)
	}
}

// onConnect runs in its own goroutine after every (re)connect: subscribe,
// then tell Run to publish the status and drain the outbox.
func (l *Link) onConnect(c mqtt.Client) {
	filters := make(map[string]byte, len(contract.InboundTopics))
	for _, s := range contract.InboundTopics {
		filters[l.topic(s)] = 1
	}
	for attempt := 1; ; attempt++ {
		t := c.SubscribeMultiple(filters, nil)
		err := waitToken(t, l.stopping, l.opts.PublishTimeout)
		if err == nil {
			break
		}
		if !c.IsConnectionOpen() || isClosed(l.stopping) {
			return // the next connect subscribes again
		}
		l.log.Error("mqtt subscribe failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-l.stopping:
			return
		case <-time.After(time.Second):
		}
	}
	l.subscribed.Store(true)
	l.eng.SetOnline(true)
	l.log.Info("mqtt session ready", "broker", l.brokers.Current(), "subscriptions", len(filters))
	select {
	case l.connected <- struct{}{}:
	default: // a signal is already pending
	}
}

// handle receives every inbound message and queues it for the recorder;
// it blocks while the queue is full. Messages the daemon ignores are
// acknowledged at once; a message that is not queued (the link is
// stopping) is never acknowledged, and the broker delivers it again.
func (l *Link) handle(_ mqtt.Client, m mqtt.Message) {
	suffix, ok := l.suffix(m.Topic())
	if !ok {
		l.log.Warn("message on unexpected topic ignored", "topic", m.Topic())
		m.Ack()
		return
	}
	if m.Retained() {
		// A retained command is a stale copy the broker replays on every
		// subscribe; a live one arrives with the flag cleared.
		l.log.Warn("retained command ignored; publish commands without retain", "topic", m.Topic())
		m.Ack()
		return
	}
	// Oversized and malformed payloads go to the engine like any other: it
	// owns every reply, including PAYLOAD_TOO_LARGE and BAD_JSON.
	select {
	case l.in <- received{msg: contract.Inbound{Topic: suffix, Payload: m.Payload()}, ack: m.Ack}:
	case <-l.stopping:
	}
}

// record hands queued messages to the engine, as many at a time as are
// waiting (one commit for all), and acknowledges them once recorded. A
// failed commit (a full disk) is retried, never skipped: nothing is
// acknowledged that is not on disk. It returns when the link stops;
// whatever was not recorded by then is not acknowledged.
func (l *Link) record() {
	batch := make([]received, 0, RecvWindow)
	msgs := make([]contract.Inbound, 0, RecvWindow)
	for {
		select {
		case r := <-l.in:
			batch = append(batch[:0], r)
		case <-l.stopping:
			return
		}
	more:
		for len(batch) < RecvWindow {
			select {
			case r := <-l.in:
				batch = append(batch, r)
			default:
				break more
			}
		}
		msgs = msgs[:0]
		for _, r := range batch {
			msgs = append(msgs, r.msg)
		}
		backoff := 50 * time.Millisecond
		for attempt := 1; ; attempt++ {
			// Accept may wait for room in a full inbox; that wait ends when
			// the link stops. A commit under way is never abandoned.
			err := l.eng.Accept(l.stopCtx, msgs)
			if err == nil {
				break
			}
			if isClosed(l.stopping) {
				return
			}
			l.log.Error("could not record inbound messages; not acknowledging them", "messages", len(msgs), "attempt", attempt, "err", err)
			select {
			case <-l.stopping:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
		for i := range batch {
			batch[i].ack()
			batch[i] = received{}
		}
	}
}

func (l *Link) suffix(topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, l.opts.Prefix+"/")
	if !ok {
		return "", false
	}
	for _, s := range contract.InboundTopics {
		if rest == s {
			return s, true
		}
	}
	return "", false
}

// publish sends one QoS 1 message and waits for the PUBACK, at most
// PublishTimeout and never past ctx.
func (l *Link) publish(ctx context.Context, c mqtt.Client, topic string, payload []byte, retain bool) error {
	if err := mqttclient.Wait(ctx, c.Publish(topic, 1, retain, payload), l.opts.PublishTimeout); err != nil {
		return fmt.Errorf("publish %s: no PUBACK: %w", topic, err)
	}
	return nil
}

// drain publishes every due outbox entry in order and confirms each to the
// engine. It stops at the first failure: the entry stays in the outbox and
// the next drain (reconnect, OutboxChanged, tick) tries again.
func (l *Link) drain(ctx context.Context) {
	l.mu.Lock()
	c := l.client
	l.mu.Unlock()
	if c == nil || !c.IsConnectionOpen() {
		return
	}
	due, err := l.eng.Due(time.Now())
	if err != nil {
		l.log.Error("read outbox", "err", err)
		return
	}
	for _, m := range due {
		if err := l.publish(ctx, c, l.topic(m.Topic), m.Payload, m.Retain); err != nil {
			if ctx.Err() == nil {
				l.log.Warn("publish failed; will retry", "topic", m.Topic, "outbox_id", m.ID, "err", err)
			}
			return
		}
		if err := l.eng.Published(m.ID); err != nil {
			l.log.Error("confirm published message", "outbox_id", m.ID, "err", err)
			return
		}
	}
	l.lastDrain.Store(time.Now().UnixNano())
}

func (l *Link) publishStatus(ctx context.Context) {
	l.mu.Lock()
	c := l.client
	l.mu.Unlock()
	if c == nil || !c.IsConnectionOpen() || !l.subscribed.Load() {
		return // statusDirty stays set: published once subscribed
	}
	s := l.eng.Status()
	s.Online = true
	b, _ := json.Marshal(s)
	// Cleared before publishing so a change during the publish is not lost.
	l.statusDirty.Store(false)
	if err := l.publish(ctx, c, l.topic(contract.TopicStatus), b, true); err != nil {
		l.statusDirty.Store(true)
		if ctx.Err() == nil {
			l.log.Warn("publish status failed; will retry", "err", err)
		}
	}
}

// shutdown runs once ctx has ended: a last drain (the engine has finished
// its work by now and may have enqueued final replies), the retained
// offline status (the broker discards the Will on a clean DISCONNECT), and
// the disconnect.
func (l *Link) shutdown(parent context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), l.opts.ShutdownTimeout)
	defer cancel()
	l.mu.Lock()
	c := l.client
	l.mu.Unlock()
	if c.IsConnectionOpen() {
		l.drain(ctx)
		if err := l.publish(ctx, c, l.topic(contract.TopicStatus), contract.OfflineStatus(), true); err != nil {
			l.log.Warn("publish offline status failed; the broker's Will covers it", "err", err)
		}
	}
	c.Disconnect(250)
	l.log.Info("mqtt disconnected")
}

// waitToken waits for t at most d, or until stop is closed.
func waitToken(t mqtt.Token, stop <-chan struct{}, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-stop:
		return errors.New("stopping")
	case <-timer.C:
		return fmt.Errorf("timed out after %s", d)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
