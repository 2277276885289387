package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/device/fleetsim"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
)

// The fleet part: how long kioskctl takes to list a whole fleet from the
// retained statuses, and whether the listing is complete, with the per-
// client limits deploy/mosquitto ships. fleetsim publishes the fleet (and
// connects -fleet-online devices with Last Wills); the kioskctl binary is
// timed from start to exit, as a script sees it.

// FleetRun is one fleet size on one broker.
type FleetRun struct {
	// Config is "deploy" (deploy/mosquitto's limits), "old" (the limits
	// before the fleet listing was measured) or "given" (-fleet-broker).
	Config  string   `json:"config"`
	Broker  string   `json:"broker"`
	Limits  []string `json:"broker_limits,omitempty"`
	Devices int      `json:"devices"`
	Online  int      `json:"online"`
	// PublishMS: fleetsim published every status and connected the
	// online devices.
	PublishMS float64 `json:"publish_ms"`
	// Status: kioskctl -o json status, one entry per run.
	Status []FleetListing `json:"status"`
	// Watch: kioskctl -o json watch -status, until it says the retained
	// statuses are all in.
	Watch *FleetListing `json:"watch,omitempty"`
	// SlowLink: kioskctl -o json status through a link of SlowLinkRate
	// bytes per second towards kioskctl (an operator on a VPN, a loaded
	// machine): the broker has to queue.
	SlowLink     *FleetListing `json:"slow_link,omitempty"`
	SlowLinkRate int           `json:"slow_link_bytes_per_sec,omitempty"`
}

// FleetListing is one timed listing.
type FleetListing struct {
	MS       float64 `json:"ms"`
	Listed   int     `json:"listed"` // distinct devices printed
	Exit     int     `json:"exit"`
	Complete bool    `json:"complete"` // kioskctl said the listing is complete
	MaxRSS   int64   `json:"max_rss_bytes,omitempty"`
	Note     string  `json:"note,omitempty"` // what kioskctl said when incomplete
}

// legacyLimits are deploy/mosquitto's limits before the fleet listing was
// measured: a count limit on every client's queue.
var legacyLimits = []string{"max_inflight_messages 10", "max_queued_messages 100", "max_packet_size 262144", "set_tcp_nodelay true"}

func (b *bench) measureFleet(ctx context.Context, rep *Report) error {
	ctl := filepath.Join(b.dir, "kioskctl")
	if err := testrig.Build(ctx, "./cmd/kioskctl", ctl, "CGO_ENABLED=0"); err != nil {
		return err
	}
	if b.o.fleetBroker != "" {
		urls, err := brokerurl.Split(b.o.fleetBroker)
		if err != nil {
			return fmt.Errorf("-fleet-broker: %w", err)
		}
		for _, n := range b.o.fleetSizes {
			run, err := b.fleetRun(ctx, ctl, urls, "given", "given by -fleet-broker", nil, n)
			if err != nil {
				return err
			}
			rep.Fleet = append(rep.Fleet, run)
		}
		return nil
	}
	limits, err := testrig.DeployBrokerLimits(ctx)
	if err != nil {
		return err
	}
	type config struct {
		key, name string
		limits    []string
		sizes     []int
	}
	configs := []config{{"deploy", "mosquitto, " + testrig.DeployConf + " limits, plain listener", limits, b.o.fleetSizes}}
	if b.o.fleetLegacy && len(b.o.fleetSizes) > 0 {
		configs = append(configs, config{"old", "mosquitto, the old limits (max_queued_messages 100), plain listener", legacyLimits, b.o.fleetSizes[len(b.o.fleetSizes)-1:]})
	}
	var incomplete []error
	for _, c := range configs {
		for _, n := range c.sizes {
			// A fresh broker per run: nothing retained from the last.
			m, err := testrig.StartMosquitto(ctx, filepath.Join(b.dir, fmt.Sprintf("fleet-mosquitto-%d-%d", n, len(rep.Fleet))), c.limits...)
			if err != nil {
				return err
			}
			run, err := b.fleetRun(ctx, ctl, []string{m.URL}, c.key, c.name, c.limits, n)
			m.Stop()
			if err != nil {
				return err
			}
			rep.Fleet = append(rep.Fleet, run)
			// With the shipped limits every listing must be complete; the
			// old limits are there to show an incomplete one reported.
			if c.key == "deploy" {
				for _, l := range run.listings() {
					if !l.Complete || l.Listed != n {
						incomplete = append(incomplete, fmt.Errorf("%d devices with %s: a listing was incomplete (%d listed, exit %d): %s", n, testrig.DeployConf, l.Listed, l.Exit, l.Note))
					}
				}
			}
		}
	}
	return errors.Join(incomplete...)
}

// listings are every kioskctl listing of the run.
func (f FleetRun) listings() []FleetListing {
	ls := append([]FleetListing(nil), f.Status...)
	for _, l := range []*FleetListing{f.Watch, f.SlowLink} {
		if l != nil {
			ls = append(ls, *l)
		}
	}
	return ls
}

