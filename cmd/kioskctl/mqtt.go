package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/mqttclient"
)

// Conn is kioskctl's MQTT session: a clean session with a random client id,
// so several operators can run kioskctl at once without kicking each other
// off the broker.
type Conn struct {
	g       *Globals
	client  mqtt.Client
	brokers *mqttclient.Brokers
	done    chan struct{}
	once    sync.Once
	lost    chan struct{} // closed when the broker drops the connection
	lostErr error
}

// message is one received publish.
type message struct {
	Topic    string
	Payload  []byte
	Retained bool
	At       time.Time
}

// connect opens a connection to the first of the -broker URLs that accepts
// it, each tried within g.Timeout.
func (g *Globals) connect(ctx context.Context) (*Conn, error) {
	urls, password, tc, err := mqttclient.ClientFlags{
		Brokers: g.Broker, Username: g.Username, PasswordFile: g.PasswordFile,
		CAFile: g.CAFile, CertFile: g.CertFile, KeyFile: g.KeyFile,
	}.Resolve()
	var fe *mqttclient.FlagError
	if errors.As(err, &fe) {
		return nil, &usageError{fe}
	} else if err != nil {
		return nil, err
	}
	c := &Conn{g: g, brokers: mqttclient.NewBrokers(urls), done: make(chan struct{}), lost: make(chan struct{})}
	mc := mqttclient.Config{
		Brokers: c.brokers, ClientID: "kioskctl-" + randomHex(6), Username: g.Username, Password: password, TLS: tc,
		ConnectTimeout: g.Timeout, WriteTimeout: g.Timeout, KeepAlive: 30 * time.Second,
	}
	opts := mc.Options().
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// Handlers only queue messages; order matters for watch and for
		// the end markers of a retained listing.
		SetOrderMatters(true)
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		c.lostErr = err
		close(c.lost)
	})
	c.client = mqtt.NewClient(opts)
	tok := c.client.Connect()
	if err := mqttclient.Wait(ctx, tok, mc.ConnectWait()); err != nil {
		return nil, fmt.Errorf("connect to broker %s: %w (is the broker running and -broker right? TLS brokers need ssl:// and -ca-file)", c.brokers, mqttclient.ConnectError(err))
	}
	return c, nil
}

// Broker is the broker this connection went to.
func (c *Conn) Broker() string { return c.brokers.Current() }

// Lost is closed when the broker drops the connection (not after Close).
func (c *Conn) Lost() <-chan struct{} { return c.lost }

// LostErr says why the connection was lost, once Lost is closed.
func (c *Conn) LostErr() error { return c.lostErr }

// Close disconnects, giving in-flight acknowledgements a moment.
func (c *Conn) Close() {
	c.once.Do(func() {
		close(c.done)
		c.client.Disconnect(250)
	})
}

// Subscribe subscribes to filters at QoS 1 and returns a channel of the
// messages received. The channel is never closed; stop reading by closing
// the Conn.
func (c *Conn) Subscribe(ctx context.Context, filters ...string) (<-chan message, error) {
	subs := make(map[string]byte, len(filters))
	for _, f := range filters {
		subs[f] = 1
	}
	return c.subscribe(ctx, subs)
}

// subscribe subscribes to each filter at its QoS in one SUBSCRIBE, so the
// broker handles them in one go, and returns the messages of all of them
// on one channel in the order they arrived.
func (c *Conn) subscribe(ctx context.Context, subs map[string]byte) (<-chan message, error) {
	q := newQueue()
	refused, err := c.subscribeTo(ctx, q, subs)
	if err != nil {
		return nil, err
	}
	if len(refused) > 0 {
		return nil, c.refusedError(refused)
	}
	return c.feed(q), nil
}

// subscribeTo subscribes to subs, queueing what arrives on q, and returns
// the filters the broker refused. paho's handler only appends to the
// unbounded queue: a burst of retained messages is read off the socket as
// fast as it comes, whatever the reader does with it (a broker drops what
// it cannot send to a client that falls behind).
func (c *Conn) subscribeTo(ctx context.Context, q *queue, subs map[string]byte) (refused []string, err error) {
	handler := func(_ mqtt.Client, m mqtt.Message) {
		q.push(message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained(), At: time.Now()})
	}
	tok := c.client.SubscribeMultiple(subs, handler)
	if err := mqttclient.Wait(ctx, tok, c.g.Timeout); err != nil {
		filters := make([]string, 0, len(subs))
		for f := range subs {
			filters = append(filters, f)
		}
		sort.Strings(filters)
		return nil, fmt.Errorf("subscribe %s: %w", strings.Join(filters, " "), err)
	}
	// Brokers answer a refused subscription with a failure code in SUBACK
	// (Mosquitto's ACL does not; it just never delivers).
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				refused = append(refused, f)
			}
		}
	}
	sort.Strings(refused)
	return refused, nil
}

