// Command notifyrelay is the stateless cloud end of provider notifications:
// WeChat Pay and Alipay POST to https://<relay>/notify/<device_id>/<provider>,
// and the relay publishes the notification to <prefix>/<device_id>/pay/notify
// (package relay). Run as many replicas as needed behind a load balancer,
// each with its own -client-id; they share nothing.
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
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/internal/logging"
	"github.com/kioskpay/kioskpay/relay"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// Exit codes.
const (
	exitOK    = cli.ExitOK
	exitFatal = 1
	exitUsage = cli.ExitUsage
)

const help = `notifyrelay forwards WeChat Pay and Alipay payment notifications to kioskpayd devices over MQTT.

Usage:
  notifyrelay [flags]

Providers POST to /notify/<device_id>/<wxpay|alipay>; each notification is
published to <prefix>/<device_id>/pay/notify and answered only after the
broker acknowledged it. GET /healthz fails while the broker is unreachable.

Flags:
%s
Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 fatal error (cannot listen,
unreadable files), 2 bad usage.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// run parses flags, connects and serves until ctx ends, and returns the
// exit code. ready, when not nil, receives the listening address (for
// tests).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- string) int {
	fs := flag.NewFlagSet("notifyrelay", flag.ContinueOnError)
	host, _ := os.Hostname()
	var (
		listen         = fs.String("listen", ":8080", "HTTP listen address")
		httpCert       = fs.String("http-cert-file", "", "serve HTTPS with this certificate (else plain HTTP behind a TLS-terminating load balancer)")
		httpKey        = fs.String("http-key-file", "", "private key for -http-cert-file")
		prefix         = fs.String("prefix", contract.DefaultTopicPrefix, "MQTT topic prefix (the devices' mqtt.topic_prefix)")
		maxBody        = fs.Int64("max-body", relay.DefaultMaxBody, "largest notification body in bytes (larger → 413)")
		publishTimeout = fs.Duration("publish-timeout", relay.DefaultPublishTimeout, "how long to wait for the broker's PUBACK before failing the request")
		showVersion    = fs.Bool("version", false, "print the version and exit")
		logLevel       = fs.String("log-level", "info", "debug, info, warn or error")
		bc             relay.BrokerConfig
	)
	fs.StringVar(&bc.URL, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL (tcp:// ssl:// ws:// wss://), or the nodes of a cluster separated by commas (tried in order)")
	fs.StringVar(&bc.ClientID, "client-id", fmt.Sprintf("notifyrelay-%s-%d", host, os.Getpid()), "MQTT client id, unique per replica")
	fs.StringVar(&bc.Username, "username", "", "broker user name")
	fs.StringVar(&bc.PasswordFile, "password-file", "", "file holding the broker password")
	fs.StringVar(&bc.CAFile, "ca-file", "", "CA bundle for the broker's certificate")
	fs.StringVar(&bc.CertFile, "cert-file", "", "client certificate for mutual TLS")
	fs.StringVar(&bc.KeyFile, "key-file", "", "client key for mutual TLS")
	if code, done := cli.Parse(fs, args, fmt.Sprintf(help, cli.Flags(fs)), false, stdout, stderr); done {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, "notifyrelay", cli.Version(version))
		return exitOK
	}
	if (*httpCert == "") != (*httpKey == "") {
		return cli.Usagef(stderr, "notifyrelay", "-http-cert-file and -http-key-file go together")
	}
	level, err := logging.ParseLevel(*logLevel)
	if err != nil {
		return cli.Usagef(stderr, "notifyrelay", "-log-level: %v", err)
	}
	log := logging.New(stderr, level)
	fail := func(err error) int {
		fmt.Fprintln(stderr, "notifyrelay:", err)
		return exitFatal
	}

	pub, err := relay.Dial(bc, log)
	if err != nil {
		return fail(err)
	}
	defer pub.Close()

	r := &relay.Relay{Prefix: *prefix, Pub: pub, MaxBody: *maxBody, PublishTimeout: *publishTimeout, Logger: log}
	srv := &http.Server{
		Handler:           r.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(fmt.Errorf("listen %s: %w", *listen, err))
	}
	log.Info("notifyrelay serving", "listen", ln.Addr().String(), "broker", bc.URL, "client_id", bc.ClientID, "prefix", *prefix, "version", cli.Version(version))
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() {
		if *httpCert != "" {
			errc <- srv.ServeTLS(ln, *httpCert, *httpKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fail(fmt.Errorf("serve: %w", err))
	case <-ctx.Done():
	}
	// Finish requests in flight: each one's provider is waiting to hear
	// whether its notification made it to the broker.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *publishTimeout+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fail(fmt.Errorf("shutdown: %w", err))
	}
	log.Info("notifyrelay stopped")
	return exitOK
}
