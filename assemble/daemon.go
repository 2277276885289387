// Package assemble turns a loaded configuration into the daemon's running
// parts: the merchant accounts (payment/accounts builds the provider
// clients from the key files, or payment/gateway reaches paygate), the
// unlock driver, the MQTT link's options (broker password, TLS), the
// display's and the engine's configuration. kioskpayd, its doctor and demo,
// and the proof harness build their daemons through it, so the
// configuration package stays a leaf of plain values that links no SDK,
// MQTT client, driver library or display.
package assemble

import (
	"crypto/tls"
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
	var err error
	o.Password, o.TLS, err = MQTTLogin(cfg.MQTT)
	return o, err
}

// MQTTLogin reads the [mqtt] table's password and TLS files (the link's,
// and its connection to paygate's, login). Errors name the key.
func MQTTLogin(m config.MQTT) (password string, tc *tls.Config, err error) {
	password, tc, err = mqttclient.Files{PasswordFile: m.PasswordFile, CAFile: m.CAFile, CertFile: m.CertFile, KeyFile: m.KeyFile}.Read(m.Brokers())
	if fe, ok := err.(*mqttclient.FileError); ok {
		return "", nil, &config.Error{Key: "mqtt." + fe.Key, Msg: fe.Err.Error()}
	}
	return password, tc, err
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
