package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/device/link"
)

// Conn is kioskctl's MQTT session: a clean session with a random client id,
// so several operators can run kioskctl at once without kicking each other
// off the broker.
type Conn struct {
	g      *Globals
	client mqtt.Client
	done   chan struct{}
	once   sync.Once
}

// message is one received publish.
type message struct {
	Topic   string
	Payload []byte
	At      time.Time
}

// connect opens a connection to g.Broker within g.Timeout.
func (g *Globals) connect(ctx context.Context) (*Conn, error) {
	u, err := url.Parse(g.Broker)
	if err != nil || u.Host == "" {
		return nil, usagef("-broker %q: want a URL such as tcp://127.0.0.1:1883 or ssl://broker:8883", g.Broker)
	}
	opts := mqtt.NewClientOptions().
		AddBroker(g.Broker).
		SetClientID("kioskctl-" + randomHex(6)).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(g.Timeout).
		SetWriteTimeout(g.Timeout).
		SetKeepAlive(30 * time.Second).
		// Handlers only hand messages to channels; order matters for watch.
		SetOrderMatters(true)
	if g.Username != "" {
		opts.SetUsername(g.Username)
	}
	if g.PasswordFile != "" {
		b, err := os.ReadFile(g.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read -password-file: %w", err)
		}
		opts.SetPassword(strings.TrimSpace(string(b)))
	}
	tc, err := tlsConfig(u, g.CAFile, g.CertFile, g.KeyFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts.SetTLSConfig(tc)
	}
	c := &Conn{g: g, client: mqtt.NewClient(opts), done: make(chan struct{})}
	tok := c.client.Connect()
	if err := link.Wait(ctx, tok, g.Timeout); err != nil {
		return nil, fmt.Errorf("connect to broker %s: %w (is the broker running and -broker right? TLS brokers need ssl:// and -ca-file)", g.Broker, link.ConnectError(err))
	}
	return c, nil
}

// tlsConfig returns the TLS settings for u, or nil for plain TCP/WS.
func tlsConfig(u *url.URL, caFile, certFile, keyFile string) (*tls.Config, error) {
	if !link.IsTLSURL(u) {
		if caFile != "" || certFile != "" {
			return nil, usagef("TLS files given but -broker %s is not a TLS URL: use ssl://host:8883 or wss://", u.Redacted())
		}
		return nil, nil
	}
	if (certFile == "") != (keyFile == "") {
		return nil, usagef("mutual TLS needs both -cert-file and -key-file")
	}
	tc, err := link.TLSConfig(caFile, certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("-ca-file/-cert-file/-key-file: %w", err)
	}
	tc.ServerName = u.Hostname()
	return tc, nil
}

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
	ch := make(chan message, 256)
	handler := func(_ mqtt.Client, m mqtt.Message) {
		msg := message{Topic: m.Topic(), Payload: m.Payload(), At: time.Now()}
		select {
		case ch <- msg:
		case <-c.done:
		}
	}
	subs := make(map[string]byte, len(filters))
	for _, f := range filters {
		subs[f] = 1
	}
	tok := c.client.SubscribeMultiple(subs, handler)
	if err := link.Wait(ctx, tok, c.g.Timeout); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", strings.Join(filters, " "), err)
	}
	// Brokers answer a refused subscription with a failure code in SUBACK
	// (Mosquitto's ACL does not; it just never delivers).
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				return nil, fmt.Errorf("subscribe %s: refused by the broker (check the ACL for user %q)", f, c.g.Username)
			}
		}
	}
	return ch, nil
}

// Publish publishes payload at QoS 1 and waits for the broker's PUBACK.
func (c *Conn) Publish(ctx context.Context, topic string, payload []byte) error {
	tok := c.client.Publish(topic, 1, false, payload)
	if err := link.Wait(ctx, tok, c.g.Timeout); err != nil {
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
func refusal(r device.Reply, dev string) error {
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
	case device.ErrClockNotSynced:
		s += " (the device's clock is not synchronised yet: check NTP on it)"
	case device.ErrProviderUnavailable:
		s += " (the provider could not be reached; retry later)"
	case device.ErrSignatureInvalid:
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
