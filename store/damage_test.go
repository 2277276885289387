package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// fixture writes a store of n orders: every 50th is pending, every 50th+1
// paid with its result in the outbox, the rest delivered. It returns the
// file's bytes.
func fixture(t testing.TB, path string, n int) []byte { return history(t, path, n, 0) }

// history is fixture with only the orders from liveFrom on ever live: a
// long history of finished orders and a few recent live ones, as on a
// device.
func history(t testing.TB, path string, n, liveFrom int) []byte {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < n; b += 250 {
		err := db.Update(func(tx *Tx) error {
			for i := b; i < min(b+250, n); i++ {
				o := order(fmt.Sprintf("ord_%07d", i), Delivered, t0.Add(time.Duration(i)*time.Minute))
				o.Subject = "massage chair, fifteen minutes"
				switch i % 50 {
				case 0:
					if i < liveFrom {
						break
					}
					o.State = Pending
				case 1:
					if i < liveFrom {
						break
					}
					o.State, o.Result = Paid, "paid"
					seq, err := tx.NextSeq()
					if err != nil {
						return err
					}
					o.ResultSeq = seq
					if _, err := tx.Enqueue(OutboxEntry{Topic: "pay/result", Kind: KindResult, OutTradeNo: o.OutTradeNo, UntilAck: true,
						Payload: fmt.Appendf(nil, `{"out_trade_no":%q,"status":"paid","seq":%d}`, o.OutTradeNo, seq)}); err != nil {
						return err
					}
				}
				if err := tx.PutOrder(o); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readEverything reads every order of db the way the engine and kioskctl
// do; damage may make some unreadable, never crash.
func readEverything(db *DB) (n int, errs int) {
	err := db.View(func(tx *Tx) error {
		if _, err := tx.LiveOrders(); err != nil {
			errs++
		}
		return tx.Orders("", func(o Order) bool { n++; return true })
	})
	if err != nil {
		errs++
	}
	return n, errs
}

// Each kind of damage: the open either succeeds (the damage lies in pages
// a start does not read) or reports a DamagedError without writing to the
// file; nothing crashes; Recover salvages the rest into a sound store.
func TestDamagedStores(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	good := fixture(t, filepath.Join(dir, "fixture.db"), n)
	ps := 4096
	pages := len(good) / ps
	rnd := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name   string
		damage func([]byte) []byte
		// mustDetect: the check at open finds it.
		mustDetect bool
	}{
		{"zero length", func(b []byte) []byte { return nil }, true},
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }, true},
		{"truncated to three pages", func(b []byte) []byte { return b[:3*ps] }, true},
		{"truncated to two thirds", func(b []byte) []byte { return b[:len(b)*2/3/ps*ps] }, true},
		{"both meta pages zeroed", func(b []byte) []byte { clear(b[:2*ps]); return b }, true},
		{"one meta page zeroed", func(b []byte) []byte { clear(b[:ps]); return b }, false},
		{"data pages zeroed", func(b []byte) []byte { clear(b[10*ps : 20*ps]); return b }, false},
		{"data pages random", func(b []byte) []byte {
			for i := 30 * ps; i < 40*ps; i++ {
				b[i] = byte(rnd.Uint32())
			}
			return b
		}, false},
		{"a bit flipped in a page header", func(b []byte) []byte { b[50*ps+8] ^= 0x08; return b }, false},
		{"a bit flipped in a record", func(b []byte) []byte { b[60*ps+300] ^= 0x40; return b }, false},
		{"every page's first byte flipped", func(b []byte) []byte {
			for p := 2; p < pages; p++ {
				b[p*ps] ^= 0x01
			}
			return b
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "orders.db")
			bad := c.damage(append([]byte(nil), good...))
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := Open(path, Options{})
			var de *DamagedError
			switch {
			case errors.As(err, &de):
				after, _ := os.ReadFile(path)
				if string(after) != string(bad) {
					t.Fatal("a damaged store was written to")
				}
				t.Logf("detected: %s", de.Reason)
			case err != nil:
				t.Fatalf("open: %v (want a DamagedError or success)", err)
			default:
				if c.mustDetect {
					t.Errorf("the check at open missed it")
				}
				got, errs := readEverything(db)
				t.Logf("opened; read %d orders, %d errors", got, errs)
				db.Close()
				problems, err := Check(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("full check: %q", problems)
				if len(problems) == 0 {
					// One meta page is normal after a power cut (bbolt
					// uses the other); a damaged value is found when
					// the order is read. Nothing to recover.
					return
				}
				de = &DamagedError{Path: path, Reason: fmt.Sprint(problems)}
			}
			db, r, err := Recover(path, de.Reason, Options{})
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			t.Logf("%s", r.Summary())
			if _, err := os.Stat(r.Damaged); err != nil {
				t.Errorf("the damaged file was not kept: %v", err)
			}
			got, errs := readEverything(db)
			db.Close()
			if errs != 0 || got != r.Orders {
				t.Errorf("the new store reads %d orders with %d errors; recovery says %d", got, errs, r.Orders)
			}
			if len(bad) >= len(good)/2 && r.Orders < n/3 {
				t.Errorf("salvaged only %d of %d orders from a file with %d of %d bytes", r.Orders, n, len(bad), len(good))
			}
			if problems, err := Check(path); err != nil || len(problems) > 0 {
				t.Errorf("the new store fails the full check: %v %v", problems, err)
			}
			switch c.name {
			case "every page's first byte flipped", "both meta pages zeroed":
				if r.Orders < n-200 {
					t.Errorf("salvaged %d of %d orders", r.Orders, n)
				}
			case "data pages zeroed":
				// Only the orders on the ten zeroed pages may be lost. Which
				// pages bbolt put at 10..19 varies between runs (order
				// leaves or index pages), and a leaf of compact records
				// holds ~25 of these orders (each ≥ ~120 bytes with its key
				// and element header), so the bound is ten leaves of 34.
				const perPage = 4096 / 120
				if lost := n - r.Orders; lost > 10*perPage {
					t.Errorf("salvaged %d of %d orders: lost %d, more than the ten zeroed pages hold (%d each)", r.Orders, n, lost, perPage)
				}
			}
		})
	}
}

// A sound store passes the full check; the salvage of an intact file finds
// every order, the live ones, and the unacknowledged results.
func TestRecoverIntact(t *testing.T) {
	const n = 1000
	path := filepath.Join(t.TempDir(), "orders.db")
	fixture(t, path, n)
	if problems, err := Check(path); err != nil || len(problems) > 0 {
		t.Fatalf("sound file: %v %v", problems, err)
	}
	db, r, err := Recover(path, "test", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The outbox was read whole from the tree: its results carry over as
	// they are.
	if r.Orders != n || r.Live != 2*n/50 || r.Outbox != n/50 || r.Results != 0 || r.LostCount != 0 {
		t.Errorf("recovery %+v; want %d orders, %d live, %d outbox entries", r, n, 2*n/50, n/50)
	}
	err = db.View(func(tx *Tx) error {
		got, err := tx.Recovery()
		if err != nil || got == nil || got.Orders != n {
			t.Errorf("recovery record: %+v %v", got, err)
		}
		var seq []byte = tx.tx.Bucket(bucketMeta).Get(keySeq)
		if binary.BigEndian.Uint64(seq) <= uint64(n/50) {
			t.Errorf("result seq %d would repeat", binary.BigEndian.Uint64(seq))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Reading an order whose page is damaged is an error for that order, not
// a crash, and the other orders stay readable.
func TestDamagedOldOrderPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orders.db")
	good := fixture(t, path, 3000)
	ps := 4096
	bad := append([]byte(nil), good...)
	// Damage leaf pages holding only finished orders (a start reads the
	// live ones).
	hit := 0
	for p := 2; p < len(bad)/ps-40 && hit < 5; p++ {
		h := readHeader(bad[p*ps:])
		if h.flags != flagLeaf || h.id != uint64(p) || h.count < 2 {
			continue
		}
		elems, _ := leafElems(bad[p*ps : (p+1)*ps])
		old := len(elems) > 0
		for _, e := range elems {
			var i int
			_, err := fmt.Sscanf(string(e.key), "ord_%d", &i)
			old = old && err == nil && len(e.value) > 0 && (e.value[0] == '{' || e.value[0] == recordDeflate) && i%50 > 1
		}
		if old {
			binary.LittleEndian.PutUint64(bad[p*ps:], 999999) // the page calls itself another
			hit++
		}
	}
	if hit == 0 {
		t.Fatal("no order page found to damage")
	}
	os.WriteFile(path, bad, 0o600)
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("damage to old orders' pages failed the open: %v", err)
	}
	defer db.Close()
	n, errs := readEverything(db)
	if errs == 0 {
		t.Errorf("reading past damaged pages gave no error (%d orders)", n)
	}
	err = db.View(func(tx *Tx) error {
		_, _, err := tx.Order("ord_0002999")
		return err
	})
	if err != nil {
		t.Errorf("a recent order is unreadable: %v", err)
	}
}

// FuzzOpenDamaged damages a small store file in the ways the fuzzer finds
// (byte patches and truncation) and opens it: the open must succeed or
// report DamagedError, reading must not crash, and Recover must turn any
// damaged file into a sound store.
func FuzzOpenDamaged(f *testing.F) {
	seedPath := filepath.Join(f.TempDir(), "seed.db")
	seed := fixture(f, seedPath, 300)
	f.Add(uint32(0), []byte{}, uint32(len(seed)))
	f.Add(uint32(4096*3+8), []byte{0xff}, uint32(len(seed)))
	f.Add(uint32(0), []byte{}, uint32(len(seed)/2))
	f.Add(uint32(4096*10), make([]byte, 4096), uint32(len(seed)))
	f.Fuzz(func(t *testing.T, off uint32, patch []byte, size uint32) {
		b := append([]byte(nil), seed...)
		if int(off) < len(b) {
			copy(b[off:], patch)
		}
		if int(size) < len(b) {
			b = b[:size]
		}
		path := filepath.Join(t.TempDir(), "orders.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(path, Options{})
		var de *DamagedError
		switch {
		case errors.As(err, &de):
		case err != nil:
			t.Fatalf("open: %v", err)
		default:
			readEverything(db)
			db.Close()
			problems, err := Check(path)
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if len(problems) == 0 {
				return
			}
		}
		db, _, err = Recover(path, "fuzz", Options{})
		if err != nil {
			t.Fatalf("recover: %v", err)
		}
		if _, errs := readEverything(db); errs != 0 {
			t.Errorf("the recovered store has unreadable orders")
		}
		db.Close()
		if problems, err := Check(path); err != nil || len(problems) > 0 {
			t.Errorf("the recovered store fails the full check: %v %v", problems, err)
		}
	})
}

// TestDamageScale measures, at a year's size, what the damaged-store path
// costs: the check at open (bounded by what is live, so about the same for
// any history), the full check, and the salvage (time and heap).
//
//	KIOSKPAY_STORE_SCALE=100000 go test -run TestDamageScale -v ./store
func TestDamageScale(t *testing.T) {
	n := 0
	fmt.Sscan(os.Getenv("KIOSKPAY_STORE_SCALE"), &n)
	if n <= 0 {
		t.Skip("set KIOSKPAY_STORE_SCALE=100000 to measure the damaged-store path at scale")
	}
	path := filepath.Join(t.TempDir(), "orders.db")
	start := time.Now()
	b := history(t, path, n, n-1000)
	t.Logf("fixture: %d orders, %.1f MiB, written in %s", n, float64(len(b))/(1<<20), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	open := time.Since(start)
	db.Close()
	start = time.Now()
	problems, err := Check(path)
	if err != nil || len(problems) > 0 {
		t.Fatalf("check: %v %v", problems, err)
	}
	check := time.Since(start)

	// Truncated to half: detected at open, salvaged.
	os.WriteFile(path, b[:len(b)/2/4096*4096], 0o600)
	start = time.Now()
	_, err = Open(path, Options{})
	var de *DamagedError
	if !errors.As(err, &de) {
		t.Fatalf("open of a truncated file: %v", err)
	}
	detect := time.Since(start)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	start = time.Now()
	db, r, err := Recover(path, de.Reason, Options{})
	if err != nil {
		t.Fatal(err)
	}
	salvage := time.Since(start)
	close(stop)
	<-sampled
	runtime.ReadMemStats(&after)
	db.Close()
	t.Logf("SCALE orders=%d file=%.1fMiB open=%s full_check=%s detect_truncated=%s salvage=%s (salvaged %d, %d live, %d lost) allocated=%.1fMiB peak_heap_in_use=%.1fMiB",
		n, float64(len(b))/(1<<20), open.Round(time.Millisecond), check.Round(time.Millisecond), detect.Round(time.Millisecond),
		salvage.Round(time.Millisecond), r.Orders, r.Live, r.LostCount,
		float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), float64(peak)/(1<<20))
}

// A damaged page id on the path to the inbox and outbox does not lose
// commands recorded but not handled, nor replies not yet published: the
// salvage reads those buckets from the tree, forgiving the id.
func TestRecoverKeepsInboxAndOutbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orders.db")
	fixture(t, path, 200)
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *Tx) error {
		if _, err := tx.AddInbox(InboxEntry{Topic: "pay/create", Payload: []byte(`{"request_id":"waiting"}`), ReceivedAt: t0}); err != nil {
			return err
		}
		_, err := tx.Enqueue(OutboxEntry{Topic: "pay/reply", Kind: KindReply, Payload: []byte(`{"request_id":"unpublished"}`)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, _ := os.ReadFile(path)
	m, err := readMeta(b[:4096])
	if err != nil {
		t.Fatal(err)
	}
	if m2, err := readMeta(b[4096:8192]); err == nil && m2.txid > m.txid {
		m = m2
	}
	b[int(m.root)*4096] ^= 0x10 // the root page's id
	os.WriteFile(path, b, 0o600)
	_, err = Open(path, Options{})
	var de *DamagedError
	if !errors.As(err, &de) {
		t.Fatalf("open: %v, want a DamagedError", err)
	}
	db, r, err := Recover(path, de.Reason, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if r.Inbox != 1 || r.Outbox < 1 {
		t.Fatalf("recovery %+v: want the waiting command and the unpublished reply", r)
	}
	err = db.View(func(tx *Tx) error {
		in, err := tx.InboxHead(10, nil)
		if err != nil || len(in) != 1 || string(in[0].Payload) != `{"request_id":"waiting"}` {
			t.Errorf("inbox %+v %v", in, err)
		}
		found := false
		err = tx.OutboxHeads(func(h OutboxHead) bool { found = found || h.Kind == KindReply; return true })
		if !found {
			t.Errorf("the unpublished reply is gone")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
