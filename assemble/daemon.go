package assemble

import (
	"log/slog"
	"strings"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/device/unlock"
	unlockexec "github.com/kioskpay/kioskpay/device/unlock/exec"
	"github.com/kioskpay/kioskpay/device/unlock/gpio"
	"github.com/kioskpay/kioskpay/device/unlock/serial"
	"github.com/kioskpay/kioskpay/display"
	"github.com/kioskpay/kioskpay/link"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
	"github.com/kioskpay/kioskpay/payment"
)

// LinkOptions builds the MQTT link's options, reading the broker password
// and TLS files. Errors name the key.
func LinkOptions(cfg *config.Config, logger *slog.Logger) (link.Options, error) {
	o := link.Options{
		URLs:     cfg.MQTT.Brokers(),
		ClientID: cfg.MQTT.ClientID,
		Username: cfg.MQTT.Username,
		Prefix:   cfg.Topic(),
		Logger:   logger,
	}
	if cfg.MQTT.PasswordFile != "" {
		pw, err := config.ReadSecret("mqtt.password_file", cfg.MQTT.PasswordFile)
		if err != nil {
			return o, err
		}
		o.Password = pw
	}
	if isTLS, _ := brokerurl.CheckList(o.URLs); isTLS {
		t, err := mqttclient.TLSConfig(cfg.MQTT.CAFile, cfg.MQTT.CertFile, cfg.MQTT.KeyFile)
		if err != nil {
			key := "mqtt.ca_file"
			if cfg.MQTT.CertFile != "" && !strings.Contains(err.Error(), "CA file") {
				key = "mqtt.cert_file"
			}
			return o, &config.Error{Key: key, Msg: err.Error()}
		}
		o.TLS = t
	}
	return o, nil
}

// DisplayConfig is the display's configuration from the [display] table.
func DisplayConfig(cfg *config.Config) display.Config {
	return display.Config{Display: cfg.Display}
}

// EngineConfig is the engine's configuration from the [payment], [unlock]
// and [catalog] tables, with merchants' providers (see Providers). The
// caller adds what is not configuration: version, clock, observer, logger.
func EngineConfig(cfg *config.Config, merchants map[string]map[payment.ProviderName]payment.Provider) device.Config {
	return device.Config{
		DeviceID:              cfg.DeviceID,
		DefaultProvider:       cfg.Payment.Provider,
		DefaultExpire:         cfg.Payment.Expire.Duration,
		MaxFee:                cfg.Payment.MaxFee,
		PollInterval:          cfg.Payment.Poll.Duration,
		NotifyURL:             strings.TrimRight(cfg.Payment.NotifyURL, "/"),
		AckTimeout:            cfg.Unlock.AckTimeout.Duration,
		OnNoAck:               cfg.Unlock.OnNoAck,
		RequireSignedRequests: cfg.Unlock.RequireSignedRequests,
		Catalog:               cfg.Catalog,
		Merchants:             merchants,
	}
}

// Unlock opens the configured local unlock driver (nil for mqtt). gpio
// drives its output to the inactive level here, which is why the daemon
// calls it before anything else.
func Unlock(u config.Unlock, log *slog.Logger) (unlock.Driver, error) {
	switch u.Driver {
	case unlock.DriverGPIO:
		return gpio.Open(u.GPIO, log)
	case unlock.DriverSerial:
		return serial.New(u.Serial, log)
	case unlock.DriverExec:
		return unlockexec.New(u.Exec, log)
	}
	return nil, nil
}
