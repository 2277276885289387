package proof

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
)

// TestDiskFull runs a burst of orders against a daemon whose state
// directory is a 16 MiB tmpfs, fills the file system in the middle of the
// burst (the kernel's ENOSPC, not a simulation), keeps it full longer than
// the stale bound, then frees it. Every command must get exactly one reply
// without a restart; while full the status says storage_full, an event
// says so, doctor fails its state_dir line, and creates are refused with
// STORAGE_FULL (or COMMAND_STALE once they waited too long); an ack sent
// while full is processed (the paid order ends delivered, not refunded by
// its ack timeout); and every order passes the money invariants after the
// daemon recovered by itself.
//
//	KIOSKPAY_PROOF=1 go test -run TestDiskFull -v ./proof   # as root
func TestDiskFull(t *testing.T) {
	if os.Getenv("KIOSKPAY_PROOF") == "" {
		t.Skip("set KIOSKPAY_PROOF=1 to run the subprocess scenarios")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for the state directory needs root (CI runs as root)")
	}
	fs, err := MountTmpfs(filepath.Join(t.TempDir(), "state"), 16<<20)
	if err != nil {
		t.Skipf("no tmpfs for the state directory: %v", err)
	}
	// Registered first, so it runs after the daemon has stopped.
	t.Cleanup(func() {
		fs.Free()
		fs.Unmount()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const staleAfter = 6 * time.Second
	w := newWorldEnv(t, ctx, testrig.SimOptions{RefundDelay: 200 * time.Millisecond}, map[string]any{
		"state_dir":          fs.Dir,
		"payment.poll":       "500ms",
		"unlock.ack_timeout": "10s",
	}, []string{"KIOSKPAYD_TEST_STALE_AFTER=" + staleAfter.String()})

	var (
		mu       sync.Mutex
		flags    = map[string]bool{}
		events   []string
		replyErr = map[string]string{} // request id → error name
		replies  = map[string]int{}
	)
	w.rig.Ctl.OnStatus = func(dev string, s contract.Status) {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range s.Flags {
			flags[f] = true
		}
	}
	w.rig.Ctl.OnEvent = func(dev string, ev contract.Event) {
		if ev.OutTradeNo == "" {
			mu.Lock()
			events = append(events, ev.Reason)
			mu.Unlock()
		}
	}
	w.rig.Ctl.OnReply = func(dev string, r testrig.Reply) {
		mu.Lock()
		replies[r.RequestID]++
		replyErr[r.RequestID] = string(r.Error)
		mu.Unlock()
	}

	// A paid order whose controller acks only once the disk is full.
	w.mu.Lock()
	gate := make(chan struct{})
	w.ackGate = gate
	w.mu.Unlock()
	held := &Order{OutTradeNo: newOTN(), Provider: "wxpay", Total: 1200, Scenario: "diskfull-ack", Ack: AckOK}
	if r, ok := waitReply(ctx, w.create(held), 10*time.Second); !ok || r.Code != 0 {
		t.Fatalf("create: %+v", r)
	}
	w.pay(held.OutTradeNo, payment.WxPay, 0)
	if !w.waitPaidOutcome(held.OutTradeNo, 10*time.Second) {
		t.Fatalf("no paid result for %s", held.OutTradeNo)
	}

	// The burst: a create every 300 ms, half of them paid.
	var burst sync.WaitGroup
	burst.Add(1)
	go func() {
		defer burst.Done()
		for i := 0; i < 60 && ctx.Err() == nil; i++ {
			o := &Order{OutTradeNo: newOTN(), Provider: w.provider(), Total: int64(100 + i), Scenario: "diskfull", Ack: AckOK}
			ch := w.create(o)
			if i%2 == 0 {
				go func() {
					if r, ok := waitReply(ctx, ch, 60*time.Second); ok && r.Code == 0 {
						w.payAny(o.OutTradeNo, 0)
					}
				}()
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()

	// The disk fills up before the controller's ack for the paid order
	// goes out.
	time.Sleep(1500 * time.Millisecond)
	n, err := fs.Fill()
	if err != nil {
		t.Fatalf("fill: %v", err)
	}
	t.Logf("filled the state directory's file system (%d bytes of filler)", n)
	full, cancelFull := context.WithTimeout(ctx, 20*time.Second)
	err = w.rig.Ctl.WaitStatus(full, w.dev, func(s contract.Status) bool { return slices.Contains(s.Flags, "storage_full") })
	cancelFull()
	if err != nil {
		t.Fatalf("status never said storage_full: %v (log %s)", err, w.d.Log)
	}
	close(gate) // the held ack goes out now, while the disk is full
	w.mu.Lock()
	w.ackGate = nil
	w.mu.Unlock()

	out, _ := exec.Command(w.d.Bin, "doctor", "-config", w.d.Config).CombinedOutput()
	if !strings.Contains(string(out), "storage full") {
		t.Errorf("doctor while the disk is full does not say so:\n%s", out)
	}

	// Full for longer than the stale bound: commands recorded early in
	// this phase and not answered go stale.
	time.Sleep(staleAfter + 4*time.Second)
	if err := fs.Free(); err != nil {
		t.Fatal(err)
	}
	t.Log("freed the file system")
	back, cancelBack := context.WithTimeout(ctx, 20*time.Second)
	err = w.rig.Ctl.WaitStatus(back, w.dev, func(s contract.Status) bool { return s.Online && !slices.Contains(s.Flags, "storage_full") })
	cancelBack()
	if err != nil {
		t.Fatalf("the daemon did not recover by itself: %v (log %s)", err, w.d.Log)
	}
	burst.Wait()
	// The last order of the burst is still on screen: the controller
	// cancels it, and everything must settle.
	for _, o := range w.ledger.Orders() {
		if v, ok := w.daemonView(o.OutTradeNo); ok && v.State == "pending" {
			w.command(o.OutTradeNo, "pay/cancel", map[string]any{})
		}
	}

	w.finish(90 * time.Second)
	for _, v := range w.violations {
		t.Errorf("violation: %s", v)
	}
	if w.d.Starts() != 1 {
		t.Errorf("the daemon was restarted (%d starts); it must recover by itself", w.d.Starts())
	}
	if h, _ := w.ledger.Get(held.OutTradeNo); len(h.Unlocked) == 0 {
		t.Errorf("the held order %s was never delivered", held.OutTradeNo)
	}
	if v, _ := w.daemonView(held.OutTradeNo); v.State != "delivered" {
		t.Errorf("the order acked while the disk was full ended %s, want delivered", v.State)
	}

	mu.Lock()
	defer mu.Unlock()
	outcome := map[string]int{}
	for _, o := range w.ledger.Orders() {
		for id, cmd := range o.Requests {
			if n := replies[id]; n != 1 {
				t.Errorf("%s %s request %s got %d replies, want exactly 1", o.OutTradeNo, cmd, id, n)
			}
			if cmd == "pay/create" {
				name := replyErr[id]
				if name == "" {
					name = "ok"
				}
				outcome[name]++
				switch name {
				case "ok", "STORAGE_FULL", "COMMAND_STALE":
				default:
					t.Errorf("create %s answered %s", o.OutTradeNo, name)
				}
			}
		}
	}
	t.Logf("DISKFULL creates: %v; device events: %q; status flags seen: %v", outcome, events, flags)
	if outcome["STORAGE_FULL"] == 0 {
		t.Errorf("no create was refused with STORAGE_FULL while the disk was full")
	}
	if !flags["storage_full"] {
		t.Errorf("status never carried storage_full")
	}
	var sawFull, sawOK bool
	for _, e := range events {
		sawFull = sawFull || strings.HasPrefix(e, "storage_full")
		sawOK = sawOK || strings.HasPrefix(e, "storage_ok")
	}
	if !sawFull || !sawOK {
		t.Errorf("device events %q: want storage_full and storage_ok", events)
	}
}
