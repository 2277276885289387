// Package store persists kioskpay's orders in bbolt: the order records, an
// index of live orders, an inbox of raw inbound messages, an outbox of
// messages to publish, and the device-wide result sequence.
//
// Every state change and the messages it produces are written in one
// transaction, and every transaction is fsynced before it returns, so the
// engine can follow one rule: commit, then act.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this package writes. Opening a file written
// by a newer version is refused rather than misread. Schema 2: compact
// order records (record.go), terminal orders with work left in the live
// index, the order count in the meta bucket; a schema-1 file is upgraded
// when opened (upgrade.go).
const SchemaVersion = 2

// DefaultRetention is how long finished orders are kept.
const DefaultRetention = 90 * 24 * time.Hour

var (
	bucketMeta   = []byte("meta")
	bucketOrders = []byte("orders")
	bucketLive   = []byte("live")
	bucketByTime = []byte("bytime")
	bucketInbox  = []byte("inbox")
	bucketOutbox = []byte("outbox")

	keySchema = []byte("schema")
	keySeq    = []byte("seq")
	// keyCount is the number of order records, kept in step by PutOrder
	// and retention so doctor and status need no scan.
	keyCount = []byte("orders")
)

// Fill factors for the buckets whose keys mostly arrive in order. bbolt
// splits a page at half full by default, which suits random inserts but
// leaves a file of appended keys half empty. The time index is appended
// to (creation time first); order numbers are usually sequential too, but
// not always (the controller chooses them), so the orders bucket keeps
// some room.
const (
	fillByTime = 1.0
	fillOrders = 0.9
)

// Options configure Open.
type Options struct {
	// Timeout bounds the wait for the file lock (default 1 s). bbolt's lock
	// is exclusive, so a second daemon on the same state dir fails fast
	// instead of hanging.
	Timeout time.Duration
	// Retention is how long finished orders are kept (default 90 days).
	Retention time.Duration
	// Logger reports a schema upgrade of a large file (default: none).
	Logger *slog.Logger
}

// DB is an open order store.
type DB struct {
	bolt      *bolt.DB
	path      string
	retention time.Duration
	batch     batcher
	log       *slog.Logger
	// decoded counts order records read, so tests can show what a pass
	// costs does not grow with the history.
	decoded atomic.Int64
}

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("another process holds the database lock")

// Open opens (creating if needed) the store at path. A schema-1 file is
// upgraded (upgrade.go); a file a compaction replaced is left for the
// copy (Compact).
func Open(path string, opts Options) (*DB, error) { return open(path, opts, 0) }

func open(path string, opts Options, depth int) (*DB, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	existed, err := checkBeforeOpen(path, opts.Timeout)
	if err != nil {
		return nil, err
	}
	// NoSync stays false: a payment daemon must not lose a committed order.
	var b *bolt.DB
	err = guard(func() error {
		var err error
		b, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, FreelistType: bolt.FreelistMapType})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w (waited %s; is another kioskpayd running on this state dir?)", path, ErrLocked, opts.Timeout)
	}
	if errors.Is(err, ErrDamaged) {
		return nil, &DamagedError{Path: path, Reason: err.Error()}
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if existed {
		if err := guard(func() error { return b.View(checkLive) }); err != nil {
			b.Close()
			return nil, &DamagedError{Path: path, Reason: err.Error()}
		}
	}
	db := &DB{bolt: b, path: path, retention: opts.Retention, log: opts.Logger}
	var superseded []byte
	err = guard(func() error {
		return db.bolt.Update(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketMeta, bucketOrders, bucketLive, bucketByTime, bucketInbox, bucketOutbox} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			meta := tx.Bucket(bucketMeta)
			if v := meta.Get(keySuperseded); v != nil {
				superseded = bytes.Clone(v)
				return errSuperseded
			}
			var n uint64
			if v := meta.Get(keySchema); len(v) == 8 {
				n = binary.BigEndian.Uint64(v)
			}
			if n > SchemaVersion {
				return fmt.Errorf("schema version %d is newer than this build supports (%d)", n, SchemaVersion)
			}
			if n < 2 {
				if err := db.upgrade(&Tx{tx: tx, db: db}); err != nil {
					return fmt.Errorf("upgrade to schema %d: %w", SchemaVersion, err)
				}
			}
			return meta.Put(keySchema, u64(SchemaVersion))
		})
	})
	if errors.Is(err, errSuperseded) {
		b.Close()
		return reopenCompacted(path, opts, superseded, depth)
	}
	if errors.Is(err, ErrDamaged) {
		b.Close()
		return nil, &DamagedError{Path: path, Reason: err.Error()}
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Close closes the database.
func (db *DB) Close() error { return db.bolt.Close() }

// Update runs fn in a read-write transaction, committed (and fsynced) when fn
// returns nil and rolled back entirely otherwise. A damaged page met on the
// way is an error wrapping ErrDamaged, and nothing is written.
func (db *DB) Update(fn func(tx *Tx) error) error {
	return guard(func() error {
		return db.bolt.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, db: db}) })
	})
}

