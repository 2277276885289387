package device

// The engine with local unlock drivers: exec with real programs, serial
// through a real pseudo-terminal pair with a scripted machine, and a
// resumable stand-in (pulsing) for what gpio does, whose only purpose is
// to check the engine's side of the Plan/Run/Resume contract. gpio itself
// is tested against a real kernel in device/unlock/gpio (TestQEMUGPIO).

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/unlock"
	unlockexec "github.com/kioskpay/kioskpay/device/unlock/exec"
	"github.com/kioskpay/kioskpay/device/unlock/serial"
	"github.com/kioskpay/kioskpay/device/unlock/serial/serialconf"
	"github.com/kioskpay/kioskpay/internal/ptytest"
	"github.com/kioskpay/kioskpay/store"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "start.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func execDriver(t *testing.T, prog string, timeout time.Duration) unlock.Driver {
	t.Helper()
	d, err := unlockexec.New(unlockexec.Config{Command: []string{prog}, Timeout: timeout}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// lines reads a file of lines written by a test program ("" = none yet).
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// paidResults counts the paid results published for otn.
func (h *harness) paidResults(otn string) int {
	n := 0
	for _, m := range h.results(otn) {
		if m.Str("status") == "paid" {
			n++
		}
	}
	return n
}

func progressOf(t *testing.T, o store.Order) unlock.Progress {
	t.Helper()
	var p unlock.Progress
	if err := json.Unmarshal(o.Unlock, &p); err != nil {
		t.Fatalf("order %s unlock %q: %v", o.OutTradeNo, o.Unlock, err)
	}
	return p
}

func TestExecDelivered(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	prog := script(t, `env | sort > `+out)
	h := newHarness(t, func(c *Config) { c.Unlock = execDriver(t, prog, 10*time.Second) })
	h.createOK("r1", "order_x001", 1000, "")
	_ = h.wx().pay("order_x001", 0)
	o := h.waitState("order_x001", store.Delivered)
	h.event("order_x001", contract.ReasonUnlockStarted)
	h.event("order_x001", contract.ReasonUnlockDelivered)
	if p := progressOf(t, o); !p.Started || p.Driver != "exec" || !o.Acked || len(o.Refunds) != 0 {
		t.Fatalf("order %+v progress %+v", o, p)
	}
	env := lines(t, out)
	for _, want := range []string{"KIOSKPAY_OUT_TRADE_NO=order_x001", "KIOSKPAY_TYPE=massage_15", "KIOSKPAY_TOTAL_FEE=1000",
		"KIOSKPAY_PROVIDER=wxpay", `KIOSKPAY_CUSTOM={"seat":3}`} {
		if !slices.Contains(env, want) {
			t.Errorf("program environment lacks %s: %v", want, env)
		}
	}
	// The paid result is telemetry: published once, never re-published
	// for want of an ack.
	h.result("order_x001", "paid")
	h.advance(5 * time.Minute)
	time.Sleep(300 * time.Millisecond) // let a (wrong) re-publication show up
	if n := h.paidResults("order_x001"); n != 1 {
		t.Fatalf("paid result published %d times:\n%s", n, h.dump())
	}
}

func TestExecNotDeliveredRefunds(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		timeout    time.Duration
		reason     string
	}{
		{"exit 3", "exit 3", 10 * time.Second, "unlock_not_delivered: program exit status 3"},
		{"timeout", "sleep 30", time.Second, "unlock_not_delivered: program timed out after 1s and was killed"},
		{"missing program", "", 10 * time.Second, "unlock_not_delivered: program did not start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog := script(t, tc.body)
			if tc.body == "" {
				prog += ".missing"
			}
			h := newHarness(t, func(c *Config) { c.Unlock = execDriver(t, prog, tc.timeout) })
			h.createOK("r1", "order_x002", 700, "")
			_ = h.wx().pay("order_x002", 0)
			h.result("order_x002", "refunded")
			o := h.waitState("order_x002", store.Refunded)
			if sum, _ := h.wx().refundTotal("order_x002"); sum != 700 {
				t.Fatalf("refunded %d", sum)
			}
			h.event("order_x002", tc.reason)
			if o.Acked || len(o.Refunds) != 1 {
				t.Fatalf("order %+v", o)
			}
			// Results are telemetry: none waits for an ack.
			h.advance(5 * time.Minute)
			time.Sleep(300 * time.Millisecond) // let a (wrong) re-publication show up
			if n := len(h.results("order_x002")); n != 2 {
				t.Fatalf("%d results, want paid and refunded once each:\n%s", n, h.dump())
			}
		})
	}
}

