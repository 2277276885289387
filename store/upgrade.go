package store

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// upgrade turns a schema-1 file into a schema-2 one inside the transaction
// that opens it. Records keep their form (both are read); what schema 2
// adds is built: the order count, and terminal orders with work left in
// the live index. Schema 1 found those by reading the last 7 days of
// orders at every start; the upgrade reads the same 7 days once. Counting
// reads every key once (no record is decoded).
func (db *DB) upgrade(t *Tx) error {
	start := time.Now()
	var n uint64
	c := t.tx.Bucket(bucketOrders).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if n++; n%200_000 == 0 {
			db.log.Info("store upgrade: counting orders", "path", db.path, "orders", n)
		}
	}
	if err := t.tx.Bucket(bucketMeta).Put(keyCount, u64(n)); err != nil {
		return err
	}
	var work []Order
	err := t.OrdersSince(time.Now().Add(-7*24*time.Hour), func(o Order) bool {
		if o.State.Terminal() && o.Live() {
			work = append(work, o)
		}
		return true
	})
	if err != nil {
		return err
	}
	live := t.tx.Bucket(bucketLive)
	for _, o := range work {
		if err := live.Put([]byte(o.OutTradeNo), []byte(o.State)); err != nil {
			return err
		}
	}
	if n > 0 {
		db.log.Info("store upgraded to schema 2", "path", db.path, "orders", n, "with_work", len(work), "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// Compaction. bbolt reuses the pages it frees but never gives them back to
// the file system, so a file that once held a long history keeps its size.
// Compact writes every bucket into a new file (order records in the
// current form, pages filled), then swaps it in:
//
//  1. the store is opened as the daemon opens it, so a running daemon
//     (which holds the lock) makes Compact fail with ErrLocked;
//  2. the copy is written to path+".compact", fsynced and closed, and
//     stamped with a token;
//  3. the old file is marked superseded by that token (a committed,
//     fsynced write) while its lock is still held;
//  4. the copy is renamed over path and the directory fsynced.
//
// A crash before 3 leaves the old file in use (the partial copy is
// removed by the next Compact). After 3, any Open of the old file sees the
// mark: it renames the copy into place when the copy carries the mark's
// token (a crash between 3 and 4), then opens path again. A process that
// had opened the old file before the rename (a daemon started during the
// compaction, waiting for the lock) does the same, so nobody writes to a
// file that is no longer at path.

var (
	keySuperseded = []byte("superseded")
	keyToken      = []byte("compact_token")
	errSuperseded = errors.New("superseded by a compacted copy")
)

// CompactSuffix names the copy while Compact writes it.
const CompactSuffix = ".compact"

// Compaction is what Compact did.
type Compaction struct {
	Before, After int64 // file sizes in bytes
	Orders        uint64
	Took          time.Duration
}

// Compact rewrites the store at path into a new, compact file and swaps it
// in. The daemon must be stopped: Compact takes the store's lock and fails
// with ErrLocked when another process holds it. schema is the layout to
// write: SchemaVersion, or 1 for a downgrade to a build before schema 2
// (JSON records, only non-terminal orders in the live index, no count),
// which such a build reads; this build upgrades it again when it opens it.
func Compact(path string, opts Options, schema uint64) (Compaction, error) {
	if schema != 1 && schema != SchemaVersion {
		return Compaction{}, fmt.Errorf("compact %s: schema %d: this build writes 1 or %d", path, schema, SchemaVersion)
	}
	start := time.Now()
	var res Compaction
	db, err := Open(path, opts)
	if err != nil {
		return res, err
	}
	defer db.Close()
	if st, err := os.Stat(path); err == nil {
		res.Before = st.Size()
	}
	tmp := path + CompactSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("compact %s: remove an old partial copy: %w", path, err)
	}
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	res.Orders, err = db.copyTo(tmp, token, schema)
	if err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySuperseded, token) })
	if err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("compact %s: mark the old file: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		// The old file is marked: the next Open finishes the swap.
		return res, fmt.Errorf("compact %s: swap in the copy: %w", path, err)
	}
	syncDir(path)
	if st, err := os.Stat(path); err == nil {
		res.After = st.Size()
	}
	res.Took = time.Since(start)
	return res, nil
}

