package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// The history part: a store of N finished orders is written through the
// store's own API into the state directory of a daemon, which is then
// started on it. Its orders span 120 days, so with the default 90-day
// retention the oldest quarter is due when the daemon starts and
// retention deletes it while the first creates run.

// HistoryRun is one history size with one kind of out_trade_no.
type HistoryRun struct {
	Orders int    `json:"orders"`
	Keys   string `json:"out_trade_no"` // sequential or random
	// FileBytes is the size of the store the generator wrote, InUse the
	// bytes of its pages in use (bbolt grows a file in steps of up to
	// 16 MiB ahead of need); BytesPerOrder is InUse over the orders, what
	// each order costs on disk.
	FileBytes     int64   `json:"file_bytes"`
	InUseBytes    int64   `json:"in_use_bytes"`
	BytesPerOrder float64 `json:"bytes_per_order"`
	GenerateSec   float64 `json:"generate_sec"`
	// StartupMS is process start → the retained status says online.
	StartupMS float64 `json:"startup_to_ready_ms"`
	// FirstCreateMS is the first create after ready (retention running).
	FirstCreateMS float64 `json:"first_create_ms"`
	// DuringRetention are creates while retention deleted the due orders;
	// Without the same number of creates afterwards, and more.
	DuringRetention Stat    `json:"create_during_retention_ms"`
	Without         Stat    `json:"create_without_retention_ms"`
	Pruned          int     `json:"pruned"`
	RetentionSec    float64 `json:"retention_sec"`
	LongestBatchMS  float64 `json:"longest_retention_batch_ms"`
	// RSS after an hour-equivalent of work: retention, the creates above,
	// HourOrders paid orders and queries of old orders.
	HourOrders int   `json:"hour_orders"`
	RSS        int64 `json:"rss_after_hour"`
	RSSAnon    int64 `json:"rss_after_hour_anon"`
	Peak       int64 `json:"peak_rss"`
}

// historyOrder is the typical shape of a finished order: subject of about
// 20 characters, custom under 64 bytes, one leg, four transitions.
func historyOrder(otn string, at time.Time) store.Order {
	st := func(i int) time.Time { return at.Add(time.Duration(i) * 7 * time.Second) }
	return store.Order{
		OutTradeNo: otn, RequestID: "req-" + otn[max(0, len(otn)-8):], Fingerprint: "a1b2c3d4e5f60718",
		Provider: "wxpay", PID: "default", TotalFee: 1500, Subject: "Massage chair 15 min", Type: "massage_15",
		Custom: json.RawMessage(`{"seat":3,"site":"mall-2f-east","operator":"op-17"}`),
		Expire: 5 * time.Minute,
		State:  store.Delivered, Status: store.StatusPaid,
		Legs: []store.Leg{{Provider: payment.WxPay, State: store.LegPaid, CodeURL: "weixin://wxpay/bizpayurl?pr=" + otn[max(0, len(otn)-10):],
			Total: 1500, PayerTotal: 1500, TransactionID: "42000012" + otn[max(0, len(otn)-20):], PaidAt: st(2)}},
		Winner: payment.WxPay, PaidFee: 1500, TransactionID: "42000012" + otn[max(0, len(otn)-20):], PaidAt: st(2),
		CreatedAt: at, UpdatedAt: st(3), ExpiresAt: at.Add(5 * time.Minute), AckDeadline: st(2).Add(30 * time.Second), Acked: true,
		Result: "paid", ResultSeq: 1,
		Transitions: []store.Transition{
			{From: store.Creating, To: store.Pending, At: st(0), Reason: "created"},
			{From: store.Pending, To: store.Paid, At: st(2), Reason: "paid"},
			{From: store.Paid, To: store.Delivered, At: st(3), Reason: "ack"},
			{From: store.Delivered, To: store.Delivered, At: st(3), Reason: "result_acked"},
		},
	}
}

