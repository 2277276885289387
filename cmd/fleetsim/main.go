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

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/fleetsim"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/mqttclient"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const help = `fleetsim puts a simulated kioskpayd fleet on an MQTT broker, for trying fleet tools.

Usage:
  fleetsim [-broker URL[,URL…]] [-devices N] [-online M] [flags]

Every device gets a retained status under <prefix>/<id>/status. The first
-online devices connect for real (one MQTT connection each, Last Will set)
and answer commands like kioskpayd; the others are offline. On a line of
its own on stdout it prints "ready" once everything is published; it runs
until interrupted, then disconnects and deletes the statuses (unless -keep).

Flags:
%s
Exit codes: 0 stopped, 1 failure (broker unreachable, a device could not connect), 2 bad usage.
`

// run is main without the process; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetsim", flag.ContinueOnError)
	var (
		brokers      = fs.String("broker", "tcp://127.0.0.1:1883", "MQTT broker URL, or the nodes of a cluster separated by commas (tried in order)")
		prefix       = fs.String("prefix", contract.DefaultTopicPrefix, "topic prefix (the devices' mqtt.topic_prefix)")
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
	if code, done := cli.Parse(fs, args, fmt.Sprintf(help, cli.Flags(fs)), false, stdout, stderr); done {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, "fleetsim", cli.Version(version))
		return cli.ExitOK
	}
	switch {
	case *devices < 0 || *online < 0 || *online > *devices:
		return cli.Usagef(stderr, "fleetsim", "want 0 <= -online (%d) <= -devices (%d)", *online, *devices)
	case strings.ContainsAny(*prefix, "+#") || *prefix == "":
		return cli.Usagef(stderr, "fleetsim", "-prefix %q: want a topic prefix without wildcards", *prefix)
	case !strings.Contains(*idFormat, "%"):
		return cli.Usagef(stderr, "fleetsim", "-id-format %q has no verb for the device number (e.g. sim-%%06d)", *idFormat)
	}
	urls, password, tc, err := mqttclient.ClientFlags{
		Brokers: *brokers, Username: *username, PasswordFile: *passwordFile,
		CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile,
	}.Resolve()
	var fe *mqttclient.FlagError
	if errors.As(err, &fe) {
		return cli.Usagef(stderr, "fleetsim", "%v", fe)
	}
	o := fleetsim.Options{
		Conn: fleetsim.Conn{Brokers: urls, Username: *username, Password: password, TLS: tc, Logf: func(format string, args ...any) {
			fmt.Fprintf(stderr, "fleetsim: "+format+"\n", args...)
		}},
		Prefix: *prefix, Devices: *devices, Online: *online, IDFormat: *idFormat,
		Versions: splitList(*versions), PayAfter: *payAfter,
	}
	if err == nil {
		o.Key, err = readKey(*signKeyFile)
	}
	if err == nil {
		err = serve(ctx, o, *keep, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "fleetsim:", err)
		return 1
	}
	return cli.ExitOK
}

// readKey reads the HMAC key of -sign-key-file ("" : none), trimmed like
// the daemon's.
func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read -sign-key-file: %w", err)
	}
	key := []byte(strings.TrimSpace(string(b)))
	if len(key) == 0 {
		return nil, fmt.Errorf("-sign-key-file %s is empty", path)
	}
	return key, nil
}

// serve publishes the fleet, says "ready" and keeps it until ctx ends.
func serve(ctx context.Context, o fleetsim.Options, keep bool, stdout, stderr io.Writer) error {
	o.Progress = o.Conn.Logf
	start := time.Now()
	f, err := fleetsim.Start(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "fleetsim: %d devices under %s/ (%d online, %s … %s) in %s; Ctrl-C to stop\n",
		o.Devices, o.Prefix, o.Online, f.ID(0), f.ID(max(o.Devices-1, 0)), time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	fmt.Fprintln(stderr, "fleetsim: stopping")
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return f.Close(closeCtx, !keep)
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
