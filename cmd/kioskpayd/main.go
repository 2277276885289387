// The CPU count of an embedded device does not change while it runs, so the
// runtime need not re-read the cgroup CPU limit every second (Go 1.25+): that
// timer alone was most of an idle daemon's wake-ups (BENCHMARKS.md).
//go:debug updatemaxprocs=0

// Command kioskpayd is the kioskpay device daemon: it takes order requests
// over MQTT, creates WeChat Pay / Alipay QR orders, shows the QR code on
// the device's display, detects payment and publishes the result that
// unlocks the device (docs/contract.md §1).
//
// Usage:
//
//	kioskpayd -config FILE          run the daemon
//	kioskpayd -demo                 everything in one process, no set-up
//	kioskpayd doctor -config FILE   check keys, clock, broker, providers, display
//	kioskpayd recover -config FILE  check the order store, rebuild a damaged one
//	kioskpayd compact -config FILE  shrink the order store's file (daemon stopped)
//	kioskpayd -version
//
// Exit codes: 0 clean stop (SIGTERM/SIGINT), 2 bad configuration (the
// message names the key), 1 any other fatal error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/assemble"
	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/display"
	"github.com/kioskpay/kioskpay/display/orderscreen"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/internal/clock"
	"github.com/kioskpay/kioskpay/internal/logging"
	"github.com/kioskpay/kioskpay/internal/sdnotify"
	"github.com/kioskpay/kioskpay/link"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

// readyGrace is how long start-up waits for the broker before telling
// systemd it is ready anyway (below systemd's default 90 s start timeout).
const readyGrace = 30 * time.Second

