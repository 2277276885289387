package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/kioskpay/kioskpay/paygate"
)

// startDemoGateway runs paygate in the demo's process for -backend gateway:
// the config `paysim -keys` wrote in dir, on the demo's broker, with its
// notification endpoint on a loopback port (returned: the orders'
// notifications go there). stop ends it.
func startDemoGateway(dir, brokerURL string, log *slog.Logger) (notifyURL string, stop func(), err error) {
	cfg, err := paygate.LoadConfig(filepath.Join(dir, "paygate.toml"))
	if err != nil {
		return "", nil, err
	}
	cfg.MQTT.URL, cfg.MQTT.URLs = brokerURL, nil
	accounts, err := cfg.Providers(log)
	if err != nil {
		return "", nil, err
	}
	login, err := cfg.Broker()
	if err != nil {
		return "", nil, err
	}
	audit, err := paygate.OpenAudit(cfg.Audit.File)
	if err != nil {
		return "", nil, err
	}
	gate := &paygate.Gate{Policy: &cfg.Policy, Accounts: accounts, Audit: audit, Replica: "demo", Logger: log}
	srv := &paygate.Server{Gate: gate, TopicPrefix: cfg.MQTT.TopicPrefix, Logger: log}
	url, stopHTTP, err := serveLoopback(srv.NotifyHandler())
	if err != nil {
		audit.Close()
		return "", nil, fmt.Errorf("paygate port: %w", err)
	}
	gate.NotifyBase = url
	srv.Connect(login)
	return url, func() { stopHTTP(); srv.Close(); audit.Close() }, nil
}
