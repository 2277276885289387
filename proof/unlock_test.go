package proof

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/ptytest"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
)

// unlockWorld is the real daemon with a local unlock driver on a private
// rig: no controller acks anything; the driver's outcome is the ack.
type unlockWorld struct {
	t   *testing.T
	ctx context.Context
	rig *testrig.Rig
	d   *testrig.Daemon
	dev string
	// online bounds a start until the daemon's status says online.
	online time.Duration

	mu      sync.Mutex
	results map[string][]string // out_trade_no → result statuses in arrival order
	events  map[string][]string // out_trade_no → event reasons
	flags   []string            // last status flags
}

// newUnlockWorld starts a rig with opts (its broker and daemon binary, if
// set) and a daemon with overrides.
func newUnlockWorld(t *testing.T, ctx context.Context, opts testrig.RigOptions, overrides map[string]any) *unlockWorld {
	t.Helper()
	u := &unlockWorld{t: t, ctx: ctx, results: map[string][]string{}, events: map[string][]string{}, online: 20 * time.Second}
	if opts.Keys == nil {
		opts.Keys = simkeys.Get(t)
	}
	opts.Sim.RefundDelay = 100 * time.Millisecond
	opts.OnResult = func(r testrig.Result) {
		u.mu.Lock()
		u.results[r.OutTradeNo] = append(u.results[r.OutTradeNo], string(r.Status))
		u.mu.Unlock()
	}
	if opts.Bin != "" {
		// An emulated machine: the daemon starts slowly.
		u.online = 2 * time.Minute
	}
	rig, err := testrig.NewRig(ctx, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.Close)
	rig.Ctl.OnEvent = func(_ string, ev contract.Event) {
		u.mu.Lock()
		u.events[ev.OutTradeNo] = append(u.events[ev.OutTradeNo], ev.Reason)
		u.mu.Unlock()
	}
	rig.Ctl.OnStatus = func(_ string, s contract.Status) {
		u.mu.Lock()
		u.flags = s.Flags
		u.mu.Unlock()
	}
	u.rig, u.dev = rig, "dev"+testrig.RandomHex(3)
	o := map[string]any{"payment.poll": "300ms"}
	for k, v := range overrides {
		o[k] = v
	}
	if u.d, err = rig.Daemon(u.dev, o); err != nil {
		t.Fatal(err)
	}
	u.start()
	t.Cleanup(func() {
		if u.d.Running() {
			if code, err := u.d.Stop(10 * time.Second); err != nil || code != 0 {
				t.Errorf("daemon stop: exit %d, %v (log %s)", code, err, u.d.Log)
			}
		}
	})
	return u
}

func (u *unlockWorld) start() {
	u.t.Helper()
	if err := u.d.Start(); err != nil {
		u.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(u.ctx, u.online)
	defer cancel()
	if err := u.rig.Ctl.WaitOnline(ctx, u.dev); err != nil {
		u.t.Fatalf("%v (log %s)", err, u.d.Log)
	}
}

// createPay creates an order of fee fen at wxpay and pays it.
func (u *unlockWorld) createPay(otn string, fee int64) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 20*time.Second)
	defer cancel()
	r, err := u.rig.Ctl.Request(ctx, u.dev, "pay/create", map[string]any{"provider": "wxpay", "data": map[string]any{
		"out_trade_no": otn, "total_fee": fee, "subject": "unlock proof", "type": "proof"}})
	if err != nil || r.Code != 0 {
		u.t.Fatalf("create %s: %v %s (log %s)", otn, err, r.Raw, u.d.Log)
	}
	if err := u.rig.Sim.Pay(payment.WxPay, otn, payment.Fen(fee)); err != nil {
		u.t.Fatal(err)
	}
}

func (u *unlockWorld) state(otn string) string {
	ctx, cancel := context.WithTimeout(u.ctx, 5*time.Second)
	defer cancel()
	r, err := u.rig.Ctl.Request(ctx, u.dev, "pay/query", map[string]any{"out_trade_no": otn})
	var q contract.QueryReply
	if err != nil || r.Decode(&q) != nil {
		return ""
	}
	return q.State
}