// View runs fn in a read-only transaction. A damaged page met on the way
// is an error wrapping ErrDamaged.
func (db *DB) View(fn func(tx *Tx) error) error {
	return guard(func() error {
		return db.bolt.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, db: db}) })
	})
}

// Tx is a store transaction with typed accessors. It is valid only inside
// the Update or View callback.
type Tx struct {
	tx *bolt.Tx
	db *DB // nil in the checks, which read a file without a DB
}

// Decoded is how many order records were read since Open: what a pass
// over the live orders costs, for tests and benchmarks.
func (db *DB) Decoded() int64 { return db.decoded.Load() }

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// ---- orders ----

// Order loads an order; ok is false when there is none.
func (t *Tx) Order(outTradeNo string) (o Order, ok bool, err error) {
	v := t.tx.Bucket(bucketOrders).Get([]byte(outTradeNo))
	if v == nil {
		return Order{}, false, nil
	}
	if t.db != nil {
		t.db.decoded.Add(1)
	}
	if err := decodeOrder(v, &o); err != nil {
		return Order{}, false, fmt.Errorf("decode order %s: %w", outTradeNo, err)
	}
	return o, true, nil
}

// OrderCount is the number of orders in the store, read from the meta
// bucket (no scan).
func (t *Tx) OrderCount() uint64 {
	if v := t.tx.Bucket(bucketMeta).Get(keyCount); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// addCount moves the order count by d.
func (t *Tx) addCount(d int64) error {
	n := int64(t.OrderCount()) + d
	return t.tx.Bucket(bucketMeta).Put(keyCount, u64(uint64(max(n, 0))))
}

func timeKey(t time.Time, outTradeNo string) []byte {
	k := u64(uint64(t.UnixNano()))
	return append(k, outTradeNo...)
}

// PutOrder writes an order and keeps the live and time indexes and the
// order count in step. CreatedAt must not change once written.
func (t *Tx) PutOrder(o Order) error {
	b, err := encodeOrder(o)
	if err != nil {
		return err
	}
	key := []byte(o.OutTradeNo)
	orders := t.tx.Bucket(bucketOrders)
	orders.FillPercent = fillOrders
	if orders.Get(key) == nil {
		byTime := t.tx.Bucket(bucketByTime)
		byTime.FillPercent = fillByTime
		if err := byTime.Put(timeKey(o.CreatedAt, o.OutTradeNo), nil); err != nil {
			return err
		}
		if err := t.addCount(1); err != nil {
			return err
		}
	}
	if err := orders.Put(key, b); err != nil {
		return fmt.Errorf("put order %s: %w", o.OutTradeNo, err)
	}
	live := t.tx.Bucket(bucketLive)
	if !o.Live() {
		return live.Delete(key)
	}
	return live.Put(key, []byte(o.State))
}

// LiveStates calls fn with the number and state of every live order
// until fn returns false, from the index alone: no record is read.
func (t *Tx) LiveStates(fn func(outTradeNo string, s State) bool) error {
	c := t.tx.Bucket(bucketLive).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if !fn(string(k), State(v)) {
			return nil
		}
	}
	return nil
}