func (c *Conn) refusedError(filters []string) error {
	return fmt.Errorf("subscribe %s: refused by the broker (check the ACL for user %q)", strings.Join(filters, " "), c.g.Username)
}

// feed hands q's messages out on a channel until the Conn is closed.
func (c *Conn) feed(q *queue) <-chan message {
	ch := make(chan message)
	go q.pump(ch, c.done)
	return ch
}

// queue is an unbounded FIFO between paho's handler and a reader.
type queue struct {
	mu     sync.Mutex
	items  []message
	signal chan struct{} // one pending wake-up
}

func newQueue() *queue { return &queue{signal: make(chan struct{}, 1)} }

func (q *queue) push(m message) {
	q.mu.Lock()
	q.items = append(q.items, m)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pump hands the queued messages to ch in order until done is closed.
func (q *queue) pump(ch chan<- message, done <-chan struct{}) {
	for {
		q.mu.Lock()
		batch := q.items
		q.items = nil
		q.mu.Unlock()
		for _, m := range batch {
			select {
			case ch <- m:
			case <-done:
				return
			}
		}
		select {
		case <-q.signal:
		case <-done:
			return
		}
	}
}

// Publish publishes payload at QoS 1 and waits for the broker's PUBACK.
func (c *Conn) Publish(ctx context.Context, topic string, payload []byte) error {
	tok := c.client.Publish(topic, 1, false, payload)
	if err := mqttclient.Wait(ctx, tok, c.g.Timeout); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// request publishes req (which must carry requestID) on the device's suffix
// topic and returns the reply with the same request_id. The reply topic is
// subscribed to before publishing, so a fast device cannot answer unseen.
func (c *Conn) request(ctx context.Context, device, suffix, requestID string, req any, timeout time.Duration) ([]byte, error) {
	replies, err := c.Subscribe(ctx, c.g.topic(device, "pay/reply"))
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if err := c.Publish(ctx, c.g.topic(device, suffix), body); err != nil {
		return nil, err
	}
	return awaitReply(ctx, replies, device, requestID, timeout)
}

// awaitReply returns the first reply on ch whose request_id matches.
func awaitReply(ctx context.Context, ch <-chan message, device, requestID string, timeout time.Duration) ([]byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m := <-ch:
			var head struct {
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal(m.Payload, &head) == nil && head.RequestID == requestID {
				return m.Payload, nil
			}
		case <-t.C:
			return nil, &noReplyError{device: device, timeout: timeout}
		case <-ctx.Done():
			return nil, fmt.Errorf("interrupted while waiting for %s's reply: %w", device, ctx.Err())
		}
	}
}

type noReplyError struct {
	device  string
	timeout time.Duration
}

func (e *noReplyError) Error() string {
	return fmt.Sprintf("no reply from device %s within %v: is it online? try 'kioskctl status -device %s' (a busy provider may need a longer -timeout)", e.device, e.timeout, e.device)
}

// refusal turns a reply with a non-zero code into an error that says what
// the device objected to and, where it helps, what to do.
func refusal(r contract.Reply, dev string) error {
	if r.Code == 0 {
		return nil
	}
	s := fmt.Sprintf("device %s refused (%d %s)", dev, r.Code, r.Error)
	if r.Field != "" {
		s += " field " + r.Field
	}
	if r.Msg != "" {
		s += ": " + r.Msg
	}
	switch r.Error {
	case contract.ErrClockNotSynced:
		s += " (the device's clock is not synchronised yet: check NTP on it)"
	case contract.ErrProviderUnavailable:
		s += " (the provider could not be reached; retry later)"
	case contract.ErrSignatureInvalid:
		s += " (the device requires signed requests: pass -sign-key-file with its unlock.result_key_file)"
	}
	return errors.New(s)
}

// newRequestID returns a request id unique enough to tell our reply apart
// from other operators' on the shared reply topic.
func newRequestID() string { return "kioskctl-" + randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