func (u *unlockWorld) refunded(otn string) int64 {
	var n int64
	for _, l := range u.rig.Sim.Legs(otn) {
		n += int64(l.Refunded)
	}
	return n
}

func (u *unlockWorld) count(m map[string][]string, otn, prefix string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, s := range m[otn] {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func (u *unlockWorld) hasFlag(f string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Contains(u.flags, f)
}

// waitUntil polls cond (each poll is a round trip to the daemon or a file
// read) until it holds or d passes.
func (u *unlockWorld) waitUntil(d time.Duration, what string, cond func() bool) bool {
	u.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			u.t.Errorf("timed out after %s waiting for %s (log %s)", d, what, u.d.Log)
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// startLog is the file the test programs and machines write "<otn>" to
// when the service starts, one line per start.
type startLog struct {
	path string
	mu   sync.Mutex
}

func (s *startLog) add(otn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err == nil {
		fmt.Fprintln(f, otn)
		f.Close()
	}
}

func (s *startLog) starts(otn string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := os.ReadFile(s.path)
	n := 0
	for _, l := range strings.Fields(string(b)) {
		if strings.HasPrefix(l, otn) {
			n++
		}
	}
	return n
}

// execProgram writes the service program: it logs "<otn> <pid>" as it
// starts, waits KIOSKPAY_TEST_WAIT seconds' worth of the fee's tens digit
// (fee 2x0: 2 × 100 ms), and exits 0 for an even fee in yuan, 3 for odd.
func execProgram(t *testing.T, log string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "start-service")
	body := `#!/bin/sh
echo "$KIOSKPAY_OUT_TRADE_NO $$" >> ` + log + `
tenths=$(( (KIOSKPAY_TOTAL_FEE / 10) % 10 ))
[ "$tenths" -gt 0 ] && sleep "0.$tenths"
[ $(( (KIOSKPAY_TOTAL_FEE / 100) % 2 )) -eq 0 ] || exit 3
exit 0
`
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// serialMachine is the scripted machine on the master side: for each
// "START <otn> <fee>" line it logs the start, waits, and answers "OK <otn>"
// for an even fee in yuan, "ERR" for odd.
func serialMachine(master *os.File, log *startLog, wait time.Duration) {
	go func() {
		var pending []byte
		buf := make([]byte, 256)
		for {
			n, err := master.Read(buf)
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				// EIO while no process has the slave open (the driver
				// opens the port per order): wait for the next open.
				time.Sleep(20 * time.Millisecond)
				continue
			}
			pending = append(pending, buf[:n]...)
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				continue
			}
			line := string(pending[:i+1])
			pending = pending[i+1:]
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "START" {
				continue
			}
			otn := f[1]
			fee, _ := strconv.Atoi(f[2])
			log.add(otn)
			time.Sleep(wait) // the machine's own reaction time
			if fee/100%2 == 0 {
				fmt.Fprintf(master, "OK %s\r\n", otn)
			} else {
				fmt.Fprintf(master, "ERR jammed\r\n")
			}
		}
	}()
}

// serialWorld is a daemon with driver = "serial" on a pty whose scripted
// machine answers after wait.
func serialWorld(t *testing.T, ctx context.Context, wait time.Duration) (*unlockWorld, *startLog) {
	master, port := ptytest.Open(t)
	log := &startLog{path: filepath.Join(t.TempDir(), "starts")}
	serialMachine(master, log, wait)
	return newUnlockWorld(t, ctx, testrig.RigOptions{}, map[string]any{
		"unlock.driver":         "serial",
		"unlock.serial.port":    port,
		"unlock.serial.send":    "START {out_trade_no} {total_fee}\r\n",
		"unlock.serial.expect":  "OK {out_trade_no}",
		"unlock.serial.reject":  "ERR",
		"unlock.serial.timeout": "2s",
	}), log
}

// execWorld is a daemon with driver = "exec" running execProgram.
func execWorld(t *testing.T, ctx context.Context) (*unlockWorld, *startLog) {
	log := &startLog{path: filepath.Join(t.TempDir(), "starts")}
	return newUnlockWorld(t, ctx, testrig.RigOptions{}, map[string]any{
		"unlock.driver": "exec", "unlock.exec.command": []string{execProgram(t, log.path)}, "unlock.exec.timeout": "5s"}), log
}

// TestUnlockDrivers is the end-to-end path with the real daemon binary and
// driver = exec, then driver = serial: paid → delivered → no refund; not
// delivered → refunded; each result published once (no controller acks
// it, nothing re-publishes it).
func TestUnlockDrivers(t *testing.T) {
	if os.Getenv("KIOSKPAY_PROOF") == "" {
		t.Skip("set KIOSKPAY_PROOF=1 to run the subprocess scenarios")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	check := func(u *unlockWorld, log *startLog, otn string, delivered bool) {
		t.Helper()
		want := "delivered"
		if !delivered {
			want = "refunded"
		}
		if !u.waitUntil(20*time.Second, otn+" "+want, func() bool { return u.state(otn) == want }) {
			return
		}
		if delivered {
			u.waitUntil(5*time.Second, "event unlock_delivered", func() bool { return u.count(u.events, otn, "unlock_delivered") == 1 })
		} else {
			u.waitUntil(5*time.Second, "refunded result", func() bool { return u.count(u.results, otn, "refunded") == 1 })
			u.waitUntil(5*time.Second, "event unlock_not_delivered", func() bool { return u.count(u.events, otn, "unlock_not_delivered") == 1 })
		}
		u.waitUntil(5*time.Second, "the paid result", func() bool { return u.count(u.results, otn, "paid") >= 1 })
		if n := log.starts(otn); n != 1 {
			t.Errorf("%s: service started %d times", otn, n)
		}
		switch got := u.refunded(otn); {
		case delivered && got != 0:
			t.Errorf("%s delivered and refunded %d", otn, got)
		case !delivered && got == 0:
			t.Errorf("%s not delivered and not refunded", otn)
		}
	}
	once := func(u *unlockWorld, otns ...string) {
		t.Helper()
		// Longer than the first re-publication delay (5 s) of a result
		// awaiting an ack.
		time.Sleep(6 * time.Second)
		for _, otn := range otns {
			if n := u.count(u.results, otn, "paid"); n != 1 {
				t.Errorf("%s: paid result published %d times", otn, n)
			}
			if n := u.count(u.results, otn, "refunded"); n > 1 {
				t.Errorf("%s: refunded result published %d times", otn, n)
			}
		}
	}
	t.Run("exec", func(t *testing.T) {
		u, log := execWorld(t, ctx)
		a, b := newOTN(), newOTN()
		u.createPay(a, 200) // even yuan: exit 0
		check(u, log, a, true)
		u.createPay(b, 300) // odd: exit 3
		check(u, log, b, false)
		once(u, a, b)
	})
	t.Run("serial", func(t *testing.T) {
		u, log := serialWorld(t, ctx, 50*time.Millisecond)
		a, b := newOTN(), newOTN()
		u.createPay(a, 400)
		check(u, log, a, true)
		u.createPay(b, 500)
		check(u, log, b, false)
		once(u, a, b)
	})
}

// TestUnlockCrash kills the daemon (SIGKILL) during each driver's action
// and checks, after a restart: no service started twice, every payment
// either delivered, refunded after a definite "not delivered", or — for an
// action cut off after it may have reached the machine — flagged
// unlock_interrupted (order, event, status) and neither refunded nor run
// again. KIOSKPAY_UNLOCK_CRASH_ROUNDS (default 4) rounds per driver, each
// killing at a random moment within 1.2 s of the payment.
//
// gpio has its own harness, TestGPIOCrash: the same rounds with the daemon
// inside an emulated arm64 machine, its lines read from qemu's trace.
func TestUnlockCrash(t *testing.T) {
	if os.Getenv("KIOSKPAY_PROOF") == "" {
		t.Skip("set KIOSKPAY_PROOF=1 to run the subprocess scenarios")
	}
	rounds := envInt("KIOSKPAY_UNLOCK_CRASH_ROUNDS", 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	type tally struct{ delivered, refunded, flagged, kills int }
	settle := func(u *unlockWorld, log *startLog, otn string, fee int64, tl *tally) {
		t.Helper()
		var st string
		u.waitUntil(30*time.Second, otn+" settled", func() bool {
			st = u.state(otn)
			return st == "delivered" || st == "refunded" ||
				(st == "paid" && u.count(u.events, otn, "unlock_interrupted") > 0)
		})
		starts := log.starts(otn)
		refunded := u.refunded(otn)
		if starts > 1 {
			t.Errorf("%s: service started %d times", otn, starts)
		}
		switch st {
		case "delivered":
			tl.delivered++
			if refunded != 0 || starts != 1 || fee/100%2 != 0 {
				t.Errorf("%s delivered: starts %d refunded %d fee %d", otn, starts, refunded, fee)
			}
		case "refunded":
			tl.refunded++
			if refunded != fee || fee/100%2 == 0 {
				t.Errorf("%s refunded %d of %d, starts %d", otn, refunded, fee, starts)
			}
		case "paid":
			tl.flagged++
			if refunded != 0 || starts != 1 {
				t.Errorf("%s flagged: starts %d refunded %d", otn, starts, refunded)
			}
			if !u.waitUntil(10*time.Second, "status flag unlock_interrupted", func() bool { return u.hasFlag("unlock_interrupted") }) {
				return
			}
			// A human decides: here, a refund through the operator's path.
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			r, err := u.rig.Ctl.Request(cctx, u.dev, "pay/refund", map[string]any{"out_trade_no": otn, "reason": "operator: interrupted"})
			if err != nil || r.Code != 0 {
				t.Errorf("operator refund %s: %v %s", otn, err, r.Raw)
				return
			}
			u.waitUntil(20*time.Second, otn+" refunded by the operator", func() bool { return u.state(otn) == "refunded" })
			u.waitUntil(10*time.Second, "status flag cleared", func() bool { return !u.hasFlag("unlock_interrupted") })
		}
		// Whatever happened, nothing ran it again after the restart.
		time.Sleep(300 * time.Millisecond)
		if n := log.starts(otn); n != starts {
			t.Errorf("%s: service started again after settling (%d → %d)", otn, starts, n)
		}
	}
	run := func(t *testing.T, u *unlockWorld, log *startLog) {
		var tl tally
		for round := 1; round <= rounds; round++ {
			otn := newOTN()
			fee := int64(100*(1+rnd.IntN(4)) + 50) // 1.5–4.5 yuan, 0.5 s of work
			u.createPay(otn, fee)
			// Kill at a random moment within 1.2 s of the payment: before
			// the poll (300 ms) found it, before the driver reached the
			// machine, while the machine works (500 ms), or after.
			time.Sleep(time.Duration(rnd.IntN(1200)) * time.Millisecond)
			if err := u.d.Kill(); err != nil {
				t.Fatal(err)
			}
			tl.kills++
			u.start()
			settle(u, log, otn, fee, &tl)
		}
		t.Logf("UNLOCKCRASH %s rounds=%d kills=%d delivered=%d refunded=%d flagged=%d failed=%v",
			t.Name(), rounds, tl.kills, tl.delivered, tl.refunded, tl.flagged, t.Failed())
	}
	t.Run("exec", func(t *testing.T) {
		u, log := execWorld(t, ctx)
		t.Cleanup(func() { killPrograms(log.path) })
		run(t, u, log)
	})
	t.Run("serial", func(t *testing.T) {
		u, log := serialWorld(t, ctx, 500*time.Millisecond)
		run(t, u, log)
	})
}

// killPrograms ends service programs a killed daemon left running (they
// run in their own process group; under systemd the unit's cgroup is
// killed with the daemon).
func killPrograms(log string) {
	b, _ := os.ReadFile(log)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			if pid, err := strconv.Atoi(f[1]); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}
