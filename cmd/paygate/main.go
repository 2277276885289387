// Command paygate is the fleet-side payment gateway: it holds the merchant
// keys and performs WeChat Pay / Alipay calls for devices whose kioskpayd
// runs with payment.backend = "gateway", under a per-device policy, and
// forwards the providers' notifications to the devices (docs/contract.md
// §1, §2.9, §3.7). Run any number of replicas on one broker: they share
// the requests through an MQTT shared subscription.
//
// Usage:
//
//	paygate -config FILE [-log-level L]
//	paygate -version
//
// Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 fatal error, 2 bad
// configuration or usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/internal/clock"
	"github.com/kioskpay/kioskpay/internal/logging"
	"github.com/kioskpay/kioskpay/internal/sdnotify"
	"github.com/kioskpay/kioskpay/paygate"
)

var version = ""

const (
	exitOK        = 0
	exitFatal     = 1
	exitBadConfig = 2
)

const help = `paygate is the kioskpay payment gateway: it holds the merchant keys and makes the
provider calls of devices that run kioskpayd with payment.backend = "gateway".

Usage:
  paygate -config FILE [-log-level L]
  paygate -version

Flags:
%s
Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 fatal error, 2 bad configuration or usage.
SIGHUP reopens the audit log (after a rotation renamed it).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("paygate", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file (docs/contract.md §2.9)")
	showVersion := fs.Bool("version", false, "print the version")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if code, done := cli.Parse(fs, args, fmt.Sprintf(help, cli.Flags(fs)), false, stdout, stderr); done {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, "paygate", cli.Version(version))
		return exitOK
	}
	level, err := logging.ParseLevel(*logLevel)
	if err != nil {
		return cli.Usagef(stderr, "paygate", "-log-level %v", err)
	}
	if *configPath == "" {
		return cli.Usagef(stderr, "paygate", "-config FILE is required")
	}
	log := logging.New(stderr, level)
	badConfig := func(err error) int {
		fmt.Fprintln(stderr, "paygate: bad configuration:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  %s\n", line)
		}
		return exitBadConfig
	}
	fatal := func(err error) int {
		fmt.Fprintln(stderr, "paygate:", err)
		return exitFatal
	}
	cfg, err := paygate.LoadConfig(*configPath)
	if err != nil {
		return badConfig(err)
	}
	accounts, err := cfg.Providers(log)
	if err != nil {
		return badConfig(err)
	}
	checker, err := clock.New(cfg.Clock.SyncCheck)
	if err != nil {
		return badConfig(&config.Error{Key: "clock.sync_check", Msg: err.Error()})
	}
	broker, err := cfg.Broker()
	if err != nil {
		return badConfig(err)
	}
	audit, err := paygate.OpenAudit(cfg.Audit.File)
	if err != nil {
		return fatal(err)
	}
	defer audit.Close()

	log = log.With("replica", cfg.Replica)
	gate := &paygate.Gate{Policy: &cfg.Policy, Accounts: accounts, Audit: audit, Replica: cfg.Replica, NotifyBase: cfg.Notify.PublicURL, Logger: log, ClockSynced: checker.Func()}
	srv := &paygate.Server{Gate: gate, TopicPrefix: cfg.MQTT.TopicPrefix, Logger: log}
	srv.Connect(broker)
	defer srv.Close()

	errc := make(chan error, 1)
	if cfg.Notify.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Notify.Listen)
		if err != nil {
			return fatal(fmt.Errorf("notify.listen: %w", err))
		}
		hs := &http.Server{Handler: srv.NotifyHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
		go func() { errc <- hs.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = hs.Shutdown(sctx)
		}()
		log.Info("paygate notifications", "listen", ln.Addr().String(), "public_url", cfg.Notify.PublicURL)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	notifier := sdnotify.FromEnv()
	log.Info("paygate ready", "version", cli.Version(version), "brokers", broker.Brokers.String(), "merchants", len(accounts), "audit", cfg.Audit.File)
	_ = notifier.Ready()
	for {
		select {
		case <-ctx.Done():
			_ = notifier.Stopping()
			log.Info("paygate stopping")
			return exitOK
		case <-hup:
			if err := audit.Reopen(); err != nil {
				log.Error("reopen audit log", "err", err)
			} else {
				log.Info("audit log reopened", "file", cfg.Audit.File)
			}
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				return fatal(fmt.Errorf("notify server: %w", err))
			}
		}
	}
}