// copyTo writes every bucket of db into a new file at dst, in commits of
// a few thousand keys, every page filled, and checks the copy's key counts
// against the original's before it returns. It returns the orders copied.
func (db *DB) copyTo(dst string, token []byte, schema uint64) (uint64, error) {
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, NoSync: true})
	if err != nil {
		return 0, err
	}
	defer out.Close()
	var orders uint64
	err = db.View(func(t *Tx) error {
		return t.tx.ForEach(func(name []byte, src *bolt.Bucket) error {
			var (
				w    *bolt.Tx
				b    *bolt.Bucket
				n, k int
			)
			begin := func() error {
				var err error
				if w, err = out.Begin(true); err != nil {
					return err
				}
				b, err = w.CreateBucketIfNotExists(name)
				if err != nil {
					return err
				}
				b.FillPercent = 1.0
				return nil
			}
			if err := begin(); err != nil {
				return err
			}
			if err := b.SetSequence(src.Sequence()); err != nil {
				w.Rollback()
				return err
			}
			c := src.Cursor()
			for key, v := c.First(); key != nil; key, v = c.Next() {
				if v == nil {
					w.Rollback()
					return fmt.Errorf("bucket %s: unexpected nested bucket %q", name, key)
				}
				if schema == 1 && bytes.Equal(name, bucketLive) && State(v).Terminal() {
					// Schema 1 finds these by reading the last 7 days.
					continue
				}
				if bytes.Equal(name, bucketOrders) {
					var o Order
					if err := decodeOrder(v, &o); err != nil {
						w.Rollback()
						return fmt.Errorf("order %s: %w (run `kioskpayd recover`)", key, err)
					}
					if schema == 1 {
						v, err = json.Marshal(o)
					} else {
						v, err = encodeOrder(o)
					}
					if err != nil {
						w.Rollback()
						return err
					}
					orders++
				}
				if err := b.Put(key, v); err != nil {
					w.Rollback()
					return err
				}
				n++
				if k++; k == 5000 {
					if err := w.Commit(); err != nil {
						return err
					}
					if err := begin(); err != nil {
						return err
					}
					k = 0
				}
			}
			if bytes.Equal(name, bucketMeta) {
				if err := b.Put(keySchema, u64(schema)); err != nil {
					w.Rollback()
					return err
				}
				if err := b.Put(keyCount, u64(0)); err != nil { // set below
					w.Rollback()
					return err
				}
				if err := b.Put(keyToken, token); err != nil {
					w.Rollback()
					return err
				}
				if err := b.Delete(keySuperseded); err != nil {
					w.Rollback()
					return err
				}
			}
			if err := w.Commit(); err != nil {
				return err
			}
			if schema == 1 && bytes.Equal(name, bucketLive) {
				return nil // terminal entries left out
			}
			return checkCopied(out, name, src)
		})
	})
	if err != nil {
		return 0, err
	}
	err = out.Update(func(tx *bolt.Tx) error {
		if schema == 1 {
			return tx.Bucket(bucketMeta).Delete(keyCount)
		}
		return tx.Bucket(bucketMeta).Put(keyCount, u64(orders))
	})
	if err != nil {
		return 0, err
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	return orders, out.Close()
}

// checkCopied compares the number of keys of a copied bucket with the
// original's (in the meta bucket, leaving out what the copy writes anew).
func checkCopied(out *bolt.DB, name []byte, src *bolt.Bucket) error {
	count := func(b *bolt.Bucket) (n int) {
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if bytes.Equal(name, bucketMeta) && (bytes.Equal(k, keyCount) || bytes.Equal(k, keyToken) || bytes.Equal(k, keySuperseded)) {
				continue
			}
			n++
		}
		return n
	}
	want := count(src)
	var got int
	err := out.View(func(tx *bolt.Tx) error { got = count(tx.Bucket(name)); return nil })
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("bucket %s: copied %d keys of %d", name, got, want)
	}
	return nil
}

// reopenCompacted opens path again after the file opened turned out to be
// superseded by a compacted copy, finishing an interrupted swap first.
func reopenCompacted(path string, opts Options, token []byte, depth int) (*DB, error) {
	if depth > 2 {
		return nil, fmt.Errorf("open store %s: %w, and the copy cannot be found", path, errSuperseded)
	}
	tmp := path + CompactSuffix
	if copyToken(tmp) != nil && bytes.Equal(copyToken(tmp), token) {
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("open store %s: finish an interrupted compaction: %w", path, err)
		}
		syncDir(path)
	}
	return open(path, opts, depth+1)
}

// copyToken reads the token of a finished compacted copy at path; nil when
// there is none, or it is still being written (locked) or unreadable.
func copyToken(path string) []byte {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	var token []byte
	_ = guard(func() error {
		b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
		if errors.Is(err, berrors.ErrTimeout) || err != nil {
			return err
		}
		defer b.Close()
		return b.View(func(tx *bolt.Tx) error {
			if m := tx.Bucket(bucketMeta); m != nil {
				token = bytes.Clone(m.Get(keyToken))
			}
			return nil
		})
	})
	return token
}

func syncDir(path string) {
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// FileStats is what Stat reads of a store file.
type FileStats struct {
	// Size is the file's size; InUse the bytes of its pages in use (bbolt
	// grows the file ahead of need and keeps freed pages for reuse).
	Size   int64
	InUse  int64
	Schema uint64
	// Orders is the order count the meta bucket keeps; CountKnown is false
	// for a schema-1 file, which has none until it is next opened.
	Orders     uint64
	CountKnown bool
}

// Stat reads a store file's size, schema and order count with plain reads
// of its meta page and meta bucket, without the lock: it works while the
// daemon runs (what it reads is as of the last commit it finds).
func Stat(path string) (FileStats, error) {
	f, size, err := openSized(path)
	if err != nil {
		return FileStats{}, err
	}
	defer f.Close()
	st := FileStats{Size: size}
	m, err := checkFile(f, size)
	if err != nil {
		return st, &DamagedError{Path: path, Reason: err.Error()}
	}
	pf := &pageFile{f: f, ps: int64(m.pageSize), size: size}
	st.InUse = int64(m.pgid) * int64(m.pageSize)
	if m.freelist != noFreelist {
		h := make([]byte, pageHeaderSize+8)
		if _, err := f.ReadAt(h, int64(m.freelist)*int64(m.pageSize)); err == nil {
			free := uint64(readHeader(h).count)
			if free == 0xFFFF {
				free = le.Uint64(h[pageHeaderSize:])
			}
			// The freelist's own pages are in use but hold no data either.
			free += uint64(readHeader(h).overflow) + 1
			st.InUse -= int64(min(free, m.pgid)) * int64(m.pageSize)
		}
	}
	elems, _ := pf.bucketLenient(m, bucketMeta)
	for _, e := range elems {
		switch {
		case bytes.Equal(e.key, keySchema) && len(e.value) == 8:
			st.Schema = be.Uint64(e.value)
		case bytes.Equal(e.key, keyCount) && len(e.value) == 8:
			st.Orders, st.CountKnown = be.Uint64(e.value), true
		}
	}
	return st, nil
}
