package store

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// bbolt reads the file through a shared, read-only mapping. Every page a
// reader touches (and, with the kernel's fault-around, its neighbours)
// stays in the process's RSS until memory is short, so a pass over old
// orders (retention deleting orders with random numbers, an operator
// paging through history) would leave the RSS following the file even
// though none of it is the daemon's own memory. ReleaseMemory drops the
// mapping's pages from the process (they stay in the page cache, and the
// next read maps them again); the engine calls it after such passes.

// ReleaseMemory unmaps the store file's resident pages from the process
// (madvise MADV_DONTNEED). For a shared file mapping that is safe while
// others read: a page read afterwards is mapped again from the page cache,
// with the same contents. It runs inside a read transaction, which keeps
// bbolt from moving the mapping meanwhile.
func (db *DB) ReleaseMemory() error {
	return db.View(func(*Tx) error {
		base := db.bolt.Info().Data
		end, err := mappingEnd(base)
		if err != nil || end <= base {
			return err
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, base, end-base, unix.MADV_DONTNEED); e != 0 {
			return fmt.Errorf("release the store's mapped pages: %w", e)
		}
		return nil
	})
}

// mappingEnd finds the end of the mapping that starts at base in
// /proc/self/maps; 0 when there is none (a system without /proc).
func mappingEnd(base uintptr) (uintptr, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rng, _, _ := strings.Cut(sc.Text(), " ")
		lo, hi, ok := strings.Cut(rng, "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && uintptr(start) == base {
			return uintptr(end), nil
		}
	}
	return 0, sc.Err()
}