// TestAckIgnoredWhileUnlocking: P/unlock/ack is not awaited and cannot
// change an order the driver decides.
func TestAckIgnoredWhileUnlocking(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "go")
	prog := script(t, `while [ ! -e `+gate+` ]; do sleep 0.05; done; exit 1`)
	h := newHarness(t, func(c *Config) { c.Unlock = execDriver(t, prog, 30*time.Second) })
	h.createOK("r1", "order_x003", 500, "")
	_ = h.wx().pay("order_x003", 0)
	h.event("order_x003", contract.ReasonUnlockStarted)
	h.send(contract.TopicAck, ackPayload("order_x003", true))
	if r := h.reply("ack-order_x003"); !strings.HasPrefix(r.Str("msg"), "ignored") {
		t.Fatalf("ack reply %s", r.Payload)
	}
	if o, _ := h.e.load("order_x003"); o.State != store.Paid {
		t.Fatalf("state %s after an ignored ack", o.State)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitState("order_x003", store.Refunded)
}

// TestUnknownTypeRefusedAtCreate: the driver's Plan refuses the type
// before any provider order exists.
func TestUnknownTypeRefusedAtCreate(t *testing.T) {
	d := &pulser{counts: map[string]int{"wash_5": 5}}
	h := newHarness(t, func(c *Config) { c.Unlock = d })
	h.send(contract.TopicCreate, createPayload("r1", "order_x004", 500, "", ""))
	r := h.reply("r1")
	if r.Str("error") != string(contract.ErrPriceMismatch) || r.Str("field") != "data.type" || !strings.Contains(r.Str("msg"), "massage_15") {
		t.Fatalf("reply %s", r.Payload)
	}
	if n := h.wx().count("create"); n != 0 {
		t.Fatalf("%d provider creates for a refused type", n)
	}
}

// TestExecInterruptedIsFlaggedNotRerun: a stop while the program runs
// leaves the order paid; the next start flags it for a human and neither
// runs the program again nor refunds. A human's ack then delivers it.
func TestExecInterruptedIsFlaggedNotRerun(t *testing.T) {
	runs := filepath.Join(t.TempDir(), "runs")
	prog := script(t, `echo run >> `+runs+`; sleep 30`)
	h := newHarness(t, func(c *Config) { c.Unlock = execDriver(t, prog, time.Minute) })
	h.createOK("r1", "order_x005", 900, "")
	_ = h.wx().pay("order_x005", 0)
	h.event("order_x005", contract.ReasonUnlockStarted)
	waitFor(t, func() bool { return len(lines(t, runs)) == 1 }, "the program to start")
	h.restart()
	h.event("order_x005", contract.FlagUnlockInterrupted)
	o := h.waitState("order_x005", store.Paid)
	if !o.HasFlag(contract.FlagUnlockInterrupted) || len(o.Refunds) != 0 {
		t.Fatalf("order %+v", o)
	}
	waitFor(t, func() bool { return slices.Contains(h.e.Status().Flags, contract.StatusUnlockInterrupted) }, "status flag")
	h.restart() // a second start changes nothing
	time.Sleep(300 * time.Millisecond)
	if n := len(lines(t, runs)); n != 1 {
		t.Fatalf("program ran %d times", n)
	}
	h.send(contract.TopicAck, ackPayload("order_x005", true))
	h.waitState("order_x005", store.Delivered)
	waitFor(t, func() bool { return !slices.Contains(h.e.Status().Flags, contract.StatusUnlockInterrupted) }, "status flag cleared")
	if sum, _ := h.wx().refundTotal("order_x005"); sum != 0 {
		t.Fatalf("refunded %d", sum)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// machine answers each command line read on master.
func machine(master *os.File, answer func(line string, w io.Writer)) {
	go func() {
		r := bufio.NewReader(master)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			answer(line, master)
		}
	}()
}

func TestSerialScriptedMachine(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(line string, w io.Writer)
		want   store.State
		reason string
	}{
		{"answers", func(line string, w io.Writer) {
			f := strings.Fields(line)
			io.WriteString(w, "OK "+f[len(f)-2]+"\r\n")
		}, store.Delivered, contract.ReasonUnlockDelivered},
		{"silence", func(string, io.Writer) {}, store.Refunded, "unlock_not_delivered: no answer within 500ms"},
		{"garbage", func(_ string, w io.Writer) { io.WriteString(w, "\x00\xff?? OK\r\n") }, store.Refunded, "unlock_not_delivered: no expected answer"},
		{"rejects", func(_ string, w io.Writer) { io.WriteString(w, "ERR jam\r\n") }, store.Refunded, "unlock_not_delivered: machine answered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, port := ptytest.Open(t)
			var mu sync.Mutex
			var got []string
			machine(master, func(line string, w io.Writer) {
				mu.Lock()
				got = append(got, line)
				mu.Unlock()
				tc.answer(line, w)
			})
			cfg := serialconf.DefaultConfig()
			cfg.Port, cfg.Send, cfg.Expect, cfg.Reject = port, "START {type} {out_trade_no} {total_fee}\r\n", "OK {out_trade_no}", "ERR"
			cfg.Timeout = 500 * time.Millisecond
			d, err := serial.New(cfg, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, func(c *Config) { c.Unlock = d })
			h.createOK("r1", "order_s001", 1000, "")
			_ = h.wx().pay("order_s001", 0)
			h.waitState("order_s001", tc.want)
			h.event("order_s001", tc.reason)
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0] != "START massage_15 order_s001 1000\r\n" {
				t.Fatalf("machine got %q", got)
			}
		})
	}
}

