// Command fleetsim puts a simulated fleet of kioskpayd devices on an MQTT
// broker, so fleet tools and scripts can be tried and measured without a
// daemon per device: every device's retained status, a connected subset
// with Last Wills that answers create, query, cancel, refund, ack, orders,
// reconcile and notify like kioskpayd (package device/fleetsim says what is
// simulated), and the rest offline.
//
// It runs until interrupted, then disconnects cleanly and deletes the
// statuses it published (unless -keep). SIGKILL it to see the broker
// publish the connected devices' Last Wills.
//
// Usage:
//
//	fleetsim [-broker URL[,URL…]] [-devices N] [-online M] [flags]
//
// Exit codes: 0 stopped; 1 failure (broker unreachable, a device could not
// connect); 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/device/fleetsim"
	"github.com/kioskpay/kioskpay/device/link"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `fleetsim puts a simulated kioskpayd fleet on an MQTT broker.

Usage:

	fleetsim [-broker URL[,URL…]] [-devices N] [-online M] [flags]

Every device gets a retained status under <prefix>/<id>/status. The first
-online devices connect for real (one MQTT connection each, Last Will set)
and answer commands like kioskpayd; the others are offline. On a line of
its own on stdout it prints "ready" once everything is published; it runs
until interrupted, then disconnects and deletes the statuses (unless -keep).

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\nExit codes: 0 stopped, 1 failure, 2 bad usage.\n")
	}
	var (
		brokers      = fs.String("broker", "tcp://127.0.0.1:1883", "MQTT broker URL, or the nodes of a cluster separated by commas (tried in order)")
		prefix       = fs.String("prefix", "kiosk", "topic prefix (the devices' mqtt.topic_prefix)")
		username     = fs.String("username", "", "broker user name")
		passwordFile = fs.String("password-file", "", "file holding the broker password")
		caFile       = fs.String("ca-file", "", "CA bundle for the broker's certificate (ssl:// brokers)")
		certFile     = fs.String("cert-file", "", "client certificate for mutual TLS")
		keyFile      = fs.String("key-file", "", "client key for mutual TLS")
		devices      = fs.Int("devices", 1000, "devices in the fleet")
		online       = fs.Int("online", 100, "how many of them connect for real, with a Last Will (one connection each: loopback ports and file descriptors allow a few thousand)")
		idFormat     = fs.String("id-format", fleetsim.DefaultIDFormat, "device id from its number (Go fmt verb); two fleets on one broker need different ones")
		versions     = fs.String("versions", fleetsim.DefaultVersion, "versions the online devices report, handed out in turn (comma-separated)")
		payAfter     = fs.Duration("pay-after", 0, "pay every order this long after its create (0: orders stay pending until cancelled)")
		signKeyFile  = fs.String("sign-key-file", "", "HMAC key (unlock.result_key_file): require signed requests, sign results")
		keep         = fs.Bool("keep", false, "leave the retained statuses on the broker when stopping")
		showVersion  = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, "fleetsim", version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *devices < 0 || *online < 0 || *online > *devices {
		return fmt.Errorf("%w: want 0 <= -online (%d) <= -devices (%d)", errUsage, *online, *devices)
	}
	if strings.ContainsAny(*prefix, "+#") || *prefix == "" {
		return fmt.Errorf("%w: -prefix %q: want a topic prefix without wildcards", errUsage, *prefix)
	}
	if !strings.Contains(*idFormat, "%") {
		return fmt.Errorf("%w: -id-format %q has no verb for the device number (e.g. sim-%%06d)", errUsage, *idFormat)
	}
	urls, password, tc, err := link.ClientFlags{
		Brokers: *brokers, Username: *username, PasswordFile: *passwordFile,
		CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile,
	}.Resolve()
	var fe *link.FlagError
	if errors.As(err, &fe) {
		return fmt.Errorf("%w: %v", errUsage, fe)
	} else if err != nil {
		return err
	}
	conn := fleetsim.Conn{Brokers: urls, Username: *username, Password: password, TLS: tc, Logf: func(format string, args ...any) {
		fmt.Fprintf(stderr, "fleetsim: "+format+"\n", args...)
	}}
	var key []byte
	if *signKeyFile != "" {
		b, err := os.ReadFile(*signKeyFile)
		if err != nil {
			return fmt.Errorf("read -sign-key-file: %w", err)
		}
		if key = []byte(strings.TrimSpace(string(b))); len(key) == 0 {
			return fmt.Errorf("-sign-key-file %s is empty", *signKeyFile)
		}
	}

	start := time.Now()
	f, err := fleetsim.Start(ctx, fleetsim.Options{
		Conn: conn, Prefix: *prefix, Devices: *devices, Online: *online, IDFormat: *idFormat,
		Versions: splitList(*versions), Key: key, PayAfter: *payAfter, Progress: conn.Logf,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "fleetsim: %d devices under %s/ (%d online, %s … %s) in %s; Ctrl-C to stop\n",
		*devices, *prefix, *online, f.ID(0), f.ID(max(*devices-1, 0)), time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	fmt.Fprintln(stderr, "fleetsim: stopping")
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return f.Close(closeCtx, !*keep)
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
