// Command kioskbench measures what kioskpayd costs to run, everything side
// by side in one run on this machine, and prints a table and JSON:
//
//   - create latency p50/p99 (publish → reply) and, in the same run, the
//     floor of that path: one bbolt commit + the RSA signing and verifying
//   - the QR encode + one MQTT round trip, with the ratio;
//   - payment detection latency p50/p99 (simulated payment → result) with
//     polling and with notifications through notifyrelay;
//   - provider calls per order: paid after 10 s, and unpaid until expiry;
//   - daemon RSS idle and peak, wake-ups per second when idle;
//   - sustained orders per second with many devices on one broker;
//   - the gateway shape (payment.backend = "gateway"): create and
//     detection latency through paygate, and provider requests per second
//     one paygate replica serves;
//   - binary sizes per architecture;
//   - what a long order history costs (10,000 to 1,000,000 finished orders
//     written through the store's API, then the daemon started on them):
//     startup, first create, creates while retention deletes, RSS, bytes
//     per order;
//   - how long kioskctl takes to list a fleet of 10,000 and 100,000
//     simulated devices (fleetsim) from their retained statuses, and
//     whether the listing is complete, with deploy/mosquitto's limits.
//
// It runs the real daemon binary as subprocesses against a private
// Mosquitto (started on a free port) and paysim over real HTTP:
//
//	go run ./cmd/kioskbench                  # everything, about 6 minutes
//	go run ./cmd/kioskbench -skip sizes,throughput -json out.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

