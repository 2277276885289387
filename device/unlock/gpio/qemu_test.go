//go:build linux

package gpio

// The hardware test. TestQEMUGPIO (the host side) cross-compiles this
// package's test binary for arm64, boots it as /init of a Debian arm64
// kernel under qemu's "virt" board, and reads qemu's PL061 trace events: the
// emulated GPIO controller's own record of every level the kernel drove,
// with host timestamps. The TestGuest* tests run inside the guest against
// /dev/gpiochip0, the kernel's real pl061 driver and character device;
// they print their driver results as KPRESULT lines and the host checks
// them against the trace. Nothing in the driver is replaced.
//
// Wiring inside the emulated board (PL061 lines):
//
//	0 pulse train, active high        4 relay with busy input: ack
//	1 pulse train, active low         5 relay with busy input: timeout
//	2 relay, no busy input            6 relay, SIGKILL mid-action, resume
//	3 busy input: qemu's power button 7 pulse train, SIGKILL mid-train, resume
//
// The host presses the power button (QMP system_powerdown: line 3 high for
// 100 ms) pressDelay after it sees line 4 go active, and never for line 5.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warthog618/go-gpiocdev"

	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/gpio/gpioconf"
	"github.com/kioskpay/kioskpay/internal/qemuvm"
)

const (
	guestEnv = "KIOSKPAY_GPIO_GUEST" // set inside the VM
	childEnv = "KIOSKPAY_GPIO_CHILD" // set for the process the guest kills

	chip         = "gpiochip0"
	busyLine     = 3
	pressDelay   = 300 * time.Millisecond
	progressFile = "/tmp/progress.json"
	resultMark   = "KPRESULT "
)

// Scenario settings shared by guest and host.
var (
	pulseA    = gpioconf.Pulse{Counts: map[string]int{"wash_5": 5}, Width: 50 * time.Millisecond, Gap: 50 * time.Millisecond}
	pulseB    = gpioconf.Pulse{Counts: map[string]int{"coin_3": 3}, Width: 30 * time.Millisecond, Gap: 70 * time.Millisecond}
	pulseStop = gpioconf.Pulse{Counts: map[string]int{"wash_6": 6}, Width: 50 * time.Millisecond, Gap: 50 * time.Millisecond}
	pulseK    = gpioconf.Pulse{Counts: map[string]int{"wash_20": 20}, Width: 50 * time.Millisecond, Gap: 50 * time.Millisecond}

	relayPlain     = 2 * time.Second
	relayStopAfter = 700 * time.Millisecond
	relayAck       = 2 * time.Second
	relayTimeout   = 5 * time.Second
	busyTimeout    = time.Second
	relayKill      = 4 * time.Second
	checkpoint     = time.Second
	killAtPulse    = 8
	// The commit of pulse 8 is written at the start of the gap before it:
	// a kill this much later falls inside the pulse (gap 50 ms, width
	// 50 ms), leaving the line active for Safe to end.
	killPulseDelay = 75 * time.Millisecond
)

// Tolerances of the outside view. A level is never held shorter than
// configured (the driver sleeps at least that long), so the lower bound
// only allows for the trace's timestamp taken on another host thread; the
// upper bound is generous because the guest runs emulated (TCG) on a
// shared 2-core host.
const (
	tolShort     = 3 * time.Millisecond
	tolPulseLong = 150 * time.Millisecond
	tolRelayLong = 400 * time.Millisecond
)

func cfgPulse(line int, activeLow bool, p gpioconf.Pulse) gpioconf.Config {
	c := gpioconf.DefaultConfig()
	c.Chip, c.Output, c.ActiveLow, c.Mode, c.Pulse = chip, line, activeLow, gpioconf.ModePulse, p
	return c
}

func cfgRelay(line int, paid time.Duration, busy int) gpioconf.Config {
	c := gpioconf.DefaultConfig()
	c.Chip, c.Output, c.Mode = chip, line, gpioconf.ModeRelay
	c.Relay.Durations = map[string]time.Duration{"massage": paid}
	c.Relay.Checkpoint = checkpoint
	c.Relay.BusyLine = busy
	c.Relay.BusyTimeout = busyTimeout
	return c
}

