package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTemp(t *testing.T, opts Options) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "orders.db")
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db, path
}

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

func order(no string, st State, at time.Time) Order {
	return Order{OutTradeNo: no, State: st, TotalFee: 100, CreatedAt: at, UpdatedAt: at,
		Legs: []Leg{{Provider: "wxpay", State: LegOpen, CodeURL: "weixin://x"}}}
}

func TestReopenKeepsEverything(t *testing.T) {
	db, path := openTemp(t, Options{})
	var seq uint64
	err := db.Update(func(tx *Tx) error {
		o := order("order_0001", Pending, t0)
		o.Flag("amount_mismatch")
		o.Refunds = []Refund{{OutRefundNo: "order_0001R1", Amount: 100, State: RefundPending}}
		if err := tx.PutOrder(o); err != nil {
			return err
		}
		if err := tx.PutOrder(order("order_0002", Delivered, t0.Add(time.Second))); err != nil {
			return err
		}
		if _, err := tx.AddInbox(InboxEntry{Topic: "pay/create", Payload: []byte(`{"a":1}`), ReceivedAt: t0}); err != nil {
			return err
		}
		if _, err := tx.Enqueue(OutboxEntry{Topic: "pay/result", Payload: []byte(`{}`), Kind: KindResult, OutTradeNo: "order_0002", UntilAck: true}); err != nil {
			return err
		}
		var err error
		seq, err = tx.NextSeq()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *Tx) error {
		o, ok, err := tx.Order("order_0001")
		if err != nil || !ok || o.State != Pending || !o.HasFlag("amount_mismatch") || o.Refund("order_0001R1") == nil || o.Legs[0].CodeURL != "weixin://x" {
			t.Fatalf("order after reopen: %+v %v %v", o, ok, err)
		}
		live, err := tx.LiveOrders()
		if err != nil || len(live) != 1 || live[0].OutTradeNo != "order_0001" {
			t.Fatalf("live %+v %v", live, err)
		}
		in, err := tx.Inbox(0)
		if err != nil || len(in) != 1 || string(in[0].Payload) != `{"a":1}` || in[0].ID != 1 {
			t.Fatalf("inbox %+v %v", in, err)
		}
		out, err := tx.Outbox()
		if err != nil || len(out) != 1 || !out[0].UntilAck {
			t.Fatalf("outbox %+v %v", out, err)
		}
		next, err := tx.NextSeq()
		if err != nil || next != seq+1 {
			t.Fatalf("seq after reopen %d, want %d", next, seq+1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLockTimeout(t *testing.T) {
	db, path := openTemp(t, Options{})
	defer db.Close()
	start := time.Now()
	_, err := Open(path, Options{Timeout: 150 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("lock wait took %s", d)
	}
}

func TestSeqMonotonicAcrossReopen(t *testing.T) {
	db, path := openTemp(t, Options{})
	var last uint64
	for round := 0; round < 3; round++ {
		for i := 0; i < 5; i++ {
			err := db.Update(func(tx *Tx) error {
				n, err := tx.NextSeq()
				if n <= last {
					t.Fatalf("seq %d after %d", n, last)
				}
				last = n
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		// A rolled-back transaction must not consume a number that is then
		// reissued differently: the counter only moves on commit.
		_ = db.Update(func(tx *Tx) error {
			_, _ = tx.NextSeq()
			return errors.New("abort")
		})
		db.Close()
		var err error
		if db, err = Open(path, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	defer db.Close()
	if last != 15 {
		t.Fatalf("last seq %d, want 15", last)
	}
}

func TestOutboxAtomicWithOrder(t *testing.T) {
	db, _ := openTemp(t, Options{})
	defer db.Close()
	boom := errors.New("boom")
	err := db.Update(func(tx *Tx) error {
		if err := tx.PutOrder(order("order_0001", Paid, t0)); err != nil {
			return err
		}
		if _, err := tx.Enqueue(OutboxEntry{Topic: "pay/result", Kind: KindResult, OutTradeNo: "order_0001"}); err != nil {
			return err
		}
		if _, err := tx.NextSeq(); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	_ = db.View(func(tx *Tx) error {
		if _, ok, _ := tx.Order("order_0001"); ok {
			t.Fatal("order written by failed transaction")
		}
		if out, _ := tx.Outbox(); len(out) != 0 {
			t.Fatalf("outbox written by failed transaction: %+v", out)
		}
		if live, _ := tx.LiveOrders(); len(live) != 0 {
			t.Fatal("live index written by failed transaction")
		}
		return nil
	})
	_ = db.Update(func(tx *Tx) error {
		if n, _ := tx.NextSeq(); n != 1 {
			t.Fatalf("seq %d after rollback, want 1", n)
		}
		return nil
	})
}

func TestRetention(t *testing.T) {
	db, _ := openTemp(t, Options{Retention: 24 * time.Hour})
	defer db.Close()
	old := t0.Add(-48 * time.Hour)
	err := db.Update(func(tx *Tx) error {
		for _, o := range []Order{
			order("old_delivered", Delivered, old),
			order("old_unacked", Expired, old.Add(time.Second)),
			order("old_live", Paid, old.Add(2*time.Second)),
			order("new_delivered", Delivered, t0.Add(-time.Hour)),
		} {
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
	n, err := prune(t, db, t0)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
	var names []string
	_ = db.View(func(tx *Tx) error {
		return tx.Orders("", func(o Order) bool { names = append(names, o.OutTradeNo); return true })
	})
	if strings.Join(names, ",") != "new_delivered,old_live,old_unacked" {
		t.Fatalf("left %v", names)
	}
	// Once the result is acknowledged the order may go.
	_ = db.Update(func(tx *Tx) error { _, err := tx.DeleteResults("old_unacked"); return err })
	if n, _ := prune(t, db, t0); n != 1 {
		t.Fatalf("pruned %d after ack, want 1", n)
	}
}

func prune(t *testing.T, db *DB, now time.Time) (int, error) {
	t.Helper()
	st, err := db.Prune(context.Background(), now, nil)
	return st.Deleted, err
}

func TestOrdersPaging(t *testing.T) {
	db, _ := openTemp(t, Options{})
	defer db.Close()
	_ = db.Update(func(tx *Tx) error {
		for i, no := range []string{"order_a", "order_b", "order_c", "order_d"} {
			if err := tx.PutOrder(order(no, Delivered, t0.Add(time.Duration(i)*time.Minute))); err != nil {
				return err
			}
		}
		return nil
	})
	page := func(after string, limit int) []string {
		var out []string
		_ = db.View(func(tx *Tx) error {
			return tx.Orders(after, func(o Order) bool { out = append(out, o.OutTradeNo); return len(out) < limit })
		})
		return out
	}
	if got := strings.Join(page("", 2), ","); got != "order_d,order_c" {
		t.Fatal(got)
	}
	if got := strings.Join(page("order_c", 5), ","); got != "order_b,order_a" {
		t.Fatal(got)
	}
	var since []string
	_ = db.View(func(tx *Tx) error {
		return tx.OrdersSince(t0.Add(2*time.Minute), func(o Order) bool { since = append(since, o.OutTradeNo); return true })
	})
	if strings.Join(since, ",") != "order_c,order_d" {
		t.Fatal(since)
	}
}