// LiveOrders returns every live order (see Order.Live): those in a
// non-terminal state and terminal ones with work left.
func (t *Tx) LiveOrders() ([]Order, error) {
	var out []Order
	err := t.tx.Bucket(bucketLive).ForEach(func(k, _ []byte) error {
		o, ok, err := t.Order(string(k))
		if err != nil {
			return err
		}
		if ok {
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

// Orders calls fn for orders newest first, starting after the order named
// by after (all when ""), until fn returns false.
func (t *Tx) Orders(after string, fn func(o Order) bool) error {
	c := t.tx.Bucket(bucketByTime).Cursor()
	var k []byte
	if after == "" {
		k, _ = c.Last()
	} else {
		a, ok, err := t.Order(after)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		seek := timeKey(a.CreatedAt, a.OutTradeNo)
		k, _ = c.Seek(seek)
		if k != nil && bytes.Equal(k, seek) {
			k, _ = c.Prev()
		} else if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
	}
	for ; k != nil; k, _ = c.Prev() {
		if more, err := t.visitTimeKey(k, fn); !more || err != nil {
			return err
		}
	}
	return nil
}

// OrdersSince calls fn for orders created at or after since, oldest first.
func (t *Tx) OrdersSince(since time.Time, fn func(o Order) bool) error {
	c := t.tx.Bucket(bucketByTime).Cursor()
	for k, _ := c.Seek(u64(uint64(since.UnixNano()))); k != nil; k, _ = c.Next() {
		if more, err := t.visitTimeKey(k, fn); !more || err != nil {
			return err
		}
	}
	return nil
}

// visitTimeKey calls fn with the order the time-index key k names; more is
// false when fn asks to stop. A key whose order is gone (pruned in this
// transaction) is passed over.
func (t *Tx) visitTimeKey(k []byte, fn func(o Order) bool) (more bool, err error) {
	o, ok, err := t.Order(string(k[8:]))
	if err != nil {
		return false, err
	}
	return !ok || fn(o), nil
}

// NextSeq returns the next device-wide result sequence number. It never
// repeats: the counter lives in the same file as the results it numbers and
// moves only when the transaction commits.
func (t *Tx) NextSeq() (uint64, error) {
	meta := t.tx.Bucket(bucketMeta)
	var n uint64
	if v := meta.Get(keySeq); v != nil {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	if err := meta.Put(keySeq, u64(n)); err != nil {
		return 0, err
	}
	return n, nil
}

// ---- inbox ----

// InboxEntry is a raw inbound message, kept until it has been processed.
type InboxEntry struct {
	ID         uint64    `json:"-"`
	Topic      string    `json:"topic"`
	Payload    []byte    `json:"payload"`
	ReceivedAt time.Time `json:"received_at"`
}

// AddInbox records a raw inbound message and returns its id.
func (t *Tx) AddInbox(e InboxEntry) (uint64, error) {
	b := t.tx.Bucket(bucketInbox)
	id, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	v, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	return id, b.Put(u64(id), v)
}

// Inbox returns the unprocessed messages with ids above after, oldest first.
func (t *Tx) Inbox(after uint64) ([]InboxEntry, error) {
	var out []InboxEntry
	c := t.tx.Bucket(bucketInbox).Cursor()
	for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
		var e InboxEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("decode inbox entry: %w", err)
		}
		e.ID = binary.BigEndian.Uint64(k)
		out = append(out, e)
	}
	return out, nil
}

// DeleteInbox marks a message processed.
func (t *Tx) DeleteInbox(id uint64) error { return t.tx.Bucket(bucketInbox).Delete(u64(id)) }

// ---- outbox ----

// Kinds of outbox entries.
const (
	KindReply  = "reply"
	KindResult = "result"
	KindEvent  = "event"
)

// OutboxEntry is a message waiting to be published.
type OutboxEntry struct {
	ID      uint64 `json:"-"`
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
	Retain  bool   `json:"retain,omitempty"`
	Kind    string `json:"kind"`
	// OutTradeNo ties results to their order (acks, retention).
	OutTradeNo string `json:"out_trade_no,omitempty"`
	// UntilAck keeps the entry after publication, to be re-published at
	// NextAt, until the engine deletes it.
	UntilAck  bool      `json:"until_ack,omitempty"`
	NextAt    time.Time `json:"next_at"`
	Attempts  int       `json:"attempts,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Enqueue adds an outbox entry and returns its id.
func (t *Tx) Enqueue(e OutboxEntry) (uint64, error) {
	b := t.tx.Bucket(bucketOutbox)
	id, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	e.ID = id
	return id, t.PutOutbox(e)
}

// PutOutbox rewrites an existing entry (e.g. its next publication time).
func (t *Tx) PutOutbox(e OutboxEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketOutbox).Put(u64(e.ID), v)
}

// OutboxEntry loads one entry.
func (t *Tx) OutboxEntry(id uint64) (OutboxEntry, bool, error) {
	v := t.tx.Bucket(bucketOutbox).Get(u64(id))
	if v == nil {
		return OutboxEntry{}, false, nil
	}
	var e OutboxEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return e, false, fmt.Errorf("decode outbox entry %d: %w", id, err)
	}
	e.ID = id
	return e, true, nil
}

// Outbox returns every entry, oldest first.
func (t *Tx) Outbox() ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := t.tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
		var e OutboxEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decode outbox entry: %w", err)
		}
		e.ID = binary.BigEndian.Uint64(k)
		out = append(out, e)
		return nil
	})
	return out, err
}

// DeleteOutbox removes an entry.
func (t *Tx) DeleteOutbox(id uint64) error { return t.tx.Bucket(bucketOutbox).Delete(u64(id)) }

// DeleteResults removes the order's pending results (it was acknowledged,
// or its outcome changed) and reports how many there were.
func (t *Tx) DeleteResults(outTradeNo string) (int, error) {
	var ids []uint64
	err := t.OutboxHeads(func(h OutboxHead) bool {
		if h.Kind == KindResult && h.OutTradeNo == outTradeNo {
			ids = append(ids, h.ID)
		}
		return true
	})
	for i, id := range ids {
		if err != nil {
			return i, err
		}
		err = t.DeleteOutbox(id)
	}
	return len(ids), err
}
