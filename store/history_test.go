package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// liveSet is the live index as a set, read from the index alone.
func liveSet(t *testing.T, db *DB) map[string]State {
	t.Helper()
	m := map[string]State{}
	err := db.View(func(tx *Tx) error {
		return tx.LiveStates(func(otn string, s State) bool { m[otn] = s; return true })
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The live index holds an order exactly while it has work left, through
// every state and through the work a terminal order can still have.
func TestLiveIndexThroughTransitions(t *testing.T) {
	db, _ := openTemp(t, Options{})
	defer db.Close()
	o := order("order_0001", Creating, t0)
	for _, step := range []struct {
		name string
		edit func(o *Order)
		live bool
	}{
		{"creating", func(o *Order) {}, true},
		{"pending", func(o *Order) { o.State = Pending }, true},
		{"closing", func(o *Order) { o.State = Closing }, true},
		{"paid, awaiting the ack", func(o *Order) { o.State = Paid }, true},
		{"delivered", func(o *Order) { o.State = Delivered }, false},
		{"operator refund recorded", func(o *Order) {
			o.Refunds = append(o.Refunds, Refund{OutRefundNo: "order_0001R1", Amount: 100, State: RefundPending})
		}, true},
		{"refund processing", func(o *Order) { o.Refunds[0].State = RefundProcessing }, true},
		{"refund abnormal (waits for a human)", func(o *Order) { o.Refunds[0].State = RefundAbnormal }, true},
		{"refund done", func(o *Order) { o.Refunds[0].State = RefundSuccess; o.State = Refunded }, false},
		{"a leg left to close", func(o *Order) { o.Legs[0].State = LegAbandon }, true},
		{"closed", func(o *Order) { o.Legs[0].State = LegClosed }, false},
		{"refunding again", func(o *Order) { o.State = Refunding }, true},
		{"refund_failed", func(o *Order) { o.State = RefundFailed }, false},
		{"expired", func(o *Order) { o.State = Expired }, false},
		{"failed", func(o *Order) { o.State = Failed }, false},
	} {
		step.edit(&o)
		if err := db.Update(func(tx *Tx) error { return tx.PutOrder(o) }); err != nil {
			t.Fatal(err)
		}
		st, in := liveSet(t, db)[o.OutTradeNo]
		if in != step.live || in && st != o.State {
			t.Errorf("%s: in the live index %v (state %q), want %v", step.name, in, st, step.live)
		}
		var live []Order
		_ = db.View(func(tx *Tx) error { var err error; live, err = tx.LiveOrders(); return err })
		if (len(live) == 1) != step.live {
			t.Errorf("%s: LiveOrders %d", step.name, len(live))
		}
	}
	_ = db.View(func(tx *Tx) error {
		if n := tx.OrderCount(); n != 1 {
			t.Errorf("count %d after rewrites of one order", n)
		}
		return nil
	})
}

// fill writes n finished orders created a minute apart from start, with
// the typical shape of kioskbench's history, in commits of 500.
func fill(t testing.TB, db *DB, prefix string, n int, start time.Time) {
	t.Helper()
	for b := 0; b < n; b += 500 {
		err := db.Update(func(tx *Tx) error {
			for i := b; i < min(b+500, n); i++ {
				at := start.Add(time.Duration(i) * time.Minute)
				if err := tx.PutOrder(finished(fmt.Sprintf("%s%07d", prefix, i), at)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func finished(otn string, at time.Time) Order {
	o := order(otn, Delivered, at)
	o.Subject, o.Type, o.PID, o.Provider = "massage chair 15 min", "massage_15", "default", "wxpay"
	o.Custom = json.RawMessage(`{"seat":3,"site":"mall-2f-east","operator":"op-17"}`)
	o.Legs[0].State, o.Legs[0].Total, o.Legs[0].TransactionID = LegPaid, 100, "4200001234"+otn
	o.Winner, o.PaidFee, o.Status, o.Acked, o.Result = "wxpay", 100, StatusPaid, true, "paid"
	for i, s := range []State{Creating, Pending, Paid, Delivered} {
		o.Transitions = append(o.Transitions, Transition{From: s, To: []State{Pending, Paid, Delivered, Delivered}[i], At: at.Add(time.Duration(i) * time.Second)})
	}
	o.UpdatedAt = at.Add(3 * time.Second)
	return o
}

// Retention stops at the cutoff (the orders after it are never read),
// deletes in batches, and never deletes what has work left or an
// unacknowledged result.
func TestRetentionBatchesStopsAtCutoff(t *testing.T) {
	db, _ := openTemp(t, Options{Retention: 24 * time.Hour})
	defer db.Close()
	now := t0.Add(30 * 24 * time.Hour)
	old := now.Add(-10 * 24 * time.Hour)
	fill(t, db, "old_", 1000, old)                    // due
	fill(t, db, "new_", 3000, now.Add(-20*time.Hour)) // within the retention
	err := db.Update(func(tx *Tx) error {
		live := order("old_live", Refunding, old)
		work := finished("old_work", old)
		work.Refunds = []Refund{{OutRefundNo: "old_workR1", Amount: 100, State: RefundProcessing}}
		late := finished("old_late_refund", old)
		late.UpdatedAt = now.Add(-time.Hour)
		for _, o := range []Order{live, work, late, finished("old_unacked", old)} {
			if err := tx.PutOrder(o); err != nil {
				return err
			}
		}
		_, err := tx.Enqueue(OutboxEntry{Kind: KindResult, OutTradeNo: "old_unacked", UntilAck: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	decoded := db.Decoded()
	pauses := 0
	st, err := db.Prune(context.Background(), now, func(time.Duration) { pauses++ })
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != 1000 {
		t.Errorf("deleted %d, want the 1000 due", st.Deleted)
	}
	if st.Batches < 1000/PruneBatch || pauses != st.Batches-1 {
		t.Errorf("%d batches (%d pauses) for 1000 orders, want at least %d", st.Batches, pauses, 1000/PruneBatch)
	}
	// Read: the due ones and the old ones kept without an index hit.
	if n := db.Decoded() - decoded; n > 1000+10 {
		t.Errorf("retention decoded %d records: it read past the cutoff", n)
	}
	_ = db.View(func(tx *Tx) error {
		for _, otn := range []string{"old_live", "old_work", "old_late_refund", "old_unacked", "new_0000000", "new_0002999"} {
			if _, ok, err := tx.Order(otn); !ok || err != nil {
				t.Errorf("%s deleted (%v)", otn, err)
			}
		}
		if _, ok, _ := tx.Order("old_0000999"); ok {
			t.Error("a due order survived")
		}
		if n := tx.OrderCount(); n != 3004 {
			t.Errorf("count %d, want 3004", n)
		}
		return nil
	})
	// A second pass finds nothing and reads only what it keeps.
	decoded = db.Decoded()
	if st, _ := db.Prune(context.Background(), now, nil); st.Deleted != 0 || st.Batches != 1 {
		t.Errorf("second pass %+v", st)
	}
	if n := db.Decoded() - decoded; n > 2 {
		t.Errorf("second pass decoded %d records", n)
	}
	// Cancelled between batches.
	fill(t, db, "old2_", 1000, old)
	ctx, cancel := context.WithCancel(context.Background())
	st, err = db.Prune(ctx, now, func(time.Duration) { cancel() })
	if !errors.Is(err, context.Canceled) || st.Deleted == 0 || st.Deleted >= 1000 {
		t.Errorf("cancelled prune: %+v %v", st, err)
	}
}

// writeSchema1 writes a store file the way schema 1 did: JSON records,
// only non-terminal orders in the live index, no order count.
func writeSchema1(t *testing.T, path string, orders []Order) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketOrders, bucketLive, bucketByTime, bucketInbox, bucketOutbox} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		tx.Bucket(bucketMeta).Put(keySchema, u64(1))
		tx.Bucket(bucketMeta).Put(keySeq, u64(41))
		for _, o := range orders {
			js, _ := json.Marshal(o)
			tx.Bucket(bucketOrders).Put([]byte(o.OutTradeNo), js)
			tx.Bucket(bucketByTime).Put(timeKey(o.CreatedAt, o.OutTradeNo), nil)
			if !o.State.Terminal() {
				tx.Bucket(bucketLive).Put([]byte(o.OutTradeNo), []byte(o.State))
			}
		}
		id, _ := tx.Bucket(bucketOutbox).NextSequence()
		v, _ := json.Marshal(OutboxEntry{Kind: KindResult, OutTradeNo: "s1_paid", UntilAck: true, Payload: []byte(`{"seq":41}`)})
		return tx.Bucket(bucketOutbox).Put(u64(id), v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A schema-1 file opens as schema 2: every record still reads, the order
// count is there, terminal orders with work left join the live index, and
// records take the compact form when rewritten (or compacted).
func TestSchema1Upgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orders.db")
	now := time.Now().UTC()
	var orders []Order
	for i := range 300 {
		orders = append(orders, finished(fmt.Sprintf("s1_%05d", i), now.Add(-time.Duration(300-i)*time.Hour)))
	}
	paid := order("s1_paid", Paid, now.Add(-time.Hour))
	dup := finished("s1_dup", now.Add(-2*time.Hour))
	dup.Refunds = []Refund{{OutRefundNo: "s1_dupR1", Provider: "alipay", Amount: 100, State: RefundPending}}
	orders = append(orders, paid, dup)
	writeSchema1(t, path, orders)
	before, _ := os.Stat(path)

	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st := liveSet(t, db); len(st) != 2 || st["s1_paid"] != Paid || st["s1_dup"] != Delivered {
		t.Errorf("live index after the upgrade: %v", st)
	}
	err = db.Update(func(tx *Tx) error {
		if n := tx.OrderCount(); n != 302 {
			t.Errorf("count %d, want 302", n)
		}
		for _, o := range orders {
			got, ok, err := tx.Order(o.OutTradeNo)
			if !ok || err != nil || got.Subject != o.Subject || !got.UpdatedAt.Equal(o.UpdatedAt) {
				t.Fatalf("%s after the upgrade: %+v %v", o.OutTradeNo, got, err)
			}
		}
		if v := tx.tx.Bucket(bucketOrders).Get([]byte("s1_00000")); v[0] != '{' {
			t.Errorf("an untouched record was rewritten at open")
		}
		o, _, _ := tx.Order("s1_00000")
		o.Flag("touched")
		if err := tx.PutOrder(o); err != nil {
			return err
		}
		if v := tx.tx.Bucket(bucketOrders).Get([]byte("s1_00000")); v[0] != recordDeflate {
			t.Errorf("a rewritten record is not compact: %q", v[:8])
		}
		if n, _ := tx.NextSeq(); n != 42 {
			t.Errorf("seq %d after the upgrade, want 42", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if st, err := Stat(path); err != nil || st.Schema != SchemaVersion || st.Orders != 302 || !st.CountKnown {
		t.Errorf("Stat %+v %v", st, err)
	}

	res, err := Compact(path, Options{}, SchemaVersion)
	if err != nil {
		t.Fatal(err)
	}
	if res.Orders != 302 || res.After >= before.Size() {
		t.Errorf("compaction %+v (schema-1 file %d bytes)", res, before.Size())
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *Tx) error {
		c := tx.tx.Bucket(bucketOrders).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v[0] != recordDeflate {
				t.Fatalf("%s not compact after compaction", k)
			}
		}
		if out, _ := tx.Outbox(); len(out) != 1 || out[0].OutTradeNo != "s1_paid" {
			t.Errorf("outbox after compaction: %+v", out)
		}
		return nil
	})
	if st := liveSet(t, db); len(st) != 2 {
		t.Errorf("live index after compaction: %v", st)
	}
	db.Close()

	// A downgrade writes schema 1 again, which this build upgrades anew.
	if _, err := Compact(path, Options{}, 1); err != nil {
		t.Fatal(err)
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchema); be.Uint64(v) != 1 || tx.Bucket(bucketMeta).Get(keyCount) != nil {
			t.Errorf("downgraded meta: schema %x, count %x", v, tx.Bucket(bucketMeta).Get(keyCount))
		}
		if v := tx.Bucket(bucketOrders).Get([]byte("s1_00000")); v[0] != '{' {
			t.Errorf("downgraded record %q", v[:8])
		}
		if tx.Bucket(bucketLive).Get([]byte("s1_dup")) != nil {
			t.Error("a terminal order in the downgraded live index")
		}
		return nil
	})
	b.Close()
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if st := liveSet(t, db); len(st) != 2 {
		t.Errorf("live index after downgrade and upgrade: %v", st)
	}
	_ = db.View(func(tx *Tx) error {
		if n := tx.OrderCount(); n != 302 {
			t.Errorf("count %d after downgrade and upgrade", n)
		}
		return nil
	})
}

// Compaction keeps every bucket (sequences included), shrinks a file
// whose history was deleted, refuses while another process holds the
// store, and a crash between marking the old file and the swap is
// finished by the next open.
func TestCompact(t *testing.T) {
	db, path := openTemp(t, Options{Retention: time.Hour})
	fill(t, db, "ord_", 2500, t0)
	err := db.Update(func(tx *Tx) error {
		if err := tx.PutOrder(order("live_1", Pending, t0.Add(time.Hour))); err != nil {
			return err
		}
		if _, err := tx.AddInbox(InboxEntry{Topic: "pay/create", Payload: []byte(`{"a":1}`)}); err != nil {
			return err
		}
		_, err := tx.NextSeq()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := db.Prune(context.Background(), t0.Add(2400*time.Minute), nil); err != nil || st.Deleted < 2000 {
		t.Fatalf("prune %+v %v", st, err)
	}
	if _, err := Compact(path, Options{}, SchemaVersion); !errors.Is(err, ErrLocked) {
		t.Fatalf("compact while the store is open: %v", err)
	}
	want := map[string]bool{}
	_ = db.View(func(tx *Tx) error {
		return tx.Orders("", func(o Order) bool { want[o.OutTradeNo] = true; return true })
	})
	db.Close()

	res, err := Compact(path, Options{}, SchemaVersion)
	if err != nil {
		t.Fatal(err)
	}
	if res.After*2 > res.Before || int(res.Orders) != len(want) {
		t.Errorf("compaction %+v, %d orders kept", res, len(want))
	}
	if _, err := os.Stat(path + CompactSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the copy is left behind: %v", err)
	}
	check := func(db *DB) {
		t.Helper()
		got := map[string]bool{}
		err := db.Update(func(tx *Tx) error {
			if err := tx.Orders("", func(o Order) bool { got[o.OutTradeNo] = true; return true }); err != nil {
				return err
			}
			if n := tx.OrderCount(); int(n) != len(want) {
				t.Errorf("count %d, want %d", n, len(want))
			}
			if in, _ := tx.Inbox(0); len(in) != 1 {
				t.Errorf("inbox %+v", in)
			}
			id, err := tx.AddInbox(InboxEntry{Topic: "x"})
			if id != 2 || err != nil {
				t.Errorf("inbox sequence not kept: id %d", id)
			}
			if n, _ := tx.NextSeq(); n != 2 {
				t.Errorf("seq %d, want 2", n)
			}
			return errors.New("roll back")
		})
		if err == nil || len(got) != len(want) {
			t.Errorf("%d orders after compaction, want %d", len(got), len(want))
		}
		if problems, err := Check(db.Path()); err == nil && len(problems) > 0 {
			t.Errorf("check: %v", problems)
		}
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(db)
	if st := liveSet(t, db); len(st) != 1 {
		t.Errorf("live %v", st)
	}

	// A crash after the old file was marked, before the rename.
	token := []byte("token-0123456789")
	if _, err := db.copyTo(path+CompactSuffix, token, SchemaVersion); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySuperseded, token) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *Tx) error {
		if !slices.Equal(tx.tx.Bucket(bucketMeta).Get(keyToken), token) {
			t.Error("the open did not finish the swap")
		}
		return nil
	})
	check(db)
}

// ReleaseMemory gives back the pages a pass over the history mapped, and
// the store reads the same afterwards.
func TestReleaseMemory(t *testing.T) {
	db, _ := openTemp(t, Options{})
	defer db.Close()
	fill(t, db, "ord_", 8000, t0)
	rss := func() int64 {
		b, _ := os.ReadFile("/proc/self/status")
		var kb int64
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "RssFile:") {
				fmt.Sscan(strings.TrimPrefix(l, "RssFile:"), &kb)
			}
		}
		return kb << 10
	}
	read := func() (n int) {
		_ = db.View(func(tx *Tx) error {
			return tx.Orders("", func(Order) bool { n++; return true })
		})
		return n
	}
	if n := read(); n != 8000 {
		t.Fatalf("read %d", n)
	}
	before := rss()
	if err := db.ReleaseMemory(); err != nil {
		t.Fatal(err)
	}
	after := rss()
	if _, err := os.Stat("/proc/self/status"); err == nil && after > before-2<<20 {
		t.Errorf("file-backed RSS %d → %d after releasing a ~3.5 MB file's pages", before, after)
	}
	if n := read(); n != 8000 {
		t.Fatalf("read %d after the release", n)
	}
}

// Creates, reads, retention and releasing the mapping all at once: every
// order created is there afterwards, every due one gone (run with -race).
func TestRetentionConcurrentWithCreates(t *testing.T) {
	db, _ := openTemp(t, Options{Retention: 24 * time.Hour})
	defer db.Close()
	now := t0.Add(100 * 24 * time.Hour)
	fill(t, db, "old_", 1500, t0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 3)
	go func() {
		_, err := db.Prune(ctx, now, func(time.Duration) { _ = db.ReleaseMemory() })
		errs <- err
	}()
	go func() {
		for ctx.Err() == nil {
			if err := db.View(func(tx *Tx) error {
				return tx.Orders("", func(o Order) bool { return o.OutTradeNo != "" })
			}); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	for i := range 200 {
		err := db.Batch(func(tx *Tx) error { return tx.PutOrder(finished(fmt.Sprintf("new_%04d", i), now)) })
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if _, err := db.Prune(context.Background(), now, nil); err != nil {
		t.Fatal(err)
	}
	if n := countOf(t, db, "old_"); n != 0 {
		t.Fatalf("%d due orders left after retention", n)
	}
	if n := countOf(t, db, "new_"); n != 200 {
		t.Fatalf("%d of 200 creates kept", n)
	}
}

func countOf(t *testing.T, db *DB, prefix string) (n int) {
	t.Helper()
	_ = db.View(func(tx *Tx) error {
		return tx.Orders("", func(o Order) bool {
			if strings.HasPrefix(o.OutTradeNo, prefix) {
				n++
			}
			return true
		})
	})
	return n
}

// The full check leaves a store another process holds alone (its pages
// change under the walk and would look damaged) and says so.
func TestCheckHeldStore(t *testing.T) {
	db, path := openTemp(t, Options{})
	defer db.Close()
	fill(t, db, "ord_", 500, t0)
	problems, err := Check(path)
	if !errors.Is(err, ErrLocked) || len(problems) > 0 {
		t.Fatalf("check of a held store: %v %v", problems, err)
	}
}
