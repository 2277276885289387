package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"
)

// EnvRetentionHeap sets the history TestRetentionHeap measures (orders);
// EnvRetentionKeys = "sequential" numbers them in order instead of at
// random.
// EnvRetentionProfile names a file for the heap profile after the pass
// (go tool pprof -top -inuse_space FILE).
const (
	EnvRetentionHeap    = "KIOSKPAY_RETENTION_HEAP"
	EnvRetentionKeys    = "KIOSKPAY_RETENTION_KEYS"
	EnvRetentionProfile = "KIOSKPAY_RETENTION_PROFILE"
)

// TestRetentionHeap measures what a retention pass over a long history of
// random order numbers leaves in the heap, and how much of it is bbolt's
// in-memory freelist: the heap live after the pass against the same file
// opened afresh. Go maps never shrink, and the freelist's maps (free and
// pending pages, and the pages allocated since open) grow with the pages
// the scattered deletions free. A measurement, not a check:
//
//	KIOSKPAY_RETENTION_HEAP=1000000 go test -run TestRetentionHeap -v -timeout 1h ./store
//	KIOSKPAY_RETENTION_HEAP=1000000 KIOSKPAY_RETENTION_KEYS=sequential go test -run TestRetentionHeap -v -timeout 1h ./store
func TestRetentionHeap(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(EnvRetentionHeap))
	if n <= 0 {
		t.Skipf("set %s=<orders> to measure", EnvRetentionHeap)
	}
	path := filepath.Join(t.TempDir(), "orders.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	span := 120 * 24 * time.Hour // the oldest quarter is past the 90 days
	step, start := span/time.Duration(n), now.Add(-span)
	keys := "random"
	if os.Getenv(EnvRetentionKeys) == "sequential" {
		keys = "sequential"
	}
	rnd := make([]byte, 10)
	for b := 0; b < n; b += 5000 {
		err := db.Update(func(tx *Tx) error {
			for i := b; i < min(b+5000, n); i++ {
				otn := fmt.Sprintf("KP%018d", i)
				if keys == "random" {
					_, _ = rand.Read(rnd)
					otn = hex.EncodeToString(rnd)
				}
				if err := tx.PutOrder(finished(otn, start.Add(time.Duration(i)*step))); err != nil {
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
	if db, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	before := liveHeap()
	t0 := time.Now()
	st, err := db.Prune(context.Background(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	after := liveHeap()
	if path := os.Getenv(EnvRetentionProfile); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	free := db.bolt.Stats().FreePageN
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reopened := liveHeap()
	t.Logf("%d %s-key orders: pass deleted %d in %d batches (%s); free pages %d; live heap before %.1f MB, after the pass %.1f MB, same file reopened %.1f MB",
		n, keys, st.Deleted, st.Batches, took.Round(time.Millisecond), free, before, after, reopened)
}

// liveHeap is the heap in use after a full collection, in MB.
func liveHeap() float64 {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / 1e6
}
