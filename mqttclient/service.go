package mqttclient

import (
	"context"
	"log/slog"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ServiceOptions configure NewServiceClient.
type ServiceOptions struct {
	Config
	// Filter is subscribed at QoS 1 on every connect.
	Filter string
	// Handler gets every message, each in its own goroutine (order does
	// not matter); paho acknowledges a message when its handler returns.
	Handler mqtt.MessageHandler
	// Timeout bounds the SUBSCRIBE's answer (default 10s).
	Timeout time.Duration
	// Subscribed runs after each successful subscription, Lost when the
	// connection drops (both may be nil).
	Subscribed func(broker string)
	Lost       func(err error)
	Logger     *slog.Logger
}

// NewServiceClient is the session policy of a request/reply service over
// the broker (paygate's replicas, the daemon's connection to paygate):
// a clean session, since nothing is resumed and a late reply is useless;
// every message handled at once, unlike the link's recorded-then-acked
// inbound; reconnecting for ever and subscribing Filter on every connect.
// Call Connect on it; with ConnectRetry its token completes only once
// connected, so nobody need wait on it.
func NewServiceClient(o ServiceOptions) mqtt.Client {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	brokers := o.Brokers
	mo := o.Config.Options().
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetDefaultPublishHandler(o.Handler).
		SetOnConnectHandler(func(c mqtt.Client) {
			// Retried while the connection lasts; never Disconnect here,
			// which would end paho's reconnecting for good.
			for c.IsConnectionOpen() {
				err := Wait(context.Background(), c.Subscribe(o.Filter, 1, nil), timeout)
				if err == nil {
					log.Debug("subscribed", "broker", brokers.Current(), "filter", o.Filter)
					if o.Subscribed != nil {
						o.Subscribed(brokers.Current())
					}
					return
				}
				log.Error("subscribe failed; retrying", "filter", o.Filter, "err", err)
				time.Sleep(time.Second)
			}
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			log.Warn("broker connection lost; reconnecting", "err", err)
			if o.Lost != nil {
				o.Lost(err)
			}
		})
	return mqtt.NewClient(mo)
}
