package assemble

import (
	"log/slog"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/link"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/accounts"
	"github.com/kioskpay/kioskpay/payment/gateway"
)

// Accounts builds the daemon's merchant accounts for payment.backend: the
// provider clients from the merchant key files (Providers), or Providers
// that call paygate over a connection of their own under the link's login
// (Gateway). close ends that connection (a no-op for local accounts); the
// engine's last calls use it, so it closes after the engine.
func Accounts(cfg *config.Config, lo link.Options, logger *slog.Logger) (map[string]map[payment.ProviderName]payment.Provider, func(), error) {
	if cfg.Payment.Backend != config.BackendGateway {
		p, err := accounts.Providers(cfg, logger)
		return p, func() {}, err
	}
	conn, err := Gateway(cfg, lo, "-gw", logger)
	if err != nil {
		return nil, nil, err
	}
	return conn.Providers(cfg.Gateway.Accounts()), conn.Close, nil
}

// Gateway opens the connection to paygate under the link's broker login,
// with the link's client id and suffix as its own ("-gw" for the daemon;
// doctor uses another: a second client with the daemon's id would take
// over the daemon's connection).
func Gateway(cfg *config.Config, lo link.Options, suffix string, logger *slog.Logger) (*gateway.Conn, error) {
	conn, err := gateway.Dial(gateway.Options{
		Broker: mqttclient.Config{
			Brokers: mqttclient.NewBrokers(lo.URLs), ClientID: lo.ClientID + suffix,
			Username: lo.Username, Password: lo.Password, TLS: lo.TLS,
		},
		TopicPrefix: cfg.MQTT.TopicPrefix, DeviceID: cfg.DeviceID, Timeout: cfg.Gateway.Timeout.Duration,
		Logger: logger,
	})
	if err != nil {
		return nil, &config.Error{Key: "payment.backend", Msg: err.Error()}
	}
	return conn, nil
}
