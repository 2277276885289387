package device

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/store"
)

// writeHistory fills the store at path with n finished orders of the last
// days and due old ones: what a device that has been in service for long
// holds.
func writeHistory(t *testing.T, path string, n, due int) {
	t.Helper()
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	put := func(prefix string, count int, start time.Time) {
		for b := 0; b < count; b += 1000 {
			err := db.Update(func(tx *store.Tx) error {
				for i := b; i < min(b+1000, count); i++ {
					at := start.Add(time.Duration(i) * time.Second)
					o := store.Order{OutTradeNo: fmt.Sprintf("%s%08d", prefix, i), State: store.Delivered, TotalFee: 100, Subject: "massage chair 15 min",
						Provider: "wxpay", PID: "default", CreatedAt: at, UpdatedAt: at.Add(3 * time.Second), ExpiresAt: at.Add(5 * time.Minute),
						Legs: []store.Leg{{Provider: "wxpay", State: store.LegPaid, Total: 100}}}
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
	}
	put("hist_", n, now.Add(-time.Duration(n)*time.Second-time.Hour))
	put("old_", due, now.Add(-store.DefaultRetention-30*24*time.Hour))
}

// Startup, engine passes and a whole order do not read the history: the
// records read stay a small constant however many finished orders the
// store holds; retention reads only what it deletes, off the loop.
func TestHistoryNotRead(t *testing.T) {
	n := 50_000
	if testing.Short() {
		n = 5_000
	}
	const due = 300
	path := filepath.Join(t.TempDir(), "orders.db")
	writeHistory(t, path, n, due)

	h := newHarnessAt(t, path, nil)
	h.createOK("r1", "order_0001", 1000, "")
	if err := h.wx().pay("order_0001", 0); err != nil {
		t.Fatal(err)
	}
	h.result("order_0001", "paid")
	h.send(contract.TopicAck, ackPayload("order_0001", true))
	h.waitState("order_0001", store.Delivered)
	// Retention runs beside the loop: wait until the due orders are gone.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var count uint64
		_ = h.db.View(func(tx *store.Tx) error { count = tx.OrderCount(); return nil })
		if count == uint64(n+1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d orders left, want %d after retention", count, n+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Many passes later (the loop turns for every message), still nothing
	// of the history was read; an old order can still be queried.
	for i := range 20 {
		h.send(contract.TopicQuery, fmt.Sprintf(`{"request_id":"q%d","out_trade_no":"order_0001"}`, i))
	}
	h.reply("q19")
	h.send(contract.TopicQuery, `{"request_id":"old","out_trade_no":"hist_00000000"}`)
	if r := h.reply("old"); r.Str("out_trade_no") != "hist_00000000" {
		t.Fatalf("query of an old order: %s", r.Payload)
	}
	// The one order was read a few times per step; retention read the
	// due ones once each.
	if got := h.db.Decoded(); got > due+100 {
		t.Fatalf("%d records decoded with %d orders in the history (%d due): work follows the history", got, n, due)
	}
	t.Logf("%d records decoded over startup, a paid order and retention, with %d finished orders stored", h.db.Decoded(), n)
}
