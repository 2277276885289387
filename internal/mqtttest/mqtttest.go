// Package mqtttest gives tests an MQTT broker: an in-process mochi-mqtt
// broker by default, or the real broker named by KIOSKPAY_TEST_MQTT_URL
// (e.g. tcp://127.0.0.1:1883 for a local Mosquitto). It also offers a
// subscriber that collects messages and a TCP proxy that can cut or stall
// a client's connection, which works the same in front of either broker.
package mqtttest

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/kioskpay/kioskpay/internal/mochibroker"
)

// EnvURL names the environment variable that selects a real broker.
const EnvURL = "KIOSKPAY_TEST_MQTT_URL"

// Broker returns the URL of a broker for the test: the one in EnvURL, or a
// fresh in-process mochi broker on a loopback port, closed at cleanup.
func Broker(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	_, url := Mochi(t, nil, nil)
	return url
}

// AllowHook lets every client connect and use every topic; tests embed it
// in hooks that refuse something.
type AllowHook = mochibroker.AllowHook

// External reports whether tests run against a real broker.
func External() bool { return os.Getenv(EnvURL) != "" }

// Mochi starts an in-process broker listening on 127.0.0.1 (over TLS when
// tlsConfig is set) and returns it with its URL. hook authenticates and
// authorises; nil allows everything.
func Mochi(t testing.TB, hook mochi.Hook, tlsConfig *tls.Config) (*mochi.Server, string) {
	t.Helper()
	l := listeners.NewTCP(listeners.Config{ID: "test", Address: "127.0.0.1:0", TLSConfig: tlsConfig})
	s, err := mochibroker.Serve(l, hook, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	scheme := "tcp://"
	if tlsConfig != nil {
		scheme = "ssl://"
	}
	return s, scheme + l.Address()
}

// MochiWS starts an in-process broker with a WebSocket listener (wss://
// when tlsConfig is set) and returns its URL.
func MochiWS(t testing.TB, tlsConfig *tls.Config) string {
	t.Helper()
	// mochi's WebSocket listener reports the configured address, not the
	// bound one, so pick a free port first.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	s, err := mochibroker.Serve(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr, TLSConfig: tlsConfig}), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The listener starts serving in the background.
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("websocket listener did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if tlsConfig != nil {
		return "wss://" + addr
	}
	return "ws://" + addr
}

// Unique returns a name no other test (or earlier run against a shared
// broker) uses, for client ids and topic prefixes.
func Unique(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Message is a received message.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
	At       time.Time // when it arrived
}

// Subscriber is a test client that records what arrives on a filter.
type Subscriber struct {
	Client mqtt.Client
	C      chan Message
}

// Subscribe connects a clean-session client to url and subscribes to
// filter at QoS 1.
func Subscribe(t testing.TB, url, filter string) *Subscriber {
	t.Helper()
	s := &Subscriber{C: make(chan Message, 1000)}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(Unique("sub-")).SetCleanSession(true).SetOrderMatters(true) // keep arrival order; the handler only does a buffered send
	o.SetTLSConfig(&tls.Config{InsecureSkipVerify: true})
	s.Client = mqtt.NewClient(o)
	if err := wait(s.Client.Connect()); err != nil {
		t.Fatalf("test subscriber connect: %v", err)
	}
	t.Cleanup(func() { s.Client.Disconnect(0) })
	if err := wait(s.Client.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		s.C <- Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained(), At: time.Now()}
	})); err != nil {
		t.Fatalf("test subscribe: %v", err)
	}
	return s
}

// Publish connects a throwaway client and publishes one QoS 1 message.
func Publish(t testing.TB, url, topic string, payload []byte, retain bool) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(Unique("pub-")).SetCleanSession(true)
	o.SetTLSConfig(&tls.Config{InsecureSkipVerify: true})
	c := mqtt.NewClient(o)
	if err := wait(c.Connect()); err != nil {
		t.Fatalf("test publisher connect: %v", err)
	}
	defer c.Disconnect(100)
	if err := wait(c.Publish(topic, 1, retain, payload)); err != nil {
		t.Fatalf("test publish: %v", err)
	}
}

