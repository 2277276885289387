//go:build linux

package proof

// The crash harness for driver = "gpio". The whole stack runs inside the
// emulated arm64 machine that device/unlock/gpio's TestQEMUGPIO boots (see
// internal/qemuvm): this package's test binary is the guest's /init and
// brings up the loopback interface, an in-process MQTT broker, paysim and
// the controller; the real kioskpayd binary, cross-compiled and packed into
// the initramfs beside it, drives the kernel's pl061 driver through
// /dev/gpiochip0. The guest pays orders, SIGKILLs the daemon while the
// relay is on or the pulse train runs, does what the packaged unit does
// after any exit (`kioskpayd unlock-safe`, ExecStopPost=) and starts it
// again. The host reads qemu's trace of the PL061: the outside view of
// every level the kernel drove, with timestamps.
//
// PL061 lines: 0 pulse train, 2 relay, 5 relay with a busy input nobody
// drives (line 3, qemu's power button, never pressed: every order is
// refunded), 7 the round marker the guest toggles before each round and
// once at the end, so the host can tell the rounds apart in the trace.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warthog618/go-gpiocdev"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/qemuvm"
	"github.com/kioskpay/kioskpay/internal/testrig"
)

const (
	gpioGuestEnv   = "KIOSKPAY_GPIO_CRASH_GUEST" // set inside the VM
	gpioRoundsEnv  = "KIOSKPAY_GPIO_CRASH_ROUNDS"
	gpioRoundMark  = "KPROUND "
	gpioChip       = "gpiochip0"
	gpioMarkerLine = 7
	gpioBusyLine   = 3
	gpioGuestBin   = "/kioskpayd" // in the initramfs
	gpioFee        = 100
)

// gpioCrashMode is one daemon configuration and what its orders must end as.
type gpioCrashMode struct {
	Name string
	Line int
	// Relay: paid time and checkpoint; with BusyTimeout the busy input
	// (never driven) decides. Pulse: Pulses of Width with Gap.
	RelayPaid   time.Duration
	Checkpoint  time.Duration
	BusyTimeout time.Duration
	Pulses      int
	Width, Gap  time.Duration
	Want        string        // the order's final state
	Window      time.Duration // the kill falls within this of the output first going active
}

var gpioCrashModes = []gpioCrashMode{
	// 4 s paid with 1 s checkpoints: a kill in the first 2 s leaves time
	// to resume, a later one has already committed all of it.
	{Name: "relay", Line: 2, RelayPaid: 4 * time.Second, Checkpoint: time.Second, Want: "delivered", Window: 4 * time.Second},
	{Name: "pulse", Line: 0, Pulses: 12, Width: 50 * time.Millisecond, Gap: 50 * time.Millisecond, Want: "delivered", Window: 1200 * time.Millisecond},
	{Name: "busy", Line: 5, RelayPaid: 4 * time.Second, Checkpoint: time.Second, BusyTimeout: 1500 * time.Millisecond, Want: "refunded", Window: 1500 * time.Millisecond},
}

// Tolerances of the outside view. A relay's last activation ends on a
// timer that the emulated CPU (TCG on a shared 2-core host) may serve
// late. After a SIGKILL the kernel keeps the relay on until unlock-safe
// has run (up to 2 s here: exec of a 12 MiB binary under TCG; on a board,
// how soon the service manager runs ExecStopPost=). The relay time
// committed ahead (one to two checkpoints) usually covers it, but not when
// the kill falls in the last second of the paid time, so the guest
// measures each kill's SIGKILL → unlock-safe time and the host allows it:
// the driver's own share never exceeds the paid time.
const (
	gpioTolLate  = 400 * time.Millisecond
	gpioTolEarly = 3 * time.Millisecond
)