// Exit codes (docs/contract.md §1).
const (
	exitOK        = 0
	exitFatal     = 1
	exitBadConfig = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Version reports the daemon's version: the -ldflags value, else the
// module version Go stamped, else "dev".
func Version() string { return cli.Version(version) }

const usage = `kioskpayd is the kioskpay payment daemon: it takes order requests over MQTT, shows
WeChat Pay / Alipay QR codes on the device's screen and publishes the payment result.

Usage:
  kioskpayd -config FILE [-log-level L]   run the daemon
  kioskpayd -demo [-log-level L]          run broker, payment simulator, notification relay,
                                          daemon and web display in one process
  kioskpayd -demo -backend gateway        the same with paygate holding the merchant keys
  kioskpayd doctor -config FILE           check config, keys, clock, broker, providers and display
  kioskpayd recover -config FILE          check the order store, rebuild a damaged one
  kioskpayd unlock-safe -config FILE      drive the unlock outputs to their safe level
  kioskpayd unit-dropin -config FILE      print the systemd drop-in the unlock driver needs
  kioskpayd compact -config FILE          rewrite the order store into a compact file
                                          (the daemon must be stopped)
  kioskpayd -version                      print the version

Flags:
  -config FILE    the TOML configuration (docs/contract.md §2)
  -demo           run the self-contained demo
  -backend B      with -demo: local (default, keys on the device) or gateway (paygate)
  -log-level L    debug, info (default), warn or error
  -version        print the version

Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 fatal error, 2 bad configuration or usage.
`

// run is the whole program behind main, with its environment passed in so
// tests can run it in-process. It returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "doctor" {
		return runDoctor(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "recover" {
		return runRecover(args[1:], stdout, stderr, logging.New(stderr, slog.LevelInfo))
	}
	if len(args) > 0 && args[0] == "unlock-safe" {
		return runUnlockSafe(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "unit-dropin" {
		return runUnitDropIn(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "compact" {
		return runCompact(args[1:], stdout, stderr, logging.New(stderr, slog.LevelInfo))
	}
	fs := flag.NewFlagSet("kioskpayd", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file")
	showVersion := fs.Bool("version", false, "print the version")
	demo := fs.Bool("demo", false, "run the self-contained demo")
	backend := fs.String("backend", string(config.BackendLocal), "with -demo: local or gateway")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if code, done := cli.Parse(fs, args, usage, false, stdout, stderr); done {
		return code
	}
	if *showVersion {
		fmt.Fprintf(stdout, "kioskpayd %s\n", Version())
		return exitOK
	}
	level, err := logging.ParseLevel(*logLevel)
	if err != nil {
		return cli.Usagef(stderr, "kioskpayd", "-log-level %v", err)
	}
	logger := logging.New(stderr, level)
	switch {
	case !config.Backend(*backend).Valid():
		return cli.Usagef(stderr, "kioskpayd", "-backend %q: want local or gateway", *backend)
	case config.Backend(*backend) != config.BackendLocal && !*demo:
		return cli.Usagef(stderr, "kioskpayd", "-backend is for -demo; a daemon takes payment.backend from its -config")
	case *demo:
		return runDemo(ctx, stdin, stdout, stderr, logger, config.Backend(*backend))
	}
	if *configPath == "" {
		return cli.Usagef(stderr, "kioskpayd", "-config FILE is required (or -demo)")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		printConfigError(stderr, err)
		return exitBadConfig
	}
	return daemon(ctx, cfg, stderr, logger, nil)
}

// printConfigError prints each problem on its own line; every line names
// the key (config.Error) or the file.
func printConfigError(w io.Writer, err error) {
	fmt.Fprintln(w, "kioskpayd: bad configuration:")
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
}

// hooks let the demo and tests watch the daemon start.
type hooks struct {
	// ready is called once the store is open and the broker connected,
	// with the web display's address ("" without a web output).
	ready func(webAddr string)
	// readyGrace overrides readyGrace when positive.
	readyGrace time.Duration
}

// daemon runs the configured daemon until ctx ends and returns the exit
// code. On a stop it lets the engine finish the work in flight, drains the
// outbox, publishes the offline status and closes the store.
func daemon(ctx context.Context, cfg *config.Config, stderr io.Writer, logger *slog.Logger, h *hooks) int {
	log := logger.With("device_id", cfg.DeviceID)
	log.Info("starting kioskpayd", "version", Version(), "state_dir", cfg.StateDir, "brokers", strings.Join(cfg.MQTT.Brokers(), ","))

	// The unlock driver first: gpio drives its output to the inactive level
	// as it opens, so a relay left closed by a killed process opens before
	// anything else happens. It is closed (outputs safe again) only after
	// the engine stopped using it.
	drv, err := assemble.Unlock(cfg.Unlock, logger)
	if err != nil {
		log.Error("open unlock driver", "driver", cfg.Unlock.Driver, "err", err)
		fmt.Fprintf(stderr, "kioskpayd: unlock driver %s: %v\n", cfg.Unlock.Driver, err)
		return exitFatal
	}
	closeUnlock := func() {
		if drv == nil {
			return
		}
		if err := drv.Close(); err != nil {
			log.Error("close unlock driver", "err", err)
		}
		drv = nil
	}
	defer closeUnlock()
	log.Info("unlock driver", "driver", cfg.Unlock.Driver)

	// Everything that can be wrong with the configuration is checked before
	// anything is opened, so a bad config never leaves half a daemon behind.
	linkOpts, err := assemble.LinkOptions(cfg, logger)
	if err != nil {
		printConfigError(stderr, err)
		return exitBadConfig
	}
	providers, closeAccounts, err := assemble.Accounts(cfg, linkOpts, logger)
	if err != nil {
		printConfigError(stderr, err)
		return exitBadConfig
	}
	// The gateway connection outlives the engine, whose last calls use it.
	defer closeAccounts()
	log.Info("payment accounts loaded", "backend", cfg.Payment.Backend, "accounts", providerNames(providers))
	checker, err := clock.New(cfg.Clock.SyncCheck)
	if err != nil {
		printConfigError(stderr, &config.Error{Key: "clock.sync_check", Msg: err.Error()})
		return exitBadConfig
	}
	var resultKey []byte
	if cfg.Unlock.ResultKeyFile != "" {
		k, err := config.ReadSecret("unlock.result_key_file", cfg.Unlock.ResultKeyFile)
		if err != nil {
			printConfigError(stderr, err)
			return exitBadConfig
		}
		resultKey = []byte(k)
	}
	disp, err := display.New(assemble.DisplayConfig(cfg), logger)
	if err != nil {
		printConfigError(stderr, err)
		return exitBadConfig
	}
	defer disp.Close()

	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		log.Error("create state_dir", "err", err)
		fmt.Fprintf(stderr, "kioskpayd: state_dir: %v\n", err)
		return exitFatal
	}
	db, err := openStore(log, filepath.Join(cfg.StateDir, storeFile), store.Options{Retention: cfg.Retention(), Logger: log})
	if err != nil {
		log.Error("open store", "err", err)
		fmt.Fprintf(stderr, "kioskpayd: %v\n", err)
		return exitFatal
	}
	defer db.Close()

	retry, err := device.ParseRetry(os.Getenv(device.EnvTestRetry))
	if err != nil {
		fmt.Fprintf(stderr, "kioskpayd: %s %v\n", device.EnvTestRetry, err)
		return exitBadConfig
	}
	var staleAfter time.Duration
	if v := os.Getenv(device.EnvTestStaleAfter); v != "" {
		if staleAfter, err = time.ParseDuration(v); err != nil || staleAfter <= 0 {
			fmt.Fprintf(stderr, "kioskpayd: %s=%q: want a duration such as 5s\n", device.EnvTestStaleAfter, v)
			return exitBadConfig
		}
	}
	ec := assemble.EngineConfig(cfg, providers)
	ec.Version = Version()
	ec.ResultKey = resultKey
	ec.ClockSynced = checker.Func()
	ec.BuildTime = checker.NotBefore
	ec.Observer = orderscreen.New(disp)
	ec.Logger = logger
	ec.Retry = retry
	ec.StaleAfter = staleAfter
	ec.Unlock = drv
	eng, err := device.New(db, ec)
	if err != nil {
		log.Error("start engine", "err", err)
		fmt.Fprintf(stderr, "kioskpayd: %v\n", err)
		return exitFatal
	}
	lnk, err := link.New(linkOpts, engineLink{eng})
	if err != nil {
		fmt.Fprintf(stderr, "kioskpayd: %v\n", err)
		return exitFatal
	}

	notifier := sdnotify.FromEnv()

	// Three lifetimes: the display outlives the engine so the last screen
	// stays up; the link outlives the engine so the engine's final replies
	// and the offline status go out.
	engCtx, stopEngine := context.WithCancel(ctx)
	defer stopEngine()
	linkCtx, stopLink := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLink()
	dispCtx, stopDisplay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDisplay()

	dispDone := make(chan struct{})
	go func() { defer close(dispDone); disp.Run(dispCtx) }()
	linkDone := make(chan error, 1)
	go func() { linkDone <- lnk.Run(linkCtx) }()
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Run(engCtx) }()

	// Healthy for the watchdog: the engine loop turns, and the link has
	// either a connection or is legitimately trying to get one (paho
	// reconnects on its own; a broker outage is not a reason to restart).
	const maxAge = 30 * time.Second
	wdCtx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go notifier.RunWatchdog(wdCtx, notifier.WatchdogInterval(), func() bool { return eng.Healthy(maxAge) })

	code := exitOK
	// READY=1 goes out once the store is open and the broker connected. A
	// broker that stays unreachable must not fail the start, though: the
	// engine works without it (orders resume, payments are detected,
	// results wait in the outbox), and a start timeout would put an
	// unattended device into systemd's start-limit trap. After readyGrace
	// the daemon reports ready anyway and keeps connecting.
	graceFor := readyGrace
	if h != nil && h.readyGrace > 0 {
		graceFor = h.readyGrace
	}
	grace := time.NewTimer(graceFor)
	defer grace.Stop()
	notified := false
	linkReady := lnk.Ready()
wait:
	for {
		select {
		case <-linkReady:
			linkReady = nil
			webAddr := waitWebAddr(ctx, disp, cfg)
			log.Info("kioskpayd ready", "web", webAddr)
			if !notified {
				_ = notifier.Ready()
				notified = true
			}
			_ = notifier.Status("connected to " + lnk.Broker())
			if h != nil && h.ready != nil {
				h.ready(webAddr)
			}
		case <-grace.C:
			if !notified {
				log.Warn("MQTT broker not reachable yet; running without it and still connecting", "grace", graceFor)
				_ = notifier.Ready()
				_ = notifier.Status("running; MQTT broker not reachable yet")
				notified = true
			}
		case <-ctx.Done():
			break wait
		case err := <-engDone:
			engDone <- err
			break wait
		}
	}

	_ = notifier.Stopping()
	stopWatchdog()
	stopEngine()
	if err := <-engDone; err != nil {
		log.Error("engine stopped", "err", err)
		fmt.Fprintf(stderr, "kioskpayd: engine: %v\n", err)
		code = exitFatal
	}
	closeUnlock()
	stopLink()
	<-linkDone
	stopDisplay()
	<-dispDone
	if err := db.Close(); err != nil {
		log.Error("close store", "err", err)
		code = exitFatal
	}
	log.Info("kioskpayd stopped", "exit", code)
	return code
}

// waitWebAddr returns the web display's bound address, waiting briefly for
// the output to start listening.
func waitWebAddr(ctx context.Context, d *display.Display, cfg *config.Config) string {
	hasWeb := false
	for _, o := range cfg.Display.Outputs {
		hasWeb = hasWeb || o == config.OutputWeb
	}
	if !hasWeb {
		return ""
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if a := d.WebAddr(); a != "" {
			return a
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d.WebAddr()
}

// engineLink adapts *device.Engine to link.Engine: the link hands over
// batches (AcceptAll); everything else is the engine's own method.
type engineLink struct{ *device.Engine }

func (a engineLink) Accept(ctx context.Context, msgs []contract.Inbound) error {
	return a.AcceptAll(ctx, msgs)
}

// providerNames lists the providers of a merchant map, for logs.
func providerNames(m map[string]map[payment.ProviderName]payment.Provider) []string {
	var out []string
	for pid, ps := range m {
		for name := range ps {
			out = append(out, pid+"/"+string(name))
		}
	}
	sort.Strings(out)
	return out
}
