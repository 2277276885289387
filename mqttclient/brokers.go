package mqttclient

import (
	"crypto/tls"
	"net/url"
	"strings"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
)

// Brokers installs a broker list on paho client options and remembers
// which one the client used last. paho tries the brokers in list order on
// every connect and reconnect and keeps the first that accepts, so a dead
// node costs one refused connection (or ConnectTimeout, when the host does
// not answer at all) before the next is tried.
type Brokers struct {
	urls []string

	mu      sync.Mutex
	current string
}

// NewBrokers returns a Brokers for urls, which the caller has checked.
func NewBrokers(urls []string) *Brokers { return &Brokers{urls: urls} }

// Apply adds the brokers to o with tc (nil for plain brokers). With TLS,
// each attempt verifies the certificate against that broker's own host
// name (tc.ServerName, when set, is kept for every broker).
func (b *Brokers) Apply(o *mqtt.ClientOptions, tc *tls.Config) {
	for _, u := range b.urls {
		o.AddBroker(u)
	}
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	o.SetConnectionAttemptHandler(func(broker *url.URL, cfg *tls.Config) *tls.Config {
		b.mu.Lock()
		b.current = broker.Scheme + "://" + broker.Host
		b.mu.Unlock()
		if cfg == nil || cfg.ServerName != "" {
			return cfg
		}
		c := cfg.Clone()
		c.ServerName = broker.Hostname()
		return c
	})
}

// Current is the broker of the latest connection attempt, without any user
// info: after a successful connect, the one connected to.
func (b *Brokers) Current() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current
}

// String lists the brokers for logs and messages, credentials removed.
func (b *Brokers) String() string {
	r := make([]string, len(b.urls))
	for i, u := range b.urls {
		r[i] = brokerurl.Redact(u)
	}
	return strings.Join(r, ",")
}

// Len is the number of brokers.
func (b *Brokers) Len() int { return len(b.urls) }

// isTLS reports whether the (checked, so uniform) brokers use TLS.
func (b *Brokers) isTLS() bool {
	if len(b.urls) == 0 {
		return false
	}
	t, _ := brokerurl.Check(b.urls[0])
	return t
}
