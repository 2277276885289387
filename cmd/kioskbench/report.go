package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Report is everything one run measured. Durations are milliseconds,
// sizes bytes.
type Report struct {
	Command  string  `json:"command"`
	Started  string  `json:"started"`
	Finished string  `json:"finished"`
	Machine  Machine `json:"machine"`
	Provider string  `json:"provider"`
	Poll     string  `json:"poll"`
	// BrokerNoDelay: Mosquitto ran with set_tcp_nodelay true.
	BrokerNoDelay bool `json:"broker_tcp_nodelay"`

	Create Stat `json:"create_ms"`
	Floor  struct {
		Total Stat            `json:"total_ms"`
		Parts map[string]Stat `json:"parts_ms"`
	} `json:"floor"`
	RatioP50 float64 `json:"create_floor_ratio_p50"`
	RatioP99 float64 `json:"create_floor_ratio_p99"`

	DetectPoll  Stat `json:"detect_poll_ms"`
	DetectRelay Stat `json:"detect_relay_ms"`

	Calls struct {
		PaidAfter10sPoll  Calls `json:"paid_after_10s_poll"`
		PaidAfter10sRelay Calls `json:"paid_after_10s_relay"`
		UnpaidPoll        Calls `json:"unpaid_until_expiry_poll"`
		UnpaidRelay       Calls `json:"unpaid_until_expiry_relay"`
	} `json:"provider_calls_per_order"`

	Memory struct {
		IdleFresh     int64 `json:"idle_fresh_rss"`
		IdleAfterLoad int64 `json:"idle_after_load_rss"`
		Peak          int64 `json:"peak_rss"`
		// Anonymous (heap, stacks) vs file-backed (binary text, mmapped
		// bbolt file) parts of the idle RSS values.
		IdleFreshAnon     int64 `json:"idle_fresh_rss_anon"`
		IdleAfterLoadAnon int64 `json:"idle_after_load_rss_anon"`
	} `json:"memory_bytes"`
	// Wakeups when idle: context switches summed over every thread, and
	// wake-up events (bursts of switches after ≥ 50 ms of quiet).
	Wakeups struct {
		Fresh           float64 `json:"idle_fresh_switches_per_sec"`
		FreshEvents     float64 `json:"idle_fresh_events_per_sec"`
		AfterLoad       float64 `json:"idle_after_load_switches_per_sec"`
		AfterLoadEvents float64 `json:"idle_after_load_events_per_sec"`
		Seconds         float64 `json:"counted_over_sec"`
	} `json:"wakeups"`

	Throughput Throughput      `json:"throughput"`
	Gateway    *GatewayFigures `json:"gateway,omitempty"`
	Sizes      []Size          `json:"binary_sizes"`
	History    []HistoryRun    `json:"history,omitempty"`
	Fleet      []FleetRun      `json:"fleet,omitempty"`
	Goals      []Goal          `json:"goals"`
	Errors     []string        `json:"errors,omitempty"`
}

// Stat summarises latencies in milliseconds.
type Stat struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