// fleetRun publishes a fleet of n devices, then times kioskctl status
// (-fleet-runs times) and kioskctl watch -status once.
func (b *bench) fleetRun(ctx context.Context, ctl string, urls []string, config, broker string, limits []string, n int) (FleetRun, error) {
	prefix := fmt.Sprintf("bench%d", time.Now().UnixNano()%1e6)
	online := min(b.o.fleetOnline, n)
	run := FleetRun{Config: config, Broker: broker, Limits: limits, Devices: n, Online: online}
	b.log.Info("fleet: publishing", "devices", n, "online", online, "broker", broker)
	start := time.Now()
	f, err := fleetsim.Start(ctx, fleetsim.Options{
		Conn: fleetsim.Conn{Brokers: urls}, Prefix: prefix, Devices: n, Online: online,
		Versions: []string{"1.2.3", "1.3.0"},
	})
	if err != nil {
		return run, err
	}
	run.PublishMS = ms(time.Since(start))
	defer f.Close(context.WithoutCancel(ctx), true)
	args := []string{"-broker", strings.Join(urls, ","), "-prefix", prefix}
	for i := 0; i < b.o.fleetRuns; i++ {
		l, err := timeStatus(ctx, ctl, args)
		if err != nil {
			return run, err
		}
		b.log.Info("fleet: status", "devices", n, "listed", l.Listed, "ms", l.MS, "complete", l.Complete)
		run.Status = append(run.Status, l)
	}
	w, err := timeWatch(ctx, ctl, args, n)
	if err != nil {
		return run, err
	}
	b.log.Info("fleet: watch -status", "devices", n, "listed", w.Listed, "ms", w.MS, "complete", w.Complete)
	run.Watch = &w
	if b.o.fleetSlowLink > 0 && len(urls) == 1 {
		addr, stop, err := slowLink(strings.TrimPrefix(urls[0], "tcp://"), b.o.fleetSlowLink)
		if err != nil {
			return run, err
		}
		l, err := timeStatus(ctx, ctl, []string{"-broker", "tcp://" + addr, "-prefix", prefix, "-timeout", "30s"})
		stop()
		if err != nil {
			return run, err
		}
		b.log.Info("fleet: status over a slow link", "devices", n, "listed", l.Listed, "ms", l.MS, "complete", l.Complete)
		run.SlowLink, run.SlowLinkRate = &l, b.o.fleetSlowLink
	}
	return run, nil
}

// slowLink forwards loopback connections to target, at most rate bytes a
// second in the broker → client direction.
func slowLink(target string, rate int) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { throttle(c, up, rate); c.Close() }()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}, nil
}

// throttle copies src to dst at most rate bytes a second.
func throttle(dst io.Writer, src io.Reader, rate int) {
	buf := make([]byte, max(rate/100, 1024))
	start, sent := time.Now(), 0
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += n
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		if err != nil {
			return
		}
	}
}

// timeStatus runs kioskctl -o json status and checks what it printed.
func timeStatus(ctx context.Context, ctl string, args []string) (FleetListing, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ctl, append(args, "-o", "json", "status")...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	l := FleetListing{MS: ms(time.Since(start)), Exit: cmd.ProcessState.ExitCode()}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return l, err
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		l.MaxRSS = ru.Maxrss << 10
	}
	seen := map[string]bool{}
	var last []byte
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var row struct {
			Device string `json:"device"`
		}
		if json.Unmarshal(sc.Bytes(), &row) == nil && row.Device != "" {
			seen[row.Device] = true
		}
		last = append(last[:0], sc.Bytes()...)
	}
	var totals struct {
		Totals struct {
			Devices  int  `json:"devices"`
			Complete bool `json:"complete"`
		} `json:"totals"`
	}
	if err := json.Unmarshal(last, &totals); err != nil {
		return l, fmt.Errorf("kioskctl status: no totals line (exit %d): %s", l.Exit, lastLine(stderr.String()))
	}
	l.Listed = len(seen)
	l.Complete = l.Exit == 0 && totals.Totals.Complete && totals.Totals.Devices == l.Listed
	if !l.Complete {
		l.Note = lastLine(stderr.String())
	}
	return l, nil
}

// timeWatch runs kioskctl -o json watch -status until it says the retained
// statuses are all in (or that they may not be), then interrupts it.
func timeWatch(ctx context.Context, ctl string, args []string, n int) (FleetListing, error) {
	cmd := exec.CommandContext(ctx, ctl, append(args, "-o", "json", "watch", "-status")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return FleetListing{}, err
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return FleetListing{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return FleetListing{}, err
	}
	lines := make(chan int, 1)
	go func() {
		seen := map[string]bool{}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var l struct {
				Device string `json:"device"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				seen[l.Device] = true
			}
		}
		lines <- len(seen)
	}()
	var l FleetListing
	sc := bufio.NewScanner(errPipe)
	deadline := time.AfterFunc(5*time.Minute, func() { _ = cmd.Process.Signal(os.Interrupt) })
	defer deadline.Stop()
	for sc.Scan() {
		t := sc.Text()
		if strings.HasPrefix(t, "end of retained status:") {
			l.MS, l.Complete = ms(time.Since(start)), true
			break
		}
		if strings.Contains(t, "may be incomplete") {
			l.MS, l.Note = ms(time.Since(start)), t
			break
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	drained := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, errPipe); close(drained) }()
	l.Listed = <-lines
	<-drained
	_ = cmd.Wait()
	l.Exit = cmd.ProcessState.ExitCode()
	if l.Complete && (l.Exit != 0 || l.Listed != n) {
		l.Complete = false
		l.Note = fmt.Sprintf("exit %d, %d devices printed", l.Exit, l.Listed)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		l.MaxRSS = ru.Maxrss << 10
	}
	return l, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// fleetStats is the median and the slowest of the status runs.
func fleetStats(ls []FleetListing) (median, slowest float64) {
	if len(ls) == 0 {
		return 0, 0
	}
	d := make([]float64, len(ls))
	for i, l := range ls {
		d[i] = l.MS
	}
	sort.Float64s(d)
	return d[len(d)/2], d[len(d)-1]
}