const help = `kioskbench measures what kioskpayd costs to run (latency, provider calls, memory,
wake-ups, throughput, binary sizes, order history, fleet listing) against a private Mosquitto and paysim.

Usage:
  kioskbench [flags]          everything, about 6 minutes
  kioskbench -skip sizes,throughput -json out.json

Flags:
%s
Exit codes: 0 measured, 1 a measurement failed, 2 bad usage.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command's flags.
type options struct {
	creates   int
	detects   int
	devices   int
	window    time.Duration
	warmup    time.Duration
	idleFor   time.Duration
	arches    string
	skip      map[string]bool
	jsonPath  string
	keep      string
	provider  string
	poll      string
	nodelay   bool
	commandLn string

	fleetSizes  []int
	fleetOnline int
	fleetRuns   int
	fleetBroker string
	fleetLegacy bool
	// fleetSlowLink is the bytes per second of one more status run
	// through a throttled link (0: none).
	fleetSlowLink int

	historySizes []int
	historyKeys  []string
	historyHour  int
}

// run is main without the process; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kioskbench", flag.ContinueOnError)
	var o options
	var skip string
	fs.IntVar(&o.creates, "n", 200, "creates to time (and floor samples)")
	fs.IntVar(&o.detects, "detect-n", 40, "payments to time per detection mode")
	fs.IntVar(&o.devices, "devices", 100, "daemons on one broker for the throughput run")
	fs.DurationVar(&o.window, "window", 30*time.Second, "throughput measuring window")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "throughput warm-up before the window")
	fs.DurationVar(&o.idleFor, "idle", 20*time.Second, "how long to count wake-ups of an idle daemon")
	fs.StringVar(&o.arches, "arches", "amd64,arm64,arm/7,arm/6,386,riscv64,mipsle", "GOARCH[/GOARM] list for binary sizes")
	fs.StringVar(&skip, "skip", "", "comma-separated parts to skip: floor,create,detect,calls,idle,throughput,gateway,sizes,history,fleet")
	fs.StringVar(&o.jsonPath, "json", "", "also write the JSON report to this file")
	fs.StringVar(&o.keep, "keep", "", "work directory to keep (logs, configs); default a temporary one, removed")
	fs.StringVar(&o.provider, "provider", "wxpay", "provider for the timed orders (wxpay, alipay, any)")
	fs.StringVar(&o.poll, "poll", "", "payment.poll for the daemons (default: the value paysim's config ships, 2s)")
	fs.BoolVar(&o.nodelay, "broker-nodelay", true, "run Mosquitto with set_tcp_nodelay true, as deploy/mosquitto does (false: Mosquitto's default, Nagle's algorithm on)")
	var history, historyKeys string
	fs.StringVar(&history, "history-orders", "10000,100000,1000000", "finished orders in the store for the history part, comma-separated sizes")
	fs.StringVar(&historyKeys, "history-keys", "sequential,random", "out_trade_no of the history: sequential, random, or both")
	fs.IntVar(&o.historyHour, "history-hour", 60, "paid orders of the hour-equivalent of work before the history part reads the RSS")
	var fleet string
	fs.StringVar(&fleet, "fleet", "10000,100000", "fleet sizes (devices) for the fleet listing part, comma-separated")
	fs.IntVar(&o.fleetOnline, "fleet-online", 1000, "devices of each fleet connected for real, with Last Wills (a few thousand at most on one machine)")
	fs.IntVar(&o.fleetRuns, "fleet-runs", 3, "kioskctl status runs per fleet size")
	fs.StringVar(&o.fleetBroker, "fleet-broker", "", "list the fleet on this broker (URL, or cluster nodes separated by commas) instead of a private Mosquitto with deploy/mosquitto's limits")
	fs.BoolVar(&o.fleetLegacy, "fleet-legacy", true, "also list the largest fleet on a Mosquitto with the old limits (max_queued_messages 100), to show how kioskctl reports a cut listing")
	fs.IntVar(&o.fleetSlowLink, "fleet-slow-link", 1<<20, "also list each fleet through a link this many bytes/s towards kioskctl, so the broker has to queue (0: skip)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if code, done := cli.Parse(fs, args, fmt.Sprintf(help, cli.Flags(fs)), false, stdout, stderr); done {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, "kioskbench", cli.Version(version))
		return cli.ExitOK
	}
	var ok bool
	if o.fleetSizes, ok = counts(stderr, "fleet", fleet, "device"); !ok {
		return cli.ExitUsage
	}
	if o.historySizes, ok = counts(stderr, "history-orders", history, "order"); !ok {
		return cli.ExitUsage
	}
	for _, k := range strings.Split(historyKeys, ",") {
		switch k = strings.TrimSpace(k); k {
		case "sequential", "random":
			o.historyKeys = append(o.historyKeys, k)
		case "":
		default:
			fmt.Fprintf(stderr, "kioskbench: -history-keys %q: want sequential, random or both\n", historyKeys)
			return cli.ExitUsage
		}
	}
	if o.fleetRuns < 1 {
		fmt.Fprintf(stderr, "kioskbench: -fleet-runs %d: want at least 1\n", o.fleetRuns)
		return cli.ExitUsage
	}
	if err := runBench(ctx, o, skip, args, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "kioskbench:", err)
		return 1
	}
	return cli.ExitOK
}

// counts parses a comma-separated list of sizes given to flag name.
func counts(stderr io.Writer, name, list, what string) ([]int, bool) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "kioskbench: -%s %q: want %s counts such as 10000,100000\n", name, list, what)
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

// runBench runs the benchmark with parsed options.
func runBench(ctx context.Context, o options, skip string, args []string, stdout, stderr io.Writer) error {
	o.skip = map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.skip[s] = true
		}
	}
	o.commandLn = "kioskbench " + strings.Join(args, " ")

	dir := o.keep
	if dir == "" {
		d, err := os.MkdirTemp("", "kioskbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	dir, _ = filepath.Abs(dir)
	log := slog.New(slog.NewTextHandler(stderr, nil))
	b := &bench{o: o, dir: dir, log: log}
	rep, err := b.run(ctx)
	if rep != nil {
		rep.WriteTable(stdout)
		js, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintf(stdout, "\n%s\n", js)
		if o.jsonPath != "" {
			if werr := os.WriteFile(o.jsonPath, append(js, '\n'), 0o644); werr != nil && err == nil {
				err = werr
			}
		}
		if err == nil && len(rep.Errors) > 0 {
			// A part that failed is not a figure: say so in the exit code
			// too, so CI notices.
			err = fmt.Errorf("%d part(s) failed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
		}
	}
	return err
}