func TestMain(m *testing.M) {
	if qemuvm.IsInit() {
		qemuvm.RunAsInit(m)
	}
	os.Exit(m.Run())
}

func guestOnly(t *testing.T) {
	t.Helper()
	if os.Getenv(guestEnv) == "" || os.Getenv(childEnv) != "" {
		t.Skip("runs inside the qemu guest started by TestQEMUGPIO")
	}
}

// guestResult is what a guest test tells the host.
type guestResult struct {
	Test      string            `json:"test"`
	Line      int               `json:"line"`
	Outcome   string            `json:"outcome"`
	Reason    string            `json:"reason,omitempty"`
	Reports   []unlock.Progress `json:"reports"`
	Final     unlock.Progress   `json:"final"`
	AtKill    unlock.Progress   `json:"at_kill"`
	AfterKill string            `json:"after_kill,omitempty"` // the line as the kernel left it after SIGKILL
}

func emit(t *testing.T, r guestResult) {
	t.Helper()
	r.Test = t.Name()
	b, _ := json.Marshal(r)
	fmt.Printf("%s%s\n", resultMark, b)
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// runOnce opens a driver, runs one order and closes it, recording reports.
func runOnce(t *testing.T, cfg gpioconf.Config, typ string) (unlock.Result, []unlock.Progress) {
	t.Helper()
	d, err := Open(cfg, logger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	o := unlock.Order{OutTradeNo: "qemu_" + strings.ToLower(t.Name()[9:]), Type: typ, TotalFee: 100, Provider: "wxpay"}
	p, err := d.Plan(o)
	if err != nil {
		t.Fatal(err)
	}
	var reports []unlock.Progress
	res, err := d.Run(context.Background(), o, p, func(p unlock.Progress) error {
		reports = append(reports, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, reports
}

func TestGuestPulse(t *testing.T) {
	guestOnly(t)
	res, reports := runOnce(t, cfgPulse(0, false, pulseA), "wash_5")
	if res.Outcome != unlock.Delivered || res.Progress.PulsesDone != 5 || len(reports) != 5 {
		t.Errorf("result %+v after %d reports, want delivered, 5 pulses, 5 reports", res, len(reports))
	}
	for i, r := range reports {
		if r.PulsesStarted != i+1 || r.PulsesPaid != 5 {
			t.Errorf("report %d: %+v, want started %d of 5", i, r, i+1)
		}
	}
	emit(t, guestResult{Line: 0, Outcome: res.Outcome.String(), Reports: reports, Final: res.Progress})
}

func TestGuestPulseActiveLow(t *testing.T) {
	guestOnly(t)
	res, reports := runOnce(t, cfgPulse(1, true, pulseB), "coin_3")
	if res.Outcome != unlock.Delivered || res.Progress.PulsesDone != 3 {
		t.Errorf("result %+v, want delivered, 3 pulses", res)
	}
	emit(t, guestResult{Line: 1, Outcome: res.Outcome.String(), Reports: reports, Final: res.Progress})
}

func TestGuestRelay(t *testing.T) {
	guestOnly(t)
	res, reports := runOnce(t, cfgRelay(2, relayPlain, -1), "massage")
	if res.Outcome != unlock.Delivered || res.Progress.RelayUsed != relayPlain {
		t.Errorf("result %+v, want delivered after %s", res, relayPlain)
	}
	// Without a busy input the outcome is decided, and reported, when the
	// output goes active.
	if len(reports) == 0 || reports[0].Outcome != unlock.Delivered || reports[0].RelayUsed != 2*checkpoint {
		t.Errorf("first report %+v, want outcome delivered and %s committed", reports, 2*checkpoint)
	}
	emit(t, guestResult{Line: 2, Outcome: res.Outcome.String(), Reports: reports, Final: res.Progress})
}

func TestGuestRelayBusyAck(t *testing.T) {
	guestOnly(t)
	res, reports := runOnce(t, cfgRelay(4, relayAck, busyLine), "massage")
	if res.Outcome != unlock.Delivered {
		t.Errorf("result %+v, want delivered by the busy input", res)
	}
	acked := false
	for _, r := range reports {
		acked = acked || r.Outcome == unlock.Delivered
	}
	if !acked {
		t.Errorf("no report carried the busy ack: %+v", reports)
	}
	emit(t, guestResult{Line: 4, Outcome: res.Outcome.String(), Reports: reports, Final: res.Progress})
}

func TestGuestRelayBusyTimeout(t *testing.T) {
	guestOnly(t)
	res, reports := runOnce(t, cfgRelay(5, relayTimeout, busyLine), "massage")
	if res.Outcome != unlock.NotDelivered || !strings.Contains(res.Reason, "busy input") {
		t.Errorf("result %+v, want not delivered for want of the busy input", res)
	}
	emit(t, guestResult{Line: 5, Outcome: res.Outcome.String(), Reason: res.Reason, Reports: reports, Final: res.Progress})
}

// TestGuestRelayBusyPaidOut resumes a busy-input relay whose paid time
// crashes have all committed while the busy input never went active: not
// delivered (so refunded), and the output is not switched (line 5, after
// TestGuestRelayBusyTimeout: the host still sees one activation).
func TestGuestRelayBusyPaidOut(t *testing.T) {
	guestOnly(t)
	d, err := Open(cfgRelay(5, relayTimeout, busyLine), logger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	o := unlock.Order{OutTradeNo: "qemu_paid_out", Type: "massage"}
	p, _ := d.Plan(o)
	p.Started, p.RelayUsed = true, p.RelayPaid
	res, err := d.Resume(context.Background(), o, p, func(unlock.Progress) error { return nil })
	if err != nil || res.Outcome != unlock.NotDelivered || !strings.Contains(res.Reason, "busy input") {
		t.Errorf("resume: %+v %v, want not delivered for want of the busy input", res, err)
	}
	emit(t, guestResult{Line: 5, Outcome: res.Outcome.String(), Reason: res.Reason, Final: res.Progress})
}

// TestGuestReportFailure: the store cannot commit pulse 3, so pulse 3 is
// never driven (line 1, well after TestGuestPulseActiveLow).
func TestGuestReportFailure(t *testing.T) {
	guestOnly(t)
	d, err := Open(cfgPulse(1, true, pulseB), logger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	o := unlock.Order{OutTradeNo: "qemu_store", Type: "coin_3"}
	p, _ := d.Plan(o)
	full := errors.New("store full")
	res, err := d.Run(context.Background(), o, p, func(p unlock.Progress) error {
		if p.PulsesStarted == 3 {
			return full
		}
		return nil
	})
	if !errors.Is(err, full) || res.Progress.PulsesStarted != 2 || res.Progress.PulsesDone != 2 {
		t.Fatalf("got %+v %v, want the store error after 2 pulses", res, err)
	}
	emit(t, guestResult{Line: 1, Final: res.Progress})
}

// TestGuestPulseStop stops a train the way a daemon shutdown does (ctx
// cancelled, here just after pulse 3 was committed) and resumes it: a clean
// stop gives back the pulse that had not started, so the machine gets all
// it was paid for. Runs on line 0 after TestGuestPulse.
func TestGuestPulseStop(t *testing.T) {
	guestOnly(t)
	cfg := cfgPulse(0, false, pulseStop)
	d, err := Open(cfg, logger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	o := unlock.Order{OutTradeNo: "qemu_stop", Type: "wash_6"}
	p, _ := d.Plan(o)
	ctx, cancel := context.WithCancel(context.Background())
	var last unlock.Progress
	_, err = d.Run(ctx, o, p, func(p unlock.Progress) error {
		last = p
		if p.PulsesStarted == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || last.PulsesStarted != 2 || last.PulsesDone != 2 {
		t.Fatalf("stop: %v, last progress %+v; want canceled with pulse 3 given back", err, last)
	}
	res, err := d.Resume(context.Background(), o, last, func(p unlock.Progress) error { last = p; return nil })
	if err != nil || res.Outcome != unlock.Delivered || res.Progress.PulsesDone != 6 {
		t.Fatalf("resume: %+v %v", res, err)
	}
	emit(t, guestResult{Line: 0, Outcome: res.Outcome.String(), Final: res.Progress})
}

// TestGuestRelayStop stops a relay mid-way and resumes it (line 2, after
// TestGuestRelay): the stop records the time actually used, not the
// committed bound.
func TestGuestRelayStop(t *testing.T) {
	guestOnly(t)
	cfg := cfgRelay(2, relayPlain, -1)
	d, err := Open(cfg, logger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	o := unlock.Order{OutTradeNo: "qemu_stop", Type: "massage"}
	p, _ := d.Plan(o)
	ctx, cancel := context.WithTimeout(context.Background(), relayStopAfter)
	defer cancel()
	res, err := d.Run(ctx, o, p, func(unlock.Progress) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stop: %+v %v", res, err)
	}
	// Roughly relayStopAfter (the deadline starts before the relay goes on
	// and is noticed a little late); the host checks the record exactly
	// against what qemu saw.
	if used := res.Progress.RelayUsed; used < relayStopAfter-100*time.Millisecond || used > relayStopAfter+tolRelayLong {
		t.Errorf("stopped %s after Run began but recorded %s used", relayStopAfter, used)
	}
	stopped := res.Progress
	res, err = d.Resume(context.Background(), o, stopped, func(unlock.Progress) error { return nil })
	if err != nil || res.Outcome != unlock.Delivered || res.Progress.RelayUsed != relayPlain {
		t.Fatalf("resume: %+v %v", res, err)
	}
	emit(t, guestResult{Line: 2, Outcome: res.Outcome.String(), AtKill: stopped, Final: res.Progress})
}

// TestGuestDoctor runs the doctor checks against the real chip.
func TestGuestDoctor(t *testing.T) {
	guestOnly(t)
	ok := cfgRelay(2, relayPlain, busyLine)
	for _, c := range Doctor(ok) {
		if c.Status != unlock.OK {
			t.Errorf("free lines: %+v", c)
		}
	}
	d, err := Open(ok, logger())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Doctor(ok) {
		if c.Status != unlock.OK || (c.Name == "unlock.gpio.output" && !strings.Contains(c.Detail, "held by kioskpayd")) {
			t.Errorf("lines held by the daemon: %+v", c)
		}
	}
	other := cfgPulse(2, false, pulseA)
	other.Consumer = "someone-else"
	checks := Doctor(other)
	if len(checks) != 2 || checks[1].Status != unlock.Fail || !strings.Contains(checks[1].Detail, `in use by "kioskpayd"`) {
		t.Errorf("line held by another consumer: %+v", checks)
	}
	d.Close()
	missing := cfgRelay(9, relayPlain, -1)
	if checks := Doctor(missing); len(checks) != 2 || checks[1].Status != unlock.Fail {
		t.Errorf("line 9 of 8: %+v", checks)
	}
	nochip := cfgRelay(0, relayPlain, -1)
	nochip.Chip = "gpiochip7"
	if checks := Doctor(nochip); len(checks) != 1 || checks[0].Status != unlock.Fail {
		t.Errorf("missing chip: %+v", checks)
	}
}

// TestGuestChild is the process TestGuestRelayKillResume and
// TestGuestPulseKillResume kill: it runs one order and persists every report
// to progressFile, as the engine would.
func TestGuestChild(t *testing.T) {
	var cfg gpioconf.Config
	var typ string
	switch os.Getenv(childEnv) {
	case "relay":
		cfg, typ = cfgRelay(6, relayKill, -1), "massage"
	case "pulse":
		cfg, typ = cfgPulse(7, false, pulseK), "wash_20"
	default:
		t.Skip("the process killed by the kill/resume guest tests")
	}
	d, err := Open(cfg, logger())
	if err != nil {
		t.Fatal(err)
	}
	o := unlock.Order{OutTradeNo: "qemu_kill", Type: typ}
	p, _ := d.Plan(o)
	d.Run(context.Background(), o, p, func(p unlock.Progress) error {
		b, _ := json.Marshal(p)
		if err := os.WriteFile(progressFile+".tmp", b, 0o644); err != nil {
			return err
		}
		return os.Rename(progressFile+".tmp", progressFile)
	})
	t.Fatal("the child was not killed")
}

// killMidAction starts the child, SIGKILLs it once its persisted progress
// satisfies ready, and returns that progress and the level the kernel left on line.
func killMidAction(t *testing.T, mode string, line int, ready func(unlock.Progress) bool, delay time.Duration) (unlock.Progress, string) {
	t.Helper()
	os.Remove(progressFile)
	cmd := exec.Command("/proc/self/exe", "-test.run=^TestGuestChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last unlock.Progress
	// The child is another process: its file is the only signal there is.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !ready(last) {
		select {
		case <-tick.C:
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("child never reached the kill point; last progress %+v", last)
		}
		if b, err := os.ReadFile(progressFile); err == nil {
			json.Unmarshal(b, &last)
		}
	}
	// delay picks the moment of the kill inside the step that follows the
	// commit; it synchronises nothing.
	time.Sleep(delay)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// What was persisted last is what the engine would resume from.
	b, err := os.ReadFile(progressFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &last); err != nil {
		t.Fatal(err)
	}
	return last, levelAfterKill(line)
}

// levelAfterKill reads the line the way the kernel left it when the
// killed process's request was released: requested as-is (direction
// untouched), read, released.
func levelAfterKill(line int) string {
	l, err := gpiocdev.RequestLine(chip, line, gpiocdev.AsIs, gpiocdev.WithConsumer("kill-probe"))
	if err != nil {
		return "probe failed: " + err.Error()
	}
	defer l.Close()
	info, _ := l.Info()
	v, err := l.Value()
	if err != nil {
		return "probe failed: " + err.Error()
	}
	dir := "input"
	if info.Config.Direction == gpiocdev.LineDirectionOutput {
		dir = "output"
	}
	return fmt.Sprintf("%s at %d", dir, v)
}

// restartAndResume is what the daemon's start-up does after a crash: the
// service manager's ExecStopPost has run Safe; Open drives the output
// inactive; Resume continues from the last persisted progress.
func restartAndResume(t *testing.T, cfg gpioconf.Config, typ string, last unlock.Progress) (unlock.Result, []unlock.Progress) {
	t.Helper()
	if err := Safe(cfg); err != nil {
		t.Fatal(err)
	}
	d, err := Open(cfg, logger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var reports []unlock.Progress
	res, err := d.Resume(context.Background(), unlock.Order{OutTradeNo: "qemu_kill", Type: typ}, last,
		func(p unlock.Progress) error { reports = append(reports, p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res, reports
}

func TestGuestRelayKillResume(t *testing.T) {
	guestOnly(t)
	// Kill after the second commit: about one checkpoint of time used, three
	// committed.
	last, after := killMidAction(t, "relay", 6, func(p unlock.Progress) bool { return p.RelayUsed >= 3*checkpoint }, 0)
	res, reports := restartAndResume(t, cfgRelay(6, relayKill, -1), "massage", last)
	if res.Outcome != unlock.Delivered || res.Progress.RelayUsed != relayKill {
		t.Errorf("resumed result %+v, want delivered with all %s used", res, relayKill)
	}
	emit(t, guestResult{Line: 6, Outcome: res.Outcome.String(), Reports: reports, Final: res.Progress, AtKill: last, AfterKill: after})
}

func TestGuestPulseKillResume(t *testing.T) {
	guestOnly(t)
	last, after := killMidAction(t, "pulse", 7, func(p unlock.Progress) bool { return p.PulsesStarted >= killAtPulse }, killPulseDelay)
	res, reports := restartAndResume(t, cfgPulse(7, false, pulseK), "wash_20", last)
	if res.Outcome != unlock.Delivered || res.Progress.PulsesStarted != 20 {
		t.Errorf("resumed result %+v, want delivered with 20 started", res)
	}
	if len(reports) != 20-last.PulsesStarted {
		t.Errorf("resume committed %d pulses, want %d", len(reports), 20-last.PulsesStarted)
	}
	emit(t, guestResult{Line: 7, Outcome: res.Outcome.String(), Reports: reports, Final: res.Progress, AtKill: last, AfterKill: after})
}

// ---- host side ----

func TestQEMUGPIO(t *testing.T) {
	kernel := qemuvm.HostKernel(t, "boots an arm64 kernel under qemu (about 20 s here)")
	dir := t.TempDir()

	start := time.Now()
	bin := filepath.Join(dir, "guest.test")
	if err := qemuvm.CompileTest(context.Background(), ".", bin); err != nil {
		t.Fatal(err)
	}
	initrd, err := qemuvm.Initramfs(dir, map[string]string{"init": bin})
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(start)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm, err := qemuvm.Start(ctx, qemuvm.Options{
		Kernel: kernel, Initrd: initrd, Dir: dir, Trace: "pl061_*",
		Append: "quiet " + guestEnv + "=1 -- -test.v -test.count=1 -test.run=^TestGuest",
	})
	if err != nil {
		t.Fatal(err)
	}
	booted := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	var pressedAt time.Time
	go func() {
		defer wg.Done()
		pressedAt = pressWhenActive(ctx, t, vm, 4)
	}()
	if err := vm.Wait(); err != nil {
		t.Errorf("qemu: %v", err)
	}
	wg.Wait()
	ran := time.Since(booted)
	t.Logf("guest built in %s, VM ran %s", built.Round(time.Millisecond), ran.Round(time.Millisecond))

	console, _ := os.ReadFile(vm.Console)
	if !strings.Contains(string(console), qemuvm.ExitMark+" 0") {
		t.Fatalf("guest tests did not pass; console:\n%s", tail(console, 6000))
	}
	results := map[string]guestResult{}
	for _, l := range strings.Split(string(console), "\n") {
		if i := strings.Index(l, resultMark); i >= 0 {
			var r guestResult
			if err := json.Unmarshal([]byte(l[i+len(resultMark):]), &r); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
			results[strings.TrimPrefix(r.Test, "TestGuest")] = r
		}
	}
	events, err := vm.Events()
	if err != nil {
		t.Fatal(err)
	}
	es := qemuvm.PL061Edges(events)
	if len(es) == 0 {
		t.Fatal("no pl061 trace events")
	}
	for _, e := range es {
		if e.Line == 0 && e.Level == 1 && !e.Input {
			// The board's reset is the first event; TestGuestPulse's first
			// pulse comes after the kernel booted and /init started.
			t.Logf("qemu start to the first pulse (boot, /init, driver open): %s", e.At.Sub(events[0].At).Round(time.Millisecond))
			break
		}
	}
	if len(results) != 11 {
		t.Fatalf("want results of 11 guest tests, got %d:\n%s", len(results), tail(console, 4000))
	}

	t.Run("pulse", func(t *testing.T) {
		// TestGuestPulse's 5, then TestGuestPulseStop's 6 across its stop.
		checkPulses(t, es, 0, 1, pulseA, 5+6)
	})
	t.Run("pulse_active_low", func(t *testing.T) {
		// Safe level of an active-low output is high: qemu sees the line
		// go high when the driver opens, and the pulses as low spans.
		// TestGuestPulseActiveLow's 3, then TestGuestReportFailure's 2:
		// the pulse whose commit failed never appears.
		lows := checkPulses(t, es, 1, 0, pulseB, 3+2)
		if len(lows) > 0 && !wentTo(es, 1, 1, lows[0].From) {
			t.Error("line 1 was not driven to its inactive (high) level before the first pulse")
		}
	})
	t.Run("relay", func(t *testing.T) {
		on := qemuvm.Spans(es, 2, 1)
		if len(on) != 3 {
			t.Fatalf("line 2 active %d times, want 3 (TestGuestRelay, then TestGuestRelayStop's two spans): %v", len(on), on)
		}
		within(t, "relay on", on[0].Len(), relayPlain-tolShort, relayPlain+tolRelayLong)
		t.Logf("relay on for %s of %s paid", on[0].Len().Round(time.Microsecond), relayPlain)
		// A clean stop and resume: the paid time in total, none lost.
		// What the stop recorded covers what qemu saw (never less, so the
		// resume cannot give more than paid), and by little.
		recorded := results["RelayStop"].AtKill.RelayUsed
		within(t, "stopped span", on[1].Len(), recorded-20*time.Millisecond, recorded+tolShort)
		total := on[1].Len() + on[2].Len()
		within(t, "stopped + resumed", total, relayPlain-10*time.Millisecond, relayPlain+tolRelayLong)
		t.Logf("stopped after %s, resumed for %s: %s of %s paid", on[1].Len().Round(time.Millisecond),
			on[2].Len().Round(time.Millisecond), total.Round(time.Millisecond), relayPlain)
	})
	t.Run("relay_busy_ack", func(t *testing.T) {
		on := qemuvm.Spans(es, 4, 1)
		if len(on) != 1 {
			t.Fatalf("line 4 active %d times, want once", len(on))
		}
		within(t, "relay on", on[0].Len(), relayAck-tolShort, relayAck+tolRelayLong)
		t.Logf("relay on for %s of %s paid", on[0].Len().Round(time.Microsecond), relayAck)
		press := inputRise(es, busyLine, on[0].From, on[0].To)
		if press.IsZero() {
			t.Fatalf("qemu saw no busy input while line 4 was on (pressed at %v)", pressedAt)
		}
		if r := results["RelayBusyAck"]; r.Outcome != "delivered" {
			t.Errorf("guest outcome %q, want delivered", r.Outcome)
		}
		t.Logf("busy input went high %s after the relay", press.Sub(on[0].From).Round(time.Millisecond))
	})
	t.Run("relay_busy_timeout", func(t *testing.T) {
		on := qemuvm.Spans(es, 5, 1)
		if len(on) != 1 {
			t.Fatalf("line 5 active %d times, want once", len(on))
		}
		// Cut off at the busy timeout, far short of the paid time.
		within(t, "relay on", on[0].Len(), busyTimeout-tolShort, busyTimeout+tolRelayLong)
		t.Logf("relay switched off after %s (busy_timeout %s, paid %s)", on[0].Len().Round(time.Microsecond), busyTimeout, relayTimeout)
		if !inputRise(es, busyLine, on[0].From, on[0].To).IsZero() {
			t.Error("busy input changed during the timeout scenario")
		}
		if r := results["RelayBusyTimeout"]; r.Outcome != "not_delivered" {
			t.Errorf("guest outcome %q, want not_delivered", r.Outcome)
		}
		if r := results["RelayBusyPaidOut"]; r.Outcome != "not_delivered" {
			t.Errorf("paid time all committed, busy input silent: guest outcome %q, want not_delivered", r.Outcome)
		}
	})
	t.Run("relay_kill_resume", func(t *testing.T) {
		r := results["RelayKillResume"]
		on := qemuvm.Spans(es, 6, 1)
		var total time.Duration
		for _, p := range on {
			total += p.Len()
		}
		t.Logf("active spans %d, total %s of %s paid; at kill %s committed; after SIGKILL the kernel showed %q",
			len(on), total.Round(time.Millisecond), relayKill, r.AtKill.RelayUsed, r.AfterKill)
		// The kernel keeps an output's level when its holder dies: the
		// relay stays closed until something drives it (Safe, run by the
		// service manager after the daemon exits).
		if r.AfterKill != "output at 1" {
			t.Errorf("after SIGKILL line 6 was %q, want the relay still active (output at 1)", r.AfterKill)
		}
		if len(on) != 2 {
			t.Fatalf("line 6 active %d times, want twice (before the kill, resumed)", len(on))
		}
		// Never more than paid; a crash costs at most two checkpoints.
		within(t, "total active", total, relayKill-2*checkpoint-tolShort, relayKill+tolShort+50*time.Millisecond)
		within(t, "resumed span", on[1].Len(), relayKill-r.AtKill.RelayUsed-tolShort, relayKill-r.AtKill.RelayUsed+tolRelayLong)
	})
	t.Run("pulse_kill_resume", func(t *testing.T) {
		r := results["PulseKillResume"]
		on := qemuvm.Spans(es, 7, 1)
		paid := pulseK.Counts["wash_20"]
		t.Logf("pulses seen %d of %d paid; %d committed at the kill; after SIGKILL the kernel showed %q",
			len(on), paid, r.AtKill.PulsesStarted, r.AfterKill)
		if len(on) > paid || len(on) < paid-1 {
			t.Errorf("qemu saw %d pulses, want %d (or %d when the kill fell between a commit and its edge)", len(on), paid, paid-1)
		}
	})
}

// checkPulses checks the count and timing of one line's pulses (spans at
// activeLevel) and the gaps between them.
func checkPulses(t *testing.T, es []qemuvm.Edge, line, activeLevel int, p gpioconf.Pulse, want int) []qemuvm.Span {
	t.Helper()
	on := qemuvm.Spans(es, line, activeLevel)
	if len(on) != want {
		t.Fatalf("line %d: %d pulses, want %d", line, len(on), want)
	}
	var maxW, maxG time.Duration
	for i, s := range on {
		within(t, fmt.Sprintf("pulse %d width", i+1), s.Len(), p.Width-tolShort, p.Width+tolPulseLong)
		maxW = max(maxW, s.Len())
		// A gap over a second is between two trains (or a stop and its
		// resume), not inside one.
		if g := s.From.Sub(on[max(i, 1)-1].To); i > 0 && g < time.Second {
			within(t, fmt.Sprintf("gap before pulse %d", i+1), g, p.Gap-tolShort, p.Gap+tolPulseLong)
			maxG = max(maxG, g)
		}
	}
	t.Logf("line %d: %d pulses, widest %s (want %s), longest gap %s (want %s)", line, len(on),
		maxW.Round(time.Microsecond), p.Width, maxG.Round(time.Microsecond), p.Gap)
	return on
}

func within(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s: %s, want %s..%s", what, got.Round(time.Microsecond), lo, hi)
	}
}

func wentTo(es []qemuvm.Edge, line, level int, before time.Time) bool {
	for _, e := range es {
		if e.Line == line && !e.Input && e.Level == level && e.At.Before(before) {
			return true
		}
	}
	return false
}

func inputRise(es []qemuvm.Edge, line int, from, to time.Time) time.Time {
	for _, e := range es {
		if e.Input && e.Line == line && e.Level == 1 && !e.At.Before(from) && !e.At.After(to) {
			return e.At
		}
	}
	return time.Time{}
}

// pressWhenActive follows the trace as qemu writes it and presses the
// power button (busy input) pressDelay after line goes high.
func pressWhenActive(ctx context.Context, t *testing.T, vm *qemuvm.VM, line int) time.Time {
	want := fmt.Sprintf("setting output %d to 1", line)
	var f *os.File
	var r *bufio.Reader
	var partial string
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-vm.Done():
			return time.Time{}
		case <-ctx.Done():
			return time.Time{}
		case <-poll.C:
		}
		if f == nil {
			var err error
			if f, err = os.Open(vm.Trace); err != nil {
				continue
			}
			defer f.Close()
			r = bufio.NewReader(f)
		}
		for {
			s, err := r.ReadString('\n')
			partial += s
			if errors.Is(err, io.EOF) {
				break
			}
			line := partial
			partial = ""
			if strings.Contains(line, "pl061_set_output") && strings.Contains(line, want) {
				timer := time.NewTimer(pressDelay)
				select {
				case <-timer.C:
				case <-vm.Done():
					return time.Time{}
				}
				at := time.Now()
				qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if _, err := vm.QMP(qctx, "system_powerdown"); err != nil {
					t.Errorf("press the busy input: %v", err)
				}
				return at
			}
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
