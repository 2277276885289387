// Package brokerurl holds the rules for broker URLs and broker lists that
// the configuration, the command-line tools and the MQTT client all apply.
// It needs only the standard library, so the config package can check
// mqtt.url and mqtt.urls without linking an MQTT client.
package brokerurl

import (
	"fmt"
	"net/url"
	"strings"
)

// Max bounds a broker list. A cluster has a handful of nodes; a
// longer list is a mistake (a fleet's device list pasted in the wrong
// place), and every extra dead entry adds a connect timeout to a failover.
const Max = 16

// Error is one bad entry of a broker list. Index is its position
// (0-based) in the list, so a config error can name mqtt.urls[Index].
type Error struct {
	Index int
	URL   string
	Msg   string
}

func (e *Error) Error() string { return fmt.Sprintf("%q: %s", Redact(e.URL), e.Msg) }

// Check checks one broker URL: scheme tcp, ssl, ws or wss, a host,
// no credentials (they belong in the user name and password settings, not
// in a URL that ends up in logs). It reports whether the URL means TLS.
func Check(s string) (isTLS bool, err error) {
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

// CheckList checks a list of broker URLs to fail over between: at least
// one, at most Max, each valid, no repeats, and either all TLS or
// all plain, so that failing over can never send the password in clear.
// It reports whether the brokers use TLS. Errors are *Error.
func CheckList(urls []string) (isTLS bool, err error) {
	if len(urls) == 0 {
		return false, &Error{Index: -1, Msg: "no broker URL given"}
	}
	if len(urls) > Max {
		return false, &Error{Index: Max, URL: urls[Max], Msg: fmt.Sprintf("at most %d brokers", Max)}
	}
	seen := make(map[string]int, len(urls))
	for i, s := range urls {
		t, err := Check(s)
		if err != nil {
			return false, &Error{Index: i, URL: s, Msg: err.Error()}
		}
		if j, dup := seen[s]; dup {
			return false, &Error{Index: i, URL: s, Msg: fmt.Sprintf("listed twice (also entry %d)", j)}
		}
		seen[s] = i
		if i > 0 && t != isTLS {
			return false, &Error{Index: i, URL: s, Msg: "mixes TLS and plain brokers: a failover would send the password in clear; make them all ssl:// (or wss://) or all tcp://"}
		}
		isTLS = t
	}
	return isTLS, nil
}

// Split splits the comma-separated broker list of a -broker flag
// (spaces around entries are ignored) and checks it with CheckList.
func Split(list string) ([]string, error) {
	var urls []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			urls = append(urls, s)
		}
	}
	if _, err := CheckList(urls); err != nil {
		return nil, err
	}
	return urls, nil
}

// Redact drops any user info from a broker URL before it is logged.
func Redact(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + rest
}
