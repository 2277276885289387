package proof

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
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
	"github.com/kioskpay/kioskpay/store"
)

// Damage kinds for store files, as a disk, a file system or a power cut
// leave them. Each takes the file's bytes, bbolt's page size and the first
// page a damage of a few pages starts at.
var damages = []struct {
	name   string
	damage func(b []byte, ps, at int, rnd *rand.Rand) []byte
	// total: nothing of the newest orders can survive it.
	total bool
	// movable: the damage covers a few pages from at; when those are all
	// pages the store does not use (free pages), it is moved on.
	movable bool
}{
	{"truncated to half", func(b []byte, ps, _ int, _ *rand.Rand) []byte { return b[:len(b)/2/ps*ps] }, true, false},
	{"truncated to three pages", func(b []byte, ps, _ int, _ *rand.Rand) []byte { return b[:min(len(b), 3*ps)] }, true, false},
	{"zero length", func(b []byte, ps, _ int, _ *rand.Rand) []byte { return nil }, true, false},
	{"data pages zeroed", func(b []byte, ps, at int, _ *rand.Rand) []byte {
		clear(b[min(len(b), at*ps):min(len(b), (at+4)*ps)])
		return b
	}, false, true},
	{"data pages random", func(b []byte, ps, at int, rnd *rand.Rand) []byte {
		for i := at * ps; i < min(len(b), (at+4)*ps); i++ {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}, false, true},
	{"a bit flipped in every page header", func(b []byte, ps, _ int, rnd *rand.Rand) []byte {
		for p := 2; p < len(b)/ps; p++ {
			b[p*ps+rnd.IntN(8)] ^= 1 << rnd.IntN(8) // the page id
		}
		return b
	}, false, false},
	{"both meta pages zeroed", func(b []byte, ps, _ int, _ *rand.Rand) []byte {
		clear(b[:min(len(b), 2*ps)])
		return b
	}, false, false},
}

// storePath is the daemon's order store in the world.
func (w *world) storePath() string {
	if w.fs != nil {
		return filepath.Join(w.fs.Dir, "orders.db")
	}
	return filepath.Join(w.rig.Dir, "dev-"+w.dev, "state", "orders.db")
}

// TestDamagedStore runs a daemon with orders in every state, kills it,
// damages its store file in one of the ways a disk or a power cut does, and
// starts it again. It must not crash or stay down: it moves the file aside
// (kept), salvages what it can read, serves, reports store_recovered in its
// status and an event with counts, and settles what it salvaged and what
// it lost with the provider; a payment made while it was down is found.
// When the salvage itself cannot be written (a read-only file system), it
// exits 1 naming the file.
//
//	KIOSKPAY_PROOF=1 go test -run TestDamagedStore -v ./proof
func TestDamagedStore(t *testing.T) {
	if os.Getenv("KIOSKPAY_PROOF") == "" {
		t.Skip("set KIOSKPAY_PROOF=1 to run the subprocess scenarios")
	}
	for i, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := newWorld(t, ctx, testrig.SimOptions{RefundDelay: 200 * time.Millisecond}, map[string]any{
				"payment.poll":       "500ms",
				"unlock.ack_timeout": "20s",
			})
			var mu sync.Mutex
			var events []string
			w.rig.Ctl.OnEvent = func(_ string, ev contract.Event) {
				if ev.OutTradeNo == "" {
					mu.Lock()
					events = append(events, ev.Reason)
					mu.Unlock()
				}
			}
			// History: finished orders, then one paid and acked, one still
			// pending that the customer pays while the daemon is down.
			for range 12 {
				o := &Order{OutTradeNo: newOTN(), Provider: w.provider(), Total: 500, Scenario: "damaged-history", Ack: AckOK}
				if r, ok := waitReply(ctx, w.create(o), 20*time.Second); ok && r.Code == 0 {
					w.payAny(o.OutTradeNo, 0)
					w.waitState(o.OutTradeNo, "delivered", 10*time.Second)
				}
			}
			late := &Order{OutTradeNo: newOTN(), Provider: "wxpay", Total: 700, Scenario: "damaged-pay-while-down", Ack: AckOK}
			if r, ok := waitReply(ctx, w.create(late), 20*time.Second); !ok || r.Code != 0 {
				t.Fatalf("create: %+v", r)
			}
			if err := w.d.Kill(); err != nil {
				t.Fatal(err)
			}
			w.pay(late.OutTradeNo, payment.WxPay, 0)

			path := w.storePath()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// The store's free pages move between runs; damage that lands
			// only on them changes nothing, so it moves on to the next
			// pages until the store's own full check sees it.
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			var bad []byte
			for at := 2; ; at += 4 {
				bad = d.damage(slices.Clone(b), 4096, at, rnd)
				if err := os.WriteFile(path, bad, 0o600); err != nil {
					t.Fatal(err)
				}
				if problems, err := store.Check(path); !d.movable || err != nil || len(problems) > 0 || (at+4)*4096 >= len(b) {
					break
				}
			}
			t.Logf("store of %d bytes damaged (%s): %d bytes", len(b), d.name, len(bad))

			if err := w.d.Start(); err != nil {
				t.Fatal(err)
			}
			on, cancelOn := context.WithTimeout(ctx, 30*time.Second)
			err = w.rig.Ctl.WaitStatus(on, w.dev, func(s contract.Status) bool { return s.Online && slices.Contains(s.Flags, "store_recovered") })
			cancelOn()
			if err != nil {
				t.Fatalf("the daemon did not come back flagged store_recovered: %v (log %s)", err, w.d.Log)
			}
			if c := w.d.Crashes(); len(c) > 0 {
				t.Fatalf("the daemon exited: %v (log %s)", c, w.d.Log)
			}
			kept, _ := filepath.Glob(path + ".damaged-*")
			if len(kept) != 1 {
				t.Errorf("damaged file kept: %v", kept)
			}
			// The order paid while the daemon was down: found by its
			// resume when it was salvaged, reported when it was lost.
			wait := 20 * time.Second
			if d.total {
				wait = 5 * time.Second
			}
			paidFound := w.waitPaidOutcome(late.OutTradeNo, wait)
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				mu.Lock()
				n := len(events)
				mu.Unlock()
				if n >= 2 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			mu.Lock()
			got := slices.Clone(events)
			mu.Unlock()
			t.Logf("DAMAGED %-34s paid order found: %v; events: %q", d.name, paidFound, got)
			if len(got) < 2 || !strings.HasPrefix(got[0], "store_recovered: ") || !strings.Contains(got[0], "salvaged") ||
				!strings.Contains(got[1], "reconciled") {
				t.Errorf("events %q: want store_recovered with counts, then the reconciliation", got)
			}
			// A file with nothing left of the order (all of it lost) leaves
			// no trace to find it by: neither provider lists a merchant's
			// orders of the day (their bills come the next morning).
			if !paidFound && !strings.Contains(strings.Join(got, " "), late.OutTradeNo) && !d.total {
				t.Errorf("the order paid while the daemon was down is neither resumed nor reported")
			}
			if out, err := os.ReadFile(w.d.Log); err == nil && strings.Contains(string(out), "panic:") {
				t.Errorf("the daemon log has a panic (%s)", w.d.Log)
			}
		})
	}

	t.Run("salvage fails", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("a read-only state directory needs a tmpfs mounted as root")
		}
		fs, err := MountTmpfs(filepath.Join(t.TempDir(), "state"), 16<<20)
		if err != nil {
			t.Skipf("no tmpfs: %v", err)
		}
		defer fs.Unmount()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := newWorld(t, ctx, testrig.SimOptions{}, map[string]any{"state_dir": fs.Dir})
		if err := w.d.Kill(); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(fs.Dir, "orders.db")
		if err := os.Truncate(path, 4096); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-o", "remount,ro", fs.Dir).CombinedOutput(); err != nil {
			t.Skipf("remount read-only: %v %s", err, out)
		}
		cmd := exec.Command(w.d.Bin, "-config", w.d.Config)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), path) {
			t.Errorf("exit %d, want 1 naming %s:\n%s", code, path, tail(string(out), 600))
		}
		// Writable again, the daemon recovers by itself (and the world
		// stops it cleanly).
		if out, err := exec.Command("mount", "-o", "remount,rw", fs.Dir).CombinedOutput(); err != nil {
			t.Fatalf("remount read-write: %v %s", err, out)
		}
		if err := w.d.Start(); err != nil {
			t.Fatal(err)
		}
		on, cancelOn := context.WithTimeout(ctx, 30*time.Second)
		defer cancelOn()
		if err := w.rig.Ctl.WaitStatus(on, w.dev, func(s contract.Status) bool { return s.Online && slices.Contains(s.Flags, "store_recovered") }); err != nil {
			t.Errorf("after the file system became writable again: %v", err)
		}
	})
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// flipPageIDs damages a store file the way the crash harness does: a bit
// of the id of the root page and of the freelist page. The check at start
// always finds it, and the records are intact, so the salvage loses
// nothing: the money invariants must hold across it.
func flipPageIDs(path string, rnd func(int) int) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const ps = 4096
	if len(b) < 4*ps {
		return nil
	}
	// The newest meta page names the root and the freelist.
	var root, free uint64
	var txid uint64
	for p := range 2 {
		m := b[p*ps+16:]
		if binary.LittleEndian.Uint32(m) != 0xED0CDAED {
			continue
		}
		if t := binary.LittleEndian.Uint64(m[48:]); t >= txid {
			txid, root, free = t, binary.LittleEndian.Uint64(m[16:]), binary.LittleEndian.Uint64(m[32:])
		}
	}
	for _, id := range []uint64{root, free} {
		if id >= 2 && int(id+1)*ps <= len(b) {
			b[int(id)*ps+rnd(8)] ^= 1 << rnd(8)
		}
	}
	return os.WriteFile(path, b, 0o600)
}
