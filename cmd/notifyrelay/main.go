// Command notifyrelay is the stateless cloud end of provider notifications:
// WeChat Pay and Alipay POST to https://<relay>/notify/<device_id>/<provider>,
// and the relay publishes {"provider","headers","body"} to
// <prefix>/<device_id>/pay/notify at QoS 1, answering the provider only after
// the broker acknowledged it. Run as many replicas as needed behind a load
// balancer, each with its own -client-id; they share nothing.
//
// The relay is untrusted by design: it never sees a key, and the daemon
// verifies every notification's signature itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "notifyrelay:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run parses flags, connects and serves until ctx ends. ready, when not
// nil, receives the listening address (for tests).
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("notifyrelay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	var (
		listen         = fs.String("listen", ":8080", "HTTP listen address")
		httpCert       = fs.String("http-cert-file", "", "serve HTTPS with this certificate (else plain HTTP behind a TLS-terminating load balancer)")
		httpKey        = fs.String("http-key-file", "", "private key for -http-cert-file")
		prefix         = fs.String("prefix", "kiosk", "MQTT topic prefix (the devices' mqtt.topic_prefix)")
		maxBody        = fs.Int64("max-body", DefaultMaxBody, "largest notification body in bytes (larger → 413)")
		publishTimeout = fs.Duration("publish-timeout", 5*time.Second, "how long to wait for the broker's PUBACK before failing the request")
		version        = fs.Bool("version", false, "print the version and exit")
		bc             BrokerConfig
	)
	fs.StringVar(&bc.URL, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL (tcp:// ssl:// ws:// wss://)")
	fs.StringVar(&bc.ClientID, "client-id", fmt.Sprintf("notifyrelay-%s-%d", host, os.Getpid()), "MQTT client id, unique per replica")
	fs.StringVar(&bc.Username, "username", "", "broker user name")
	fs.StringVar(&bc.PasswordFile, "password-file", "", "file holding the broker password")
	fs.StringVar(&bc.CAFile, "ca-file", "", "CA bundle for the broker's certificate")
	fs.StringVar(&bc.CertFile, "cert-file", "", "client certificate for mutual TLS")
	fs.StringVar(&bc.KeyFile, "key-file", "", "client key for mutual TLS")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if *version {
		fmt.Fprintln(stderr, "notifyrelay", version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if (*httpCert == "") != (*httpKey == "") {
		return fmt.Errorf("%w: -http-cert-file and -http-key-file go together", errUsage)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))

	pub, err := dialBroker(bc, log)
	if err != nil {
		return err
	}
	defer pub.Close()

	relay := &Relay{Prefix: *prefix, Pub: pub, MaxBody: *maxBody, PublishTimeout: *publishTimeout, Logger: log}
	srv := &http.Server{
		Handler:           relay.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	log.Info("notifyrelay serving", "listen", ln.Addr().String(), "broker", bc.URL, "client_id", bc.ClientID, "prefix", *prefix, "version", version)
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
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Finish requests in flight: each one's provider is waiting to hear
	// whether its notification made it to the broker.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *publishTimeout+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("notifyrelay stopped")
	return nil
}