// writeHistory writes n finished orders into a new store at path, created
// evenly over the 120 days before now, in commits of 5,000.
func writeHistory(path string, n int, random bool, now time.Time) error {
	db, err := store.Open(path, store.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	span := 120 * 24 * time.Hour
	step := span / time.Duration(n)
	start := now.Add(-span)
	rnd := make([]byte, 10)
	for b := 0; b < n; b += 5000 {
		err := db.Update(func(tx *store.Tx) error {
			for i := b; i < min(b+5000, n); i++ {
				otn := fmt.Sprintf("KP%018d", i)
				if random {
					_, _ = rand.Read(rnd)
					otn = hex.EncodeToString(rnd)
				}
				if err := tx.PutOrder(historyOrder(otn, start.Add(time.Duration(i)*step))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return db.Close()
}

// measureHistory runs every history size with each kind of key.
func (b *bench) measureHistory(ctx context.Context, rep *Report) error {
	for _, n := range b.o.historySizes {
		for _, keys := range b.o.historyKeys {
			r, err := b.historyRun(ctx, n, keys)
			rep.History = append(rep.History, r)
			if err != nil {
				return fmt.Errorf("%d orders, %s: %w", n, keys, err)
			}
			b.log.Info("history", "orders", n, "keys", keys, "bytes_per_order", r.BytesPerOrder, "startup_ms", r.StartupMS,
				"first_create_ms", r.FirstCreateMS, "p99_during", r.DuringRetention.P99, "p99_without", r.Without.P99, "rss", r.RSS)
		}
	}
	return nil
}

func (b *bench) historyRun(ctx context.Context, n int, keys string) (HistoryRun, error) {
	r := HistoryRun{Orders: n, Keys: keys, HourOrders: b.o.historyHour}
	device := fmt.Sprintf("hist-%d-%s", n, keys)
	d, err := b.rig.Daemon(device, map[string]any{
		"payment.poll": b.o.poll, "payment.provider": b.o.provider, "unlock.ack_timeout": "30s",
	})
	if err != nil {
		return r, err
	}
	state := filepath.Join(filepath.Dir(d.Config), "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return r, err
	}
	path := filepath.Join(state, "orders.db")
	start := time.Now()
	if err := writeHistory(path, n, keys == "random", start); err != nil {
		return r, fmt.Errorf("write the history: %w", err)
	}
	r.GenerateSec = time.Since(start).Seconds()
	st, err := store.Stat(path)
	if err != nil {
		return r, err
	}
	r.FileBytes, r.InUseBytes, r.BytesPerOrder = st.Size, st.InUse, float64(st.InUse)/float64(n)
	// The generator's pages are in the page cache; a device that just
	// booted has them on flash. Nothing here can drop them without root,
	// so the startup figures are with a warm cache.

	start = time.Now()
	if err := d.Start(); err != nil {
		return r, err
	}
	defer d.Stop(10 * time.Second)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = b.rig.Ctl.WaitOnline(wctx, device)
	cancel()
	if err != nil {
		return r, fmt.Errorf("%w (log %s)", err, d.Log)
	}
	r.StartupMS = ms(time.Since(start))

	createOne := func() (time.Duration, error) {
		otn := b.otn()
		results := b.expect(otn)
		defer b.forget(otn)
		o, err := b.create(ctx, device, otn, 1000, 0)
		if err != nil {
			return 0, err
		}
		return o.created, b.cancelAndWait(ctx, device, otn, results)
	}
	// Creates one after another while retention runs (its log line says
	// when it is done), then as many again without it (at least 50, at
	// most 200).
	var during, without []time.Duration
	retStart := start
	for {
		done := pruneLine(d.Log)
		lat, err := createOne()
		if err != nil {
			return r, err
		}
		if r.FirstCreateMS == 0 {
			r.FirstCreateMS = ms(lat)
		}
		if done != nil {
			without = append(without, lat)
			if r.Pruned == 0 {
				r.Pruned, r.RetentionSec, r.LongestBatchMS = done.Count, time.Since(retStart).Seconds(), done.LongestMS
				if done.TookMS > 0 {
					r.RetentionSec = done.TookMS / 1000
				}
			}
		} else {
			during = append(during, lat)
		}
		if done != nil && len(without) >= max(50, min(len(during), 200)) {
			break
		}
		if time.Since(start) > 30*time.Minute {
			return r, fmt.Errorf("retention did not finish within 30 minutes (log %s)", d.Log)
		}
	}
	r.DuringRetention, r.Without = statOf(during), statOf(without)

	// The rest of an hour's work: paid orders, and an operator paging
	// through old orders.
	for i := 0; i < b.o.historyHour; i++ {
		otn := b.otn()
		results := b.expect(otn)
		o, err := b.create(ctx, device, otn, 1000, 0)
		if err == nil {
			err = b.payAndWait(ctx, b.rig.Sim, device, &o, results)
		}
		b.forget(otn)
		if err != nil {
			return r, err
		}
	}
	after := ""
	for range 5 {
		req := map[string]any{"limit": 50}
		if after != "" {
			req["after"] = after
		}
		rp, err := b.rig.Ctl.Request(ctx, device, contract.TopicOrders, req)
		if err != nil {
			return r, fmt.Errorf("orders: %w", err)
		}
		var page contract.OrdersReply
		_ = rp.Decode(&page)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	r.RSS, r.Peak, _ = testrig.Memory(d.PID())
	r.RSSAnon, _, _ = testrig.MemoryBreakdown(d.PID())
	return r, nil
}

// pruneInfo is the daemon's "pruned finished orders" log line.
type pruneInfo struct {
	Count     int
	LongestMS float64
	TookMS    float64
}

// pruneLine finds the retention's log line in the daemon log; nil until
// it is there.
func pruneLine(log string) *pruneInfo {
	b, err := os.ReadFile(log)
	if err != nil {
		return nil
	}
	i := bytes.Index(b, []byte("pruned finished orders"))
	if i < 0 {
		return nil
	}
	start := bytes.LastIndexByte(b[:i], '\n') + 1
	line := b[start:]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var rec struct {
		Count   int    `json:"count"`
		Longest string `json:"longest_batch"`
		Took    string `json:"took"`
	}
	p := &pruneInfo{}
	if json.Unmarshal(line, &rec) != nil {
		return p // done, figures unknown
	}
	p.Count = rec.Count
	if d, err := time.ParseDuration(rec.Longest); err == nil {
		p.LongestMS = ms(d)
	}
	if d, err := time.ParseDuration(rec.Took); err == nil {
		p.TookMS = ms(d)
	}
	return p
}