func statOf(ds []time.Duration) Stat {
	if len(ds) == 0 {
		return Stat{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	q := func(p float64) float64 {
		// nearest rank
		i := int(p*float64(len(s)) + 0.999999)
		i = min(max(i, 1), len(s))
		return ms(s[i-1])
	}
	return Stat{N: len(s), P50: q(0.50), P99: q(0.99), Mean: ms(sum / time.Duration(len(s))), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Calls counts provider API calls for one order.
type Calls struct {
	Total   int            `json:"total"`
	ByAPI   map[string]int `json:"by_api"`
	Outcome string         `json:"outcome,omitempty"`
}

// Throughput is the many-devices run.
type Throughput struct {
	Devices       int     `json:"devices"`
	Window        float64 `json:"window_sec"`
	Completed     int     `json:"orders_completed"`
	Failed        int     `json:"orders_failed"`
	OrdersPerSec  float64 `json:"orders_per_sec"`
	Create        Stat    `json:"create_ms"`
	Detect        Stat    `json:"detect_ms"`
	CallsPerOrder float64 `json:"provider_calls_per_order"`
	RSSPerDaemon  int64   `json:"rss_per_daemon"`
}

// Size is one architecture's binary.
type Size struct {
	Arch     string `json:"arch"`
	Bytes    int64  `json:"bytes"`
	Stripped int64  `json:"stripped_bytes"`
}

// Goal is one target of the issue, met or missed by how much.
type Goal struct {
	Name     string  `json:"name"`
	Target   string  `json:"target"`
	Measured string  `json:"measured"`
	Met      bool    `json:"met"`
	Margin   float64 `json:"ratio_to_target"` // measured / target
}

// Machine describes where the figures come from.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryMB  int64  `json:"memory_mb"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Mosquitto string `json:"mosquitto"`
	FS        string `json:"state_fs"`
}

func machine(dir string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.MemoryMB = kb >> 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("mosquitto", "-h").CombinedOutput(); len(out) > 0 {
		_ = err // -h exits non-zero
		m.Mosquitto = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("stat", "-f", "-c", "%T", dir).Output(); err == nil {
		m.FS = strings.TrimSpace(string(out))
	}
	return m
}

// evaluate fills the ratios and the goals of the issue.
func (r *Report) evaluate() {
	for _, f := range r.Fleet {
		if f.Devices < 100000 || f.Config != "deploy" {
			continue
		}
		_, slow := fleetStats(f.Status)
		complete := true
		for _, l := range f.Status {
			complete = complete && l.Complete && l.Listed == f.Devices
		}
		name := fmt.Sprintf("%d devices listed completely ≤ 10 s", f.Devices)
		if !complete {
			r.Goals = append(r.Goals, Goal{Name: name, Target: "10 s", Measured: "listing incomplete", Met: false})
			continue
		}
		r.goal(name, 10, slow/1000, "%.1f s", "slowest of the runs")
	}
	for _, h := range r.History {
		if h.Orders < 1_000_000 || h.StartupMS == 0 {
			continue
		}
		at := fmt.Sprintf("%d orders, %s: ", h.Orders, h.Keys)
		r.goal(at+"first create ≤ 50 ms", 50, h.FirstCreateMS, "%.1f ms", "")
		if h.Without.N > 0 && h.DuringRetention.N > 0 {
			r.goal(at+"create p99 during retention ≤ 2× without", 2, h.DuringRetention.P99/h.Without.P99, "%.2f×",
				fmt.Sprintf("%.1f ms vs %.1f ms, n=%d", h.DuringRetention.P99, h.Without.P99, h.DuringRetention.N))
		}
		r.goal(at+"RSS ≤ 30 MB", 30, float64(h.RSS)/1e6, "%.1f MB", "")
		if h.Keys == "sequential" {
			r.goal(at+"≤ 1 KB per order", 1024, h.BytesPerOrder, "%.0f B", "")
		}
	}
	if r.Floor.Total.P99 > 0 && r.Create.N > 0 {
		r.RatioP50 = r.Create.P50 / r.Floor.Total.P50
		r.RatioP99 = r.Create.P99 / r.Floor.Total.P99
		r.goal("create p99 ≤ 2× floor p99", 2, r.RatioP99, "%.2f×", fmt.Sprintf("%.1f ms vs floor %.1f ms", r.Create.P99, r.Floor.Total.P99))
	}
	if r.DetectPoll.N > 0 {
		r.goal("detection p99 (poll) ≤ 1.5 s", 1500, r.DetectPoll.P99, "%.0f ms", "")
	}
	if r.DetectRelay.N > 0 {
		r.goal("detection p99 (relay) ≤ 150 ms", 150, r.DetectRelay.P99, "%.0f ms", "")
	}
	if r.Memory.IdleFresh > 0 {
		r.goal("RSS idle ≤ 20 MB", 20, float64(r.Memory.IdleFresh)/1e6, "%.1f MB", "")
	}
	if r.Wakeups.Seconds > 0 {
		r.goal("idle wake-ups ≤ 1/s", 1, r.Wakeups.FreshEvents, "%.2f/s", fmt.Sprintf("%.2f context switches/s", r.Wakeups.Fresh))
		if r.Wakeups.AfterLoad > 0 {
			r.goal("idle wake-ups after load ≤ 1/s", 1, r.Wakeups.AfterLoadEvents, "%.2f/s", fmt.Sprintf("%.2f context switches/s", r.Wakeups.AfterLoad))
		}
	}
}

func (r *Report) goal(name string, target, measured float64, format, extra string) {
	m := fmt.Sprintf(format, measured)
	if extra != "" {
		m += " (" + extra + ")"
	}
	r.Goals = append(r.Goals, Goal{Name: name, Target: fmt.Sprintf(format, target), Measured: m, Met: measured <= target, Margin: measured / target})
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	lat := func(name string, s Stat) {
		if s.N > 0 {
			p("  %-40s p50 %8.2f ms   p99 %8.2f ms   (n=%d, mean %.2f, max %.2f)", name, s.P50, s.P99, s.N, s.Mean, s.Max)
		}
	}
	p("kioskbench  %s", r.Command)
	p("machine     %s, %d cores, %d MB, Linux %s, %s, %s, state on %s", r.Machine.CPU, r.Machine.Cores, r.Machine.MemoryMB, r.Machine.Kernel, r.Machine.Go, r.Machine.Mosquitto, r.Machine.FS)
	p("orders      provider %s, payment.poll %s, mosquitto set_tcp_nodelay %v", r.Provider, r.Poll, r.BrokerNoDelay)
	p("")
	p("latency")
	lat("create (publish → reply)", r.Create)
	lat("floor (commit+sign+verify+QR+MQTT RTT)", r.Floor.Total)
	parts := make([]string, 0, len(r.Floor.Parts))
	for k := range r.Floor.Parts {
		parts = append(parts, k)
	}
	sort.Strings(parts)
	for _, k := range parts {
		lat("  floor: "+k, r.Floor.Parts[k])
	}
	if r.RatioP99 > 0 {
		p("  %-40s p50 %8.2f×    p99 %8.2f×", "create / floor", r.RatioP50, r.RatioP99)
	}
	lat("detection, polling (pay → result)", r.DetectPoll)
	lat("detection, notifyrelay (pay → result)", r.DetectRelay)
	p("")
	p("provider calls per order")
	for _, c := range []struct {
		name string
		c    Calls
	}{
		{"paid after 10 s, polling", r.Calls.PaidAfter10sPoll},
		{"paid after 10 s, relay", r.Calls.PaidAfter10sRelay},
		{"unpaid until expiry (60 s), polling", r.Calls.UnpaidPoll},
		{"unpaid until expiry (60 s), relay", r.Calls.UnpaidRelay},
	} {
		if c.c.ByAPI == nil {
			continue
		}
		keys := make([]string, 0, len(c.c.ByAPI))
		for k := range c.c.ByAPI {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var bs []string
		for _, k := range keys {
			bs = append(bs, fmt.Sprintf("%s=%d", k, c.c.ByAPI[k]))
		}
		p("  %-40s %3d   %s", c.name, c.c.Total, strings.Join(bs, " "))
	}
	p("")
	p("resources")
	if r.Memory.IdleFresh > 0 {
		p("  %-40s %s (anonymous %s, file-backed %s)", "RSS idle (fresh start)", mb(r.Memory.IdleFresh), mb(r.Memory.IdleFreshAnon), mb(r.Memory.IdleFresh-r.Memory.IdleFreshAnon))
	}
	if r.Memory.IdleAfterLoad > 0 {
		p("  %-40s %s (anonymous %s, file-backed %s)", "RSS idle (after the latency runs)", mb(r.Memory.IdleAfterLoad), mb(r.Memory.IdleAfterLoadAnon), mb(r.Memory.IdleAfterLoad-r.Memory.IdleAfterLoadAnon))
	}
	if r.Memory.Peak > 0 {
		p("  %-40s %s", "RSS peak (VmHWM over the latency runs)", mb(r.Memory.Peak))
	}
	if r.Wakeups.Seconds > 0 {
		p("  %-40s %.2f/s fresh, %.2f/s after load (over %.0f s)", "wake-up events when idle", r.Wakeups.FreshEvents, r.Wakeups.AfterLoadEvents, r.Wakeups.Seconds)
		p("  %-40s %.2f/s fresh, %.2f/s after load", "context switches when idle (all threads)", r.Wakeups.Fresh, r.Wakeups.AfterLoad)
	}
	if t := r.Throughput; t.Devices > 0 {
		p("")
		p("throughput: %d daemons on one broker, relay notifications, %.0f s window", t.Devices, t.Window)
		p("  %-40s %.1f orders/s (%d completed, %d failed)", "sustained create→pay→result→ack", t.OrdersPerSec, t.Completed, t.Failed)
		lat("create under load", t.Create)
		lat("detection under load", t.Detect)
		p("  %-40s %.1f", "provider calls per order", t.CallsPerOrder)
		p("  %-40s %s", "RSS per daemon at the end", mb(t.RSSPerDaemon))
	}
	if g := r.Gateway; g != nil {
		p("")
		p("gateway shape (payment.backend = \"gateway\", one paygate replica)")
		lat("create (publish → reply), via paygate", g.Create)
		lat("create, local keys (above)", r.Create)
		lat("detection, notified via paygate", g.Detect)
		lat("detection, notifyrelay (above)", r.DetectRelay)
		if g.Clients > 0 {
			p("  %-40s %.0f requests/s (%d devices at once, %d answered, %d failed, %.0f s)", "provider queries through one replica", g.RPS, g.Clients, g.Calls, g.Failed, g.Window)
		}
	}
	if len(r.Sizes) > 0 {
		p("")
		p("binary size (kioskpayd, CGO_ENABLED=0 -trimpath)")
		for _, s := range r.Sizes {
			p("  %-40s %s   stripped (-s -w) %s", s.Arch, mb(s.Bytes), mb(s.Stripped))
		}
	}
	if len(r.History) > 0 {
		p("")
		p("order history (finished orders written through the store's API, then the daemon started on them)")
		for _, h := range r.History {
			p("  %d orders, %s out_trade_no: %.0f bytes/order (%.1f MB of pages in use, %.1f MB file; written in %.1f s)",
				h.Orders, h.Keys, h.BytesPerOrder, float64(h.InUseBytes)/1e6, float64(h.FileBytes)/1e6, h.GenerateSec)
			p("    %-38s %.0f ms", "startup → ready (retained online)", h.StartupMS)
			p("    %-38s %.1f ms", "first create (retention running)", h.FirstCreateMS)
			lat("  create during retention", h.DuringRetention)
			lat("  create without retention", h.Without)
			p("    %-38s %d orders in %.2f s, longest batch %.1f ms", "retention", h.Pruned, h.RetentionSec, h.LongestBatchMS)
			p("    %-38s %s (anonymous %s), peak %s", fmt.Sprintf("RSS after the hour (%d paid orders)", h.HourOrders), mb(h.RSS), mb(h.RSSAnon), mb(h.Peak))
		}
	}
	if len(r.Fleet) > 0 {
		p("")
		p("fleet listing (kioskctl, from start to exit; fleetsim devices)")
		for _, f := range r.Fleet {
			med, slow := fleetStats(f.Status)
			p("  %d devices (%d online), %s", f.Devices, f.Online, f.Broker)
			p("    %-38s %.0f ms", "fleetsim publish + connect", f.PublishMS)
			for _, l := range f.Status {
				p("    %-38s %.0f ms, %d listed, exit %d, complete %v, RSS %s %s", "kioskctl -o json status", l.MS, l.Listed, l.Exit, l.Complete, mb(l.MaxRSS), l.Note)
			}
			p("    %-38s median %.0f ms, slowest %.0f ms", "", med, slow)
			if w := f.Watch; w != nil {
				p("    %-38s %.0f ms, %d listed, exit %d, complete %v %s", "kioskctl watch -status (retained)", w.MS, w.Listed, w.Exit, w.Complete, w.Note)
			}
			if l := f.SlowLink; l != nil {
				p("    %-38s %.0f ms, %d listed, exit %d, complete %v %s", fmt.Sprintf("status over a %.0f MB/s link", float64(f.SlowLinkRate)/(1<<20)), l.MS, l.Listed, l.Exit, l.Complete, l.Note)
			}
		}
	}
	if len(r.Goals) > 0 {
		p("")
		p("goals")
		for _, g := range r.Goals {
			mark := "met   "
			if !g.Met {
				mark = "MISSED"
			}
			p("  %s %-36s target %-8s measured %s", mark, g.Name, g.Target, g.Measured)
		}
	}
	for _, e := range r.Errors {
		p("ERROR %s", e)
	}
}
