package store

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// bbolt reads the file through a shared, read-only mapping. Every page a
// reader touches stays in the process's RSS until memory is short, and
// one touch maps far more than the page: the kernel maps the neighbours
// already in the page cache with it (fault-around, and large folios on
// current kernels; bbolt's MADV_RANDOM does not stop that). Measured here
// (kernel 6.18), a retention batch deleting a few dozen orders with
// random numbers takes ~50 faults and maps ~5 MB;
// 16 such batches mapped 100 MB of a 200,000-order file, and at 1,000,000
// orders the peak reached 383 MB. None of it is the daemon's own memory,
// but it counts in its RSS. ReleaseMemory drops the mapping's pages from
// the process (they stay in the page cache, and the next read maps them
// again); the engine calls it after every retention batch and after other
// passes over old orders.

// ReleaseMemory unmaps the store file's resident pages from the process
// (madvise MADV_DONTNEED). For a shared file mapping that is safe while
// others read: a page read afterwards is mapped again from the page cache,
// with the same contents. It runs inside a read transaction, which keeps
// bbolt from moving the mapping meanwhile, and covers the file as that
// transaction sees it, which the mapping always spans (pages a newer
// transaction appended are left for the next call).
func (db *DB) ReleaseMemory() error {
	return db.View(func(t *Tx) error {
		base, size := db.bolt.Info().Data, uintptr(t.tx.Size())
		if base == 0 || size == 0 {
			return nil
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, base, size, unix.MADV_DONTNEED); e != 0 {
			return fmt.Errorf("release the store's mapped pages: %w", e)
		}
		return nil
	})
}
