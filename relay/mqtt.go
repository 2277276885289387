package relay

import (
	"context"
	"fmt"
	"log/slog"
	"math/bits"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/mqttclient"
)

// BrokerConfig says how to reach the MQTT broker.
type BrokerConfig struct {
	// URL is one broker, or the nodes of a cluster separated by commas,
	// tried in order on every (re)connect.
	URL          string
	ClientID     string
	Username     string
	PasswordFile string
	CAFile       string
	CertFile     string
	KeyFile      string
}

// MQTTPublisher is a Publisher over paho with automatic reconnection. It
// uses a clean session: the relay has nothing to resume, and every message
// it did not get a PUBACK for was answered with a failure, so the provider
// sends it again.
type MQTTPublisher struct {
	client mqtt.Client
}

// Dial starts connecting to the broker and keeps retrying in the
// background: a relay serves /healthz (failing) while the broker is down
// rather than exiting, so an orchestrator does not restart-loop it. Failed
// attempts are logged, the first at once and then ever more rarely (the
// 1st, 2nd, 4th, 8th … in a row), so an unreachable broker is visible in
// the log without flooding it.
func Dial(cfg BrokerConfig, log *slog.Logger) (*MQTTPublisher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	urls, password, tc, err := mqttclient.ClientFlags{
		Brokers: cfg.URL, Username: cfg.Username, PasswordFile: cfg.PasswordFile,
		CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile,
	}.Resolve()
	if err != nil {
		return nil, err
	}
	brokers := mqttclient.NewBrokers(urls)
	var failures atomic.Int64 // attempts in a row that failed
	opts := mqttclient.Config{
		Brokers: brokers, ClientID: cfg.ClientID, Username: cfg.Username, Password: password, TLS: tc,
		ConnectTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, KeepAlive: 30 * time.Second,
	}.Options().
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetOnConnectHandler(func(mqtt.Client) {
			failures.Store(0)
			log.Info("broker connected", "broker", brokers.Current())
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			log.Warn("broker connection lost; reconnecting", "broker", brokers.Current(), "err", err)
		}).
		SetConnectionNotificationHandler(func(_ mqtt.Client, note mqtt.ConnectionNotification) {
			f, ok := note.(mqtt.ConnectionNotificationFailed)
			if !ok {
				return
			}
			n := failures.Add(1)
			if bits.OnesCount64(uint64(n)) == 1 {
				log.Warn("broker unreachable; notifications are refused with 503 until it is back", "broker", brokers.String(),
					"failed_attempts", n, "err", mqttclient.ConnectError(f.Reason).Error())
			}
		})
	p := &MQTTPublisher{client: mqtt.NewClient(opts)}
	// With ConnectRetry the token completes only once connected; nobody
	// waits on it.
	p.client.Connect()
	return p, nil
}

// Publish implements Publisher.
func (p *MQTTPublisher) Publish(ctx context.Context, topic string, payload []byte) error {
	tok := p.client.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return fmt.Errorf("publish %s: no PUBACK: %w", topic, ctx.Err())
	}
}

// Connected implements Publisher.
func (p *MQTTPublisher) Connected() bool { return p.client.IsConnectionOpen() }

// Close disconnects, letting in-flight publishes finish for up to a second.
func (p *MQTTPublisher) Close() { p.client.Disconnect(1000) }
