package mqttclient

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// MaxBrokers bounds a broker list. A cluster has a handful of nodes; a
// longer list is a mistake (a fleet's device list pasted in the wrong
// place), and every extra dead entry adds a connect timeout to a failover.
const MaxBrokers = 16

// BrokerError is one bad entry of a broker list. Index is its position
// (0-based) in the list, so a config error can name mqtt.urls[Index].
type BrokerError struct {
	Index int
	URL   string
	Msg   string
}

func (e *BrokerError) Error() string { return fmt.Sprintf("%q: %s", redactURL(e.URL), e.Msg) }

// CheckBrokerURL checks one broker URL: scheme tcp, ssl, ws or wss, a host,
// no credentials (they belong in the user name and password settings, not
// in a URL that ends up in logs). It reports whether the URL means TLS.
func CheckBrokerURL(s string) (isTLS bool, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return false, fmt.Errorf("not a URL: %v", err)
	}
	switch u.Scheme {
	case "tcp", "ws":
	case "ssl", "wss":
		isTLS = true
	default:
		return false, fmt.Errorf("scheme must be tcp, ssl, ws or wss, got %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return isTLS, fmt.Errorf("has no host (want e.g. tcp://127.0.0.1:1883)")
	}
	if u.User != nil {
		return isTLS, fmt.Errorf("must not carry credentials (URLs end up in logs); give the user name and password file separately")
	}
	return isTLS, nil
}

// CheckBrokers checks a list of broker URLs to fail over between: at least
// one, at most MaxBrokers, each valid, no repeats, and either all TLS or
// all plain, so that failing over can never send the password in clear.
// It reports whether the brokers use TLS. Errors are *BrokerError.
func CheckBrokers(urls []string) (isTLS bool, err error) {
	if len(urls) == 0 {
		return false, &BrokerError{Index: -1, Msg: "no broker URL given"}
	}
	if len(urls) > MaxBrokers {
		return false, &BrokerError{Index: MaxBrokers, URL: urls[MaxBrokers], Msg: fmt.Sprintf("at most %d brokers", MaxBrokers)}
	}
	seen := make(map[string]int, len(urls))
	for i, s := range urls {
		t, err := CheckBrokerURL(s)
		if err != nil {
			return false, &BrokerError{Index: i, URL: s, Msg: err.Error()}
		}
		if j, dup := seen[s]; dup {
			return false, &BrokerError{Index: i, URL: s, Msg: fmt.Sprintf("listed twice (also entry %d)", j)}
		}
		seen[s] = i
		if i > 0 && t != isTLS {
			return false, &BrokerError{Index: i, URL: s, Msg: "mixes TLS and plain brokers: a failover would send the password in clear; make them all ssl:// (or wss://) or all tcp://"}
		}
		isTLS = t
	}
	return isTLS, nil
}

// SplitBrokers splits the comma-separated broker list of a -broker flag
// (spaces around entries are ignored) and checks it with CheckBrokers.
func SplitBrokers(list string) ([]string, error) {
	var urls []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			urls = append(urls, s)
		}
	}
	if _, err := CheckBrokers(urls); err != nil {
		return nil, err
	}
	return urls, nil
}

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
		r[i] = redactURL(u)
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
	t, _ := CheckBrokerURL(b.urls[0])
	return t
}
