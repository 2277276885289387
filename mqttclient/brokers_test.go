package mqttclient

import (
	"crypto/tls"
	"errors"
	"net/url"
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func TestCheckBrokers(t *testing.T) {
	for _, c := range []struct {
		urls    []string
		tls     bool
		index   int    // of the bad entry, when wantErr
		wantErr string // substring of the error; "" = valid
	}{
		{urls: []string{"tcp://127.0.0.1:1883"}},
		{urls: []string{"ssl://a:8883", "wss://b:443/mqtt"}, tls: true},
		{urls: []string{"tcp://a:1883", "tcp://b:1883", "ws://c:80/mqtt"}},
		{urls: nil, index: -1, wantErr: "no broker URL"},
		{urls: []string{"mqtt://a:1883"}, wantErr: "scheme must be tcp, ssl, ws or wss"},
		{urls: []string{"tcp://a:1", "a:1883"}, index: 1, wantErr: "scheme"},
		{urls: []string{"tcp://"}, wantErr: "has no host"},
		{urls: []string{"tcp://u:pw@a:1883"}, wantErr: "must not carry credentials"},
		{urls: []string{"tcp://a:1", "tcp://b:1", "tcp://a:1"}, index: 2, wantErr: "listed twice (also entry 0)"},
		{urls: []string{"ssl://a:8883", "tcp://b:1883"}, index: 1, wantErr: "mixes TLS and plain"},
		{urls: []string{"tcp://%zz"}, wantErr: "not a URL"},
		{urls: strings.Split(strings.Repeat("tcp://a:1,", MaxBrokers+1), ",")[:MaxBrokers+1], index: MaxBrokers, wantErr: "at most 16"},
	} {
		isTLS, err := CheckBrokers(c.urls)
		if c.wantErr == "" {
			if err != nil || isTLS != c.tls {
				t.Errorf("CheckBrokers(%q) = %v, %v; want %v, nil", c.urls, isTLS, err, c.tls)
			}
			continue
		}
		var be *BrokerError
		if !errors.As(err, &be) || !strings.Contains(err.Error(), c.wantErr) || be.Index != c.index {
			t.Errorf("CheckBrokers(%q) = %v; want a BrokerError at %d containing %q", c.urls, err, c.index, c.wantErr)
		}
	}
}

func TestSplitBrokers(t *testing.T) {
	got, err := SplitBrokers(" tcp://a:1883, tcp://b:1883 ,,tcp://c:1883")
	if err != nil || strings.Join(got, " ") != "tcp://a:1883 tcp://b:1883 tcp://c:1883" {
		t.Fatalf("SplitBrokers = %q, %v", got, err)
	}
	if _, err := SplitBrokers(" , "); err == nil {
		t.Fatal("an empty list was accepted")
	}
	// The password of a URL never reaches an error message.
	if _, err := SplitBrokers("tcp://u:hunter2@a:1"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error = %v", err)
	}
}

// Each TLS attempt checks the certificate against the host it dials, not
// the first broker's name; an explicit ServerName is kept.
func TestBrokersServerNamePerAttempt(t *testing.T) {
	b := NewBrokers([]string{"ssl://node-a.example:8883", "ssl://node-b.example:8883"})
	o := mqtt.NewClientOptions()
	b.Apply(o, &tls.Config{MinVersion: tls.VersionTLS12})
	if len(o.Servers) != 2 {
		t.Fatalf("servers = %v", o.Servers)
	}
	for _, s := range o.Servers {
		got := o.OnConnectAttempt(s, o.TLSConfig)
		if got.ServerName != s.Hostname() {
			t.Errorf("attempt on %s verifies %q", s, got.ServerName)
		}
		if b.Current() != "ssl://"+s.Host {
			t.Errorf("Current = %q after an attempt on %s", b.Current(), s)
		}
	}
	if o.TLSConfig.ServerName != "" {
		t.Error("the shared TLS config was modified")
	}
	fixed := &tls.Config{ServerName: "broker.example"}
	u, _ := url.Parse("ssl://10.0.0.1:8883")
	if got := o.OnConnectAttempt(u, fixed); got.ServerName != "broker.example" {
		t.Errorf("explicit ServerName replaced by %q", got.ServerName)
	}
	if got := o.OnConnectAttempt(u, nil); got != nil {
		t.Error("a plain broker got a TLS config")
	}
	if b.String() != "ssl://node-a.example:8883,ssl://node-b.example:8883" {
		t.Errorf("String = %q", b.String())
	}
}
