package store

import (
	"bytes"
	"context"
	"time"
)

// Retention walks the time index from its oldest entry and stops at the
// cutoff, so a pass costs what is due (plus the old orders it must keep:
// live ones, those with an unacknowledged result, those updated since),
// never the whole history. It deletes in small transactions so a create
// waiting for the write lock waits one short batch at most. What a batch
// costs depends on the keys: orders numbered in sequence lie side by side
// and a batch rewrites a few pages, orders with random numbers are spread
// over the whole bucket and every deletion rewrites a page of its own
// (and the commit writes and fsyncs them all). So the batch size adapts:
// halved while a batch takes more than twice PruneBudget, commit
// included, doubled while it takes less than half.

// Retention batch bounds.
const (
	// PruneBatch is the most orders one retention transaction deletes.
	PruneBatch = 256
	// PruneBudget is what one retention transaction should take, commit
	// included; the batch size follows it (and the transaction stops
	// looking for more to delete once it has spent it).
	PruneBudget = 10 * time.Millisecond
	// pruneMinBatch is the smallest batch the size adapts down to.
	pruneMinBatch = 8
	// pruneVisit bounds the index entries one transaction looks at
	// (entries kept are looked at again by the next pass).
	pruneVisit = 4 * PruneBatch
)

// PruneStats is what one Prune call did.
type PruneStats struct {
	Deleted int
	Batches int
	// Longest is the longest batch transaction (commit included).
	Longest time.Duration
}

// Prune deletes finished orders last updated before now minus the
// retention, except those with work left (live) or a result still in the
// outbox (not yet acknowledged). It commits every batch on its own and
// calls pause between batches (nil: none), where the caller may yield to
// other writers; ctx ends it between batches.
func (db *DB) Prune(ctx context.Context, now time.Time, pause func(batch time.Duration)) (PruneStats, error) {
	cutoff := now.Add(-db.retention)
	var st PruneStats
	var from []byte
	size := PruneBatch / 4
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		start := time.Now()
		n, next, err := db.pruneBatch(cutoff, from, size)
		took := time.Since(start)
		switch {
		case took > 2*PruneBudget:
			size = max(size/2, pruneMinBatch)
		case took < PruneBudget/2 && n == size:
			size = min(size*2, PruneBatch)
		}
		st.Deleted += n
		st.Batches++
		st.Longest = max(st.Longest, took)
		if err != nil || next == nil {
			return st, err
		}
		from = next
		if pause != nil {
			pause(took)
		}
	}
}

// pruneBatch deletes up to size due orders from the time index entry from
// (the oldest when nil) on, and returns where the next batch starts (nil
// when the cutoff or the end was reached).
func (db *DB) pruneBatch(cutoff time.Time, from []byte, size int) (int, []byte, error) {
	var (
		n    int
		next []byte
	)
	err := db.Update(func(t *Tx) error {
		n, next = 0, nil
		unacked := map[string]bool{}
		err := t.OutboxHeads(func(h OutboxHead) bool {
			if h.Kind == KindResult {
				unacked[h.OutTradeNo] = true
			}
			return true
		})
		if err != nil {
			return err
		}
		byTime := t.tx.Bucket(bucketByTime)
		orders := t.tx.Bucket(bucketOrders)
		live := t.tx.Bucket(bucketLive)
		limit := uint64(cutoff.UnixNano())
		start := time.Now()
		var dead [][]byte
		var gone [][]byte
		c := byTime.Cursor()
		k, _ := c.First()
		if from != nil {
			k, _ = c.Seek(from)
		}
		for visited := 0; k != nil; k, _ = c.Next() {
			if len(k) < 8 || be.Uint64(k) >= limit {
				break // created at or after the cutoff: nothing later is due
			}
			if n >= size || visited >= pruneVisit || time.Since(start) > PruneBudget {
				next = bytes.Clone(k)
				break
			}
			visited++
			name := k[8:]
			if live.Get(name) != nil || unacked[string(name)] {
				continue
			}
			if orders.Get(name) == nil {
				dead = append(dead, bytes.Clone(k))
				continue
			}
			o, _, err := t.Order(string(name))
			if err != nil {
				return err
			}
			// Updated since (a late refund): kept until that is old too.
			if o.Live() || !o.UpdatedAt.Before(cutoff) {
				continue
			}
			dead = append(dead, bytes.Clone(k))
			gone = append(gone, bytes.Clone(name))
			n++
		}
		byTime.FillPercent = fillByTime
		orders.FillPercent = fillOrders
		for _, k := range dead {
			if err := byTime.Delete(k); err != nil {
				return err
			}
		}
		for _, name := range gone {
			if err := orders.Delete(name); err != nil {
				return err
			}
		}
		if len(gone) > 0 {
			return t.addCount(-int64(len(gone)))
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return n, next, nil
}
