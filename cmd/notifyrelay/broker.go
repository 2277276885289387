package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/device/link"
)

// BrokerConfig says how to reach the MQTT broker.
type BrokerConfig struct {
	URL          string
	ClientID     string
	Username     string
	PasswordFile string
	CAFile       string
	CertFile     string
	KeyFile      string
}

// mqttPublisher is a Publisher over paho with automatic reconnection. It
// uses a clean session: the relay has nothing to resume, and every message
// it did not get a PUBACK for was answered with a failure, so the provider
// sends it again.
type mqttPublisher struct {
	client mqtt.Client
}

// dialBroker starts connecting to the broker and keeps retrying in the
// background: the relay serves /healthz (failing) while the broker is down
// rather than exiting, so an orchestrator does not restart-loop it.
func dialBroker(cfg BrokerConfig, log *slog.Logger) (*mqttPublisher, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("-broker %q: want a URL such as tcp://127.0.0.1:1883 or ssl://broker:8883", cfg.URL)
	}
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.URL).
		SetClientID(cfg.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOnConnectHandler(func(mqtt.Client) { log.Info("broker connected", "broker", u.Redacted()) }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			log.Warn("broker connection lost", "broker", u.Redacted(), "err", err)
		})
	if cfg.Username != "" {
		opts.SetUsername(cfg.Username)
	}
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read -password-file: %w", err)
		}
		opts.SetPassword(strings.TrimSpace(string(b)))
	}
	tc, err := tlsConfig(u, cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts.SetTLSConfig(tc)
	}
	p := &mqttPublisher{client: mqtt.NewClient(opts)}
	// With ConnectRetry the token completes only once connected; nobody
	// waits on it.
	p.client.Connect()
	return p, nil
}

// Publish implements Publisher.
func (p *mqttPublisher) Publish(ctx context.Context, topic string, payload []byte) error {
	tok := p.client.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return fmt.Errorf("publish %s: no PUBACK: %w", topic, ctx.Err())
	}
}

// Connected implements Publisher.
func (p *mqttPublisher) Connected() bool { return p.client.IsConnectionOpen() }

// Close disconnects, letting in-flight publishes finish for up to a second.
func (p *mqttPublisher) Close() { p.client.Disconnect(1000) }

// tlsConfig returns the TLS settings for u, or nil for plain TCP/WS.
func tlsConfig(u *url.URL, caFile, certFile, keyFile string) (*tls.Config, error) {
	if !link.IsTLSURL(u) {
		if caFile != "" || certFile != "" {
			return nil, fmt.Errorf("TLS files given but -broker %s is not a TLS URL: use ssl://host:8883", u.Redacted())
		}
		return nil, nil
	}
	tc, err := link.TLSConfig(caFile, certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("-ca-file/-cert-file/-key-file: %w", err)
	}
	tc.ServerName = u.Hostname()
	return tc, nil
}