func (m gpioCrashMode) overrides() map[string]any {
	o := map[string]any{
		"unlock.driver":      "gpio",
		"unlock.gpio.chip":   gpioChip,
		"unlock.gpio.output": m.Line,
	}
	if m.Pulses > 0 {
		o["unlock.gpio.mode"] = "pulse"
		o["unlock.gpio.pulse.counts"] = map[string]any{"proof": m.Pulses}
		o["unlock.gpio.pulse.width"] = m.Width.String()
		o["unlock.gpio.pulse.gap"] = m.Gap.String()
		return o
	}
	o["unlock.gpio.mode"] = "relay"
	o["unlock.gpio.relay.durations"] = map[string]any{"proof": m.RelayPaid.String()}
	o["unlock.gpio.relay.checkpoint"] = m.Checkpoint.String()
	if m.BusyTimeout > 0 {
		o["unlock.gpio.relay.busy_line"] = gpioBusyLine
		o["unlock.gpio.relay.busy_timeout"] = m.BusyTimeout.String()
	}
	return o
}

// gpioRound is what the guest tells the host about one round.
type gpioRound struct {
	Mode     string  `json:"mode"`
	Round    int     `json:"round"` // counts the markers, from 0
	OTN      string  `json:"otn"`
	State    string  `json:"state"`
	Refunded int64   `json:"refunded"`
	Kills    int     `json:"kills"`
	KillMS   []int64 `json:"kill_ms"` // after the output was first seen active
	SafeMS   []int64 `json:"safe_ms"` // SIGKILL → unlock-safe done
}

