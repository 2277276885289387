package store

import (
	"errors"
	"fmt"
	"sync"
)

// batcher groups the Batch calls that arrive while a commit is under way
// into the next transaction ("group commit"): a lone call commits at once,
// as Update does, and calls that pile up behind a commit share one fsync.
// bbolt's own DB.Batch waits up to MaxBatchDelay for company even when none
// comes, which would add that delay to every inbound message of an idle
// device.
type batcher struct {
	mu      sync.Mutex
	pending []*batchCall
	running bool
}

type batchCall struct {
	fn   func(*Tx) error
	err  error
	done chan struct{}
}

// errBatchFn marks the call whose fn failed, so the group is retried
// without it.
type errBatchFn struct {
	i   int
	err error
}

func (e *errBatchFn) Error() string { return e.err.Error() }

// Batch runs fn in a read-write transaction that it may share with other
// Batch calls, and returns once that transaction has committed (and been
// fsynced) or failed: the durability of Update, at a fraction of the
// fsyncs when many callers write at once. It returns fn's error, or the
// commit's.
//
// fn may be called more than once: when another call in its group fails,
// the group is rolled back and run again without that call. fn must
// therefore change nothing but the store through tx, like any function
// passed to Update.
func (db *DB) Batch(fn func(tx *Tx) error) error {
	c := &batchCall{fn: fn, done: make(chan struct{})}
	b := &db.batch
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if b.running {
		b.mu.Unlock()
		<-c.done
		return c.err
	}
	// This caller commits for everyone queued until the queue is empty.
	b.running = true
	for len(b.pending) > 0 {
		group := b.pending
		b.pending = nil
		b.mu.Unlock()
		db.runGroup(group)
		b.mu.Lock()
	}
	b.running = false
	b.mu.Unlock()
	<-c.done
	return c.err
}

// runGroup commits group in one transaction; a call whose fn fails gets its
// error and the rest are committed without it.
func (db *DB) runGroup(group []*batchCall) {
	for len(group) > 0 {
		err := db.Update(func(tx *Tx) error {
			for i, c := range group {
				if err := callSafely(c.fn, tx); err != nil {
					return &errBatchFn{i: i, err: err}
				}
			}
			return nil
		})
		var fe *errBatchFn
		if errors.As(err, &fe) {
			c := group[fe.i]
			c.err = fe.err
			close(c.done)
			group = append(group[:fe.i:fe.i], group[fe.i+1:]...)
			continue
		}
		// Committed, or the commit itself failed: the same for all.
		for _, c := range group {
			c.err = err
			close(c.done)
		}
		return
	}
}

// callSafely turns a panic in fn into its error, so one caller's bug fails
// its own call instead of the goroutine that happens to commit the group.
func callSafely(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: panic in batched transaction: %v", p)
			if fromDamage(p) {
				err = fmt.Errorf("%w: %v", ErrDamaged, p)
			}
		}
	}()
	return fn(tx)
}