// pulser is a resumable stand-in driver (not hardware, not gpio): it
// "sends" pulses by counting them, committing each before it starts, the
// way gpio's pulse mode does, and blocks after block pulses until ctx ends.
type pulser struct {
	counts map[string]int
	block  int

	mu   sync.Mutex
	sent int
}

func (d *pulser) Plan(o unlock.Order) (unlock.Progress, error) {
	n, ok := d.counts[o.Type]
	if !ok {
		return unlock.Progress{}, unlock.ErrUnknownType
	}
	return unlock.Progress{Driver: "test", Mode: "pulse", PulsesPaid: n}, nil
}

func (d *pulser) Run(ctx context.Context, o unlock.Order, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	return d.Resume(ctx, o, p, report)
}

func (d *pulser) Resume(ctx context.Context, o unlock.Order, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	for p.PulsesStarted < p.PulsesPaid {
		d.mu.Lock()
		stop := d.block > 0 && d.sent >= d.block
		d.mu.Unlock()
		if stop {
			<-ctx.Done()
			return unlock.Result{Progress: p}, ctx.Err()
		}
		next := p
		next.Started, next.PulsesStarted = true, p.PulsesStarted+1
		if err := report(next); err != nil {
			return unlock.Result{Progress: p}, err
		}
		p = next
		d.mu.Lock()
		d.sent++
		d.mu.Unlock()
		p.PulsesDone = p.PulsesStarted
	}
	return unlock.Result{Outcome: unlock.Delivered, Progress: p}, nil
}

func (d *pulser) Close() error { return nil }

func (d *pulser) total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sent
}

// TestResumeContinuesFromProgress: a stop mid-train leaves the committed
// Progress; the next start resumes with what is left and the machine gets
// exactly what was paid.
func TestResumeContinuesFromProgress(t *testing.T) {
	d := &pulser{counts: map[string]int{"massage_15": 5}, block: 2}
	h := newHarness(t, func(c *Config) { c.Unlock = d })
	h.createOK("r1", "order_p001", 1000, "")
	_ = h.wx().pay("order_p001", 0)
	waitFor(t, func() bool { return d.total() == 2 }, "two pulses")
	h.stop()
	d.mu.Lock()
	d.block = 0
	d.mu.Unlock()
	h.start()
	o := h.waitState("order_p001", store.Delivered)
	if p := progressOf(t, o); p.PulsesStarted != 5 || d.total() != 5 {
		t.Fatalf("progress %+v, sent %d", p, d.total())
	}
}

// TestNotDeliveredHold: with on_no_ack = "hold" a definite "not delivered"
// holds the order for a person instead of refunding (SPEC §3).
func TestNotDeliveredHold(t *testing.T) {
	prog := script(t, "exit 1")
	h := newHarness(t, func(c *Config) { c.Unlock, c.OnNoAck = execDriver(t, prog, 10*time.Second), config.OnNoAckHold })
	h.createOK("r1", "order_x006", 700, "")
	_ = h.wx().pay("order_x006", 0)
	h.waitState("order_x006", store.Held)
	h.event("order_x006", "unlock_not_delivered: program exit status 1")
	if sum, _ := h.wx().refundTotal("order_x006"); sum != 0 {
		t.Fatalf("refunded %d", sum)
	}
}
