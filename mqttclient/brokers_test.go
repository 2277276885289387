package mqttclient

import (
	"crypto/tls"
	"net/url"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

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