// Next returns the next message on topic (any topic, when "") within d,
// skipping others.
func (s *Subscriber) Next(t testing.TB, topic string, d time.Duration) Message {
	t.Helper()
	m, ok := s.first(topic, d, nil)
	if !ok {
		t.Fatalf("no message on %s within %s", topic, d)
	}
	return m
}

// Until returns the first message on topic within d for which match
// reports true, skipping others. Brokers may deliver a retained copy of a
// message next to the live one, so tests that wait for a change use it.
func (s *Subscriber) Until(t testing.TB, topic string, d time.Duration, match func(Message) bool) Message {
	t.Helper()
	m, ok := s.first(topic, d, match)
	if !ok {
		t.Fatalf("no matching message on %s within %s", topic, d)
	}
	return m
}

// Contains matches messages whose payload contains sub.
func Contains(sub string) func(Message) bool {
	return func(m Message) bool { return strings.Contains(string(m.Payload), sub) }
}

// Equals matches messages whose payload is exactly p.
func Equals(p string) func(Message) bool {
	return func(m Message) bool { return string(m.Payload) == p }
}

// None fails if a message on topic (any topic, when "") arrives within d.
func (s *Subscriber) None(t testing.TB, topic string, d time.Duration) {
	t.Helper()
	if m, ok := s.first(topic, d, nil); ok {
		t.Fatalf("unexpected message on %s: %s", m.Topic, m.Payload)
	}
}

// first returns the first message on topic (any topic, when "") within d
// that match (nil: any) reports true for, skipping others; ok is false when
// none came in time.
func (s *Subscriber) first(topic string, d time.Duration, match func(Message) bool) (m Message, ok bool) {
	deadline := time.After(d)
	for {
		select {
		case m := <-s.C:
			if (topic == "" || m.Topic == topic) && (match == nil || match(m)) {
				return m, true
			}
		case <-deadline:
			return Message{}, false
		}
	}
}

func wait(t mqtt.Token) error {
	if !t.WaitTimeout(10 * time.Second) {
		return os.ErrDeadlineExceeded
	}
	return t.Error()
}

// Proxy forwards TCP connections to a broker and lets a test break them:
// Cut drops every connection abruptly (no DISCONNECT, so the broker
// publishes the Will), Refuse makes new connections fail, and Stall holds
// the client-to-broker direction (bytes are delayed, not lost).
type Proxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	conns    []net.Conn
	accepted int
	attempts []time.Time // every connection attempt, refused ones too
	refuse   bool
	stalled  chan struct{} // non-nil while stalled; closed on Unstall
}

// NewProxy listens on a loopback port and forwards to the host:port of
// brokerURL. URL is the proxy's own broker URL.
func NewProxy(t testing.TB, brokerURL string) (*Proxy, string) {
	t.Helper()
	_, hostport, ok := cutScheme(brokerURL)
	if !ok {
		t.Fatalf("proxy: bad broker URL %q", brokerURL)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: hostport}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p, "tcp://" + ln.Addr().String()
}

func cutScheme(u string) (string, string, bool) {
	for i := 0; i+3 <= len(u); i++ {
		if u[i:i+3] == "://" {
			return u[:i], u[i+3:], true
		}
	}
	return "", "", false
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.attempts = append(p.attempts, time.Now())
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.accepted++
		p.mu.Unlock()
		go p.pipe(up, c, true)
		go p.pipe(c, up, false)
	}
}

func (p *Proxy) pipe(dst, src net.Conn, upstream bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if upstream {
				p.mu.Lock()
				gate := p.stalled
				p.mu.Unlock()
				if gate != nil {
					<-gate
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a cut connection: close both sides
		}
	}
}

// Accepted counts the connections forwarded so far: which of several
// proxied brokers a client chose.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Attempts returns when each connection attempt reached the proxy, the
// refused ones included, in order.
func (p *Proxy) Attempts() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.attempts...)
}

// Cut closes every proxied connection at once.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Refuse makes the proxy close new connections at once (on) or forward
// them again (off).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Stall holds every byte the client sends until Unstall.
func (p *Proxy) Stall() {
	p.mu.Lock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
	p.mu.Unlock()
}

// Unstall releases the client-to-broker direction.
func (p *Proxy) Unstall() {
	p.mu.Lock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
	p.mu.Unlock()
}