// TestGuestGPIOCrash is the guest's side of TestGPIOCrash.
func TestGuestGPIOCrash(t *testing.T) {
	if os.Getenv(gpioGuestEnv) == "" {
		t.Skip("runs inside the qemu guest started by TestGPIOCrash")
	}
	rounds := envInt(gpioRoundsEnv, 6)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seed := uint64(envInt("KIOSKPAY_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 16))

	marker, err := gpiocdev.RequestLine(gpioChip, gpioMarkerLine, gpiocdev.AsOutput(0), gpiocdev.WithConsumer("round-marker"))
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close()
	markers := 0
	mark := func() {
		marker.SetValue(1)
		marker.SetValue(0)
		markers++
	}
	broker := mqtttest.Broker(t)
	start := time.Now()
	for _, m := range gpioCrashModes {
		t.Run(m.Name, func(t *testing.T) {
			u := newUnlockWorld(t, ctx, testrig.RigOptions{BrokerURL: broker, Bin: gpioGuestBin}, m.overrides())
			t.Cleanup(func() {
				if t.Failed() {
					b, _ := os.ReadFile(u.d.Log)
					fmt.Printf("daemon log (tail):\n%s\n", tail(string(b), 6000))
				}
			})
			for range rounds {
				mark()
				r := gpioCrashRound(t, u, m, rnd)
				r.Round = markers - 1
				b, _ := json.Marshal(r)
				fmt.Printf("%s%s\n", gpioRoundMark, b)
			}
		})
	}
	mark() // after the last daemon's clean stop
	t.Logf("%d rounds in %s", markers-1, time.Since(start).Round(time.Millisecond))
}

// gpioCrashRound pays one order, kills the daemon at a random moment of the
// action, runs unlock-safe, restarts the daemon and waits for the outcome.
func gpioCrashRound(t *testing.T, u *unlockWorld, m gpioCrashMode, rnd *rand.Rand) gpioRound {
	t.Helper()
	r := gpioRound{Mode: m.Name, OTN: newOTN()}
	u.createPay(r.OTN, gpioFee)
	// One kill, or two in half the rounds: the second during the resumed
	// action, when there is one.
	kills := 1 + rnd.IntN(2)
	for k := range kills {
		if !waitActive(t, u, r.OTN, m.Line) {
			if k == 0 {
				t.Fatalf("%s settled before its output went active (log %s)", r.OTN, u.d.Log)
			}
			break
		}
		// The delay picks the moment of the kill; it synchronises nothing.
		delay := time.Duration(rnd.Int64N(int64(m.Window)))
		time.Sleep(delay)
		killed := time.Now()
		if err := u.d.Kill(); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(u.rig.Bin, "unlock-safe", "-config", u.d.Config).CombinedOutput(); err != nil {
			t.Fatalf("unlock-safe: %v\n%s", err, out)
		}
		r.Kills++
		r.KillMS = append(r.KillMS, delay.Milliseconds())
		r.SafeMS = append(r.SafeMS, time.Since(killed).Milliseconds())
		u.start()
	}

	u.waitUntil(3*time.Minute, r.OTN+" settled", func() bool {
		r.State = u.state(r.OTN)
		return r.State == "delivered" || r.State == "refunded"
	})
	if r.State != m.Want {
		t.Errorf("%s: %s, want %s", r.OTN, r.State, m.Want)
	}
	if r.State == "refunded" {
		u.waitUntil(30*time.Second, "the refunded result", func() bool { return u.count(u.results, r.OTN, "refunded") >= 1 })
	}
	r.Refunded = u.refunded(r.OTN)
	switch {
	case r.State == "delivered" && r.Refunded != 0:
		t.Errorf("%s delivered and refunded %d", r.OTN, r.Refunded)
	case r.State == "refunded" && r.Refunded != gpioFee:
		t.Errorf("%s refunded %d of %d", r.OTN, r.Refunded, gpioFee)
	}
	if n := u.count(u.results, r.OTN, "refunded"); n > 1 {
		t.Errorf("%s: refunded result published %d times", r.OTN, n)
	}
	return r
}

var (
	debugChipRe = regexp.MustCompile(`(?m)^` + gpioChip + `: GPIOs (\d+)-`)
	debugLineRe = regexp.MustCompile(`(?m)^ gpio-(\d+) \(.*\) (in|out) (hi|lo)`)
)

// waitActive waits until the kernel shows line active (true) or the order
// has settled (false). The kernel's view of the line is the only sign of
// the action that is not the daemon's own word.
func waitActive(t *testing.T, u *unlockWorld, otn string, line int) bool {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; !outputHigh(t, line); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%s: output %d never went active (log %s)", otn, line, u.d.Log)
		}
		if i%40 == 39 {
			if st := u.state(otn); st == "delivered" || st == "refunded" {
				return false
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// outputHigh reads the kernel's debugfs view of the chip's requested lines
// (offset from the chip's base): whether line is an output at 1.
func outputHigh(t *testing.T, line int) bool {
	b, err := os.ReadFile("/sys/kernel/debug/gpio")
	if err != nil {
		t.Fatal(err)
	}
	m := debugChipRe.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in debugfs:\n%s", gpioChip, b)
	}
	base, _ := strconv.Atoi(string(m[1]))
	for _, l := range debugLineRe.FindAllSubmatch(b, -1) {
		if n, _ := strconv.Atoi(string(l[1])); n-base == line {
			return string(l[2]) == "out" && string(l[3]) == "hi"
		}
	}
	return false
}

// TestGPIOCrash is the crash harness for driver = "gpio" against a real
// kernel's GPIO character device: every round pays an order, SIGKILLs the
// daemon at a random moment while the relay is on or the train runs
// (KIOSKPAY_GPIO_CRASH_ROUNDS rounds per mode, default 6), then checks in
// the guest that the order was delivered or refunded (once, in full) and
// on the host, from qemu's PL061 trace, that no relay was on longer than
// paid, no train sent more pulses than paid, and every output was inactive
// at the end of its round.
func TestGPIOCrash(t *testing.T) {
	kernel := qemuvm.HostKernel(t, "boots an arm64 kernel under qemu and runs the daemon there for minutes")
	rounds := envInt(gpioRoundsEnv, 6)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	began := time.Now()
	guest, daemon := filepath.Join(dir, "guest.test"), filepath.Join(dir, "kioskpayd")
	if err := qemuvm.CompileTest(ctx, ".", guest); err != nil {
		t.Fatal(err)
	}
	if err := testrig.Build(ctx, "./cmd/kioskpayd", daemon, qemuvm.GuestGoEnv...); err != nil {
		t.Fatal(err)
	}
	initrd, err := qemuvm.Initramfs(dir, map[string]string{"init": guest, "kioskpayd": daemon})
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(began)

	booted := time.Now()
	vm, err := qemuvm.Start(ctx, qemuvm.Options{
		Kernel: kernel, Initrd: initrd, Dir: dir, Trace: "pl061_*", Memory: 1024,
		Append: fmt.Sprintf("quiet %s=1 %s=%d -- -test.v -test.count=1 -test.timeout=30m -test.run=^TestGuestGPIOCrash$", gpioGuestEnv, gpioRoundsEnv, rounds),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(); err != nil {
		t.Errorf("qemu: %v", err)
	}
	t.Logf("guest and daemon built in %s, VM ran %s", built.Round(time.Millisecond), time.Since(booted).Round(time.Millisecond))

	console, _ := os.ReadFile(vm.Console)
	if !strings.Contains(string(console), qemuvm.ExitMark+" 0") {
		t.Fatalf("guest tests did not pass; console:\n%s", tail(string(console), 12000))
	}
	var results []gpioRound
	for _, l := range strings.Split(string(console), "\n") {
		if strings.Contains(l, "--- PASS") || strings.Contains(l, "rounds in") {
			t.Logf("guest: %s", strings.TrimSpace(l))
		}
		if i := strings.Index(l, gpioRoundMark); i >= 0 {
			var r gpioRound
			if err := json.Unmarshal([]byte(strings.TrimSpace(l[i+len(gpioRoundMark):])), &r); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
			results = append(results, r)
		}
	}
	events, err := vm.Events()
	if err != nil {
		t.Fatal(err)
	}
	es := qemuvm.PL061Edges(events)
	var markers []time.Time
	for _, s := range qemuvm.Spans(es, gpioMarkerLine, 1) {
		markers = append(markers, s.From)
	}
	if want := len(gpioCrashModes) * rounds; len(results) != want || len(markers) != want+1 {
		t.Fatalf("%d round results and %d markers, want %d and %d", len(results), len(markers), want, want+1)
	}
	modes := map[string]gpioCrashMode{}
	for _, m := range gpioCrashModes {
		modes[m.Name] = m
	}
	type tally struct {
		kills, delivered, refunded, spans int
		maxOver, minTotal                 time.Duration // relay: total − paid, least total
		maxOverDriver                     time.Duration // total − paid − kill→unlock-safe time
		pulses, pulsesPaid                int
		maxSafe                           int64
	}
	tallies := map[string]*tally{}
	for _, r := range results {
		m := modes[r.Mode]
		tl := tallies[r.Mode]
		if tl == nil {
			tl = &tally{maxOver: -time.Hour, maxOverDriver: -time.Hour}
			tallies[r.Mode] = tl
		}
		tl.kills += r.Kills
		tl.delivered += b2i(r.State == "delivered")
		tl.refunded += b2i(r.State == "refunded")
		for _, s := range r.SafeMS {
			tl.maxSafe = max(tl.maxSafe, s)
		}
		from, to := markers[r.Round], markers[r.Round+1]
		var spans []qemuvm.Span
		for _, s := range qemuvm.Spans(es, m.Line, 1) {
			if !s.From.Before(from) && s.From.Before(to) {
				spans = append(spans, s)
				if s.To.After(to) {
					t.Errorf("round %d (%s): line %d still active at the next round", r.Round, r.OTN, m.Line)
				}
			}
		}
		if l := qemuvm.LevelAt(es, m.Line, to); l != 0 {
			t.Errorf("round %d (%s): line %d at level %d at the end of the round, want 0", r.Round, r.OTN, m.Line, l)
		}
		tl.spans += len(spans)
		what := fmt.Sprintf("round %d %s (%s, killed %v ms after the output went active)", r.Round, r.Mode, r.OTN, r.KillMS)
		if m.Pulses > 0 {
			// The pulse in flight at the kill counts as sent: each kill
			// may cost one pulse, none may add one.
			tl.pulses += len(spans)
			tl.pulsesPaid += m.Pulses
			if len(spans) > m.Pulses || len(spans) < m.Pulses-r.Kills {
				t.Errorf("%s: %d pulses, paid %d", what, len(spans), m.Pulses)
			}
			continue
		}
		var total time.Duration
		for k, s := range spans {
			total += s.Len()
			// The driver switches off at busy_timeout; the k-th kill fell
			// in the k-th activation, which then lasted until unlock-safe.
			limit := m.BusyTimeout + gpioTolLate
			if k < len(r.SafeMS) {
				limit += time.Duration(r.SafeMS[k]) * time.Millisecond
			}
			if m.BusyTimeout > 0 && s.Len() > limit {
				t.Errorf("%s: relay on %s without the busy input, busy_timeout %s", what, s.Len(), m.BusyTimeout)
			}
		}
		if len(spans) == 0 || len(spans) > r.Kills+1 {
			t.Errorf("%s: relay switched on %d times", what, len(spans))
		}
		// After a SIGKILL the kernel keeps the relay on until unlock-safe
		// runs: that time is the service manager's, not the driver's.
		var left time.Duration
		for _, ms := range r.SafeMS {
			left += time.Duration(ms) * time.Millisecond
		}
		if total > m.RelayPaid+left+gpioTolLate {
			t.Errorf("%s: relay on %s in total, paid %s, %s of it between a kill and unlock-safe at most", what, total, m.RelayPaid, left)
		}
		tl.maxOverDriver = max(tl.maxOverDriver, total-left-m.RelayPaid)
		// A crash costs the customer at most two checkpoints of relay
		// time (committed ahead); the busy mode ends early by design.
		if m.BusyTimeout == 0 && total < m.RelayPaid-time.Duration(2*r.Kills)*m.Checkpoint-gpioTolEarly {
			t.Errorf("%s: relay on %s in total, paid %s", what, total, m.RelayPaid)
		}
		t.Logf("%s: %d activations, %s in total of %s paid", what, len(spans), total.Round(time.Millisecond), m.RelayPaid)
		tl.maxOver = max(tl.maxOver, total-m.RelayPaid)
		if tl.minTotal == 0 || total < tl.minTotal {
			tl.minTotal = total
		}
	}
	end := events[len(events)-1].At.Add(time.Nanosecond)
	for _, m := range gpioCrashModes {
		if l := qemuvm.LevelAt(es, m.Line, end); l != 0 {
			t.Errorf("%s: line %d ends at level %d", m.Name, m.Line, l)
		}
		tl := tallies[m.Name]
		line := fmt.Sprintf("GPIOCRASH %s rounds=%d kills=%d delivered=%d refunded=%d activations=%d max_safe_ms=%d",
			m.Name, rounds, tl.kills, tl.delivered, tl.refunded, tl.spans, tl.maxSafe)
		if m.Pulses > 0 {
			line += fmt.Sprintf(" pulses=%d paid=%d", tl.pulses, tl.pulsesPaid)
		} else {
			line += fmt.Sprintf(" relay_total_min=%s max_over_paid=%s max_over_paid_by_driver=%s paid=%s", tl.minTotal.Round(time.Millisecond),
				tl.maxOver.Round(time.Millisecond), tl.maxOverDriver.Round(time.Millisecond), m.RelayPaid)
		}
		t.Logf("%s failed=%v", line, t.Failed())
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
