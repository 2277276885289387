package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// A damaged file must never crash the daemon (a crash loop keeps an
// unattended device down) and must never be written to (writing on top of
// a broken page structure spreads the damage). bbolt trusts its file: a
// file shorter than its meta page says is read past its end through the
// mmap (SIGBUS/SIGSEGV, a fatal error in Go), and a page that is not what
// its parent says ends in a panic ("unexpected type/flags", "invalid
// freelist page"). So before bbolt opens a file, Open checks what bbolt
// reads at open — both meta pages, the file size against the page count
// the meta records, the freelist page — and then, inside guard, the pages
// every start reads: the bucket roots, the live index and the orders it
// names, the inbox, the outbox. That is bounded by what is live, never by
// history. A damaged page of an old order is found when that order is read
// and becomes an error for that order (ErrDamaged), never a crash.

// ErrDamaged marks errors caused by a damaged store file.
var ErrDamaged = errors.New("store file damaged")

// DamagedError is what Open returns for a file that failed its check at
// open. The file has not been written to.
type DamagedError struct {
	Path   string
	Reason string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("store %s is damaged: %s", e.Path, e.Reason)
}

// Unwrap makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Unwrap() error { return ErrDamaged }

// guard runs fn so that a fault in mapped memory (a page past the end of a
// truncated file) or a panic in bbolt (a page that is not what it should
// be) becomes an error wrapping ErrDamaged instead of killing the process.
// runtime/debug.SetPanicOnFault turns the fault into a panic on this
// goroutine, which recover then catches.
// Other panics (a bug in the caller's code) go on unwinding.
func guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if p := recover(); p != nil {
			if !fromDamage(p) {
				panic(p)
			}
			err = fmt.Errorf("%w: %v", ErrDamaged, p)
		}
	}()
	return fn()
}

// fromDamage tells a panic caused by the file from one caused by a bug, in
// a deferred function: a fault in mapped memory (a file shorter than bbolt
// thinks; a nil dereference faults near address zero instead), or any
// panic raised in bbolt's own code (its assertions, and the slice bounds
// it trips over when it decodes garbage).
func fromDamage(p any) bool {
	var fault interface{ Addr() uintptr }
	if err, ok := p.(error); ok && errors.As(err, &fault) && fault.Addr() >= 1<<16 {
		return true
	}
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		switch {
		case strings.HasPrefix(f.Function, "runtime."):
		case strings.HasPrefix(f.Function, "go.etcd.io/bbolt"):
			return true
		default:
			return false // the panic came from elsewhere
		}
		if !more {
			return false
		}
	}
}

// bbolt's on-disk layout (go.etcd.io/bbolt v1.4, internal/common): every
// page starts with a 16-byte header (id u64, flags u16, count u16,
// overflow u32); a meta page holds magic, version, page size, flags, the
// root bucket (root pgid, sequence), the freelist pgid, the high-water
// pgid, the txid and an FNV-64a checksum of the fields before it. Numbers
// are in the machine's byte order; the devices kioskpay runs on (amd64,
// arm64, armhf) are all little-endian.
const (
	pageHeaderSize = 16
	metaMagic      = 0xED0CDAED
	metaVersion    = 2
	metaSumLen     = 56 // bytes of the meta the checksum covers
	noFreelist     = ^uint64(0)

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
)

var le, be = binary.LittleEndian, binary.BigEndian

type pageHeader struct {
	id       uint64
	flags    uint16
	count    uint16
	overflow uint32
}

func readHeader(b []byte) pageHeader {
	return pageHeader{id: le.Uint64(b), flags: le.Uint16(b[8:]), count: le.Uint16(b[10:]), overflow: le.Uint32(b[12:])}
}

type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readMeta decodes and validates the meta page in b (a whole page).
func readMeta(b []byte) (meta, error) {
	if len(b) < pageHeaderSize+metaSumLen+8 {
		return meta{}, errors.New("short")
	}
	if h := readHeader(b); h.flags != flagMeta {
		return meta{}, fmt.Errorf("page flags %#x, not a meta page", h.flags)
	}
	m := b[pageHeaderSize:]
	if le.Uint32(m) != metaMagic {
		return meta{}, errors.New("bad magic")
	}
	if v := le.Uint32(m[4:]); v != metaVersion {
		return meta{}, fmt.Errorf("version %d", v)
	}
	h := fnv.New64a()
	h.Write(m[:metaSumLen])
	if h.Sum64() != le.Uint64(m[metaSumLen:]) {
		return meta{}, errors.New("checksum mismatch")
	}
	return meta{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, nil
}

// checkFile checks, reading the file with plain reads (never through a
// mapping), everything bbolt.Open relies on: a meta page that validates,
// a file as long as the pages that meta says are in use, and a freelist
// page that is one. A single invalid meta page is normal after a power cut
// in the middle of a commit (bbolt then uses the other one) and is not
// damage. It returns the meta bbolt will use.
func checkFile(f *os.File, size int64) (meta, error) {
	if size == 0 {
		return meta{}, errors.New("the file is empty (0 bytes)")
	}
	first := make([]byte, 4096)
	n, err := f.ReadAt(first, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return meta{}, fmt.Errorf("read: %w", err)
	}
	first = first[:n]
	m0, err0 := readMeta(first)
	var sizes []int64
	if err0 == nil {
		sizes = append(sizes, int64(m0.pageSize))
	}
	// Page 1 sits one page in; when meta 0 is unreadable the page size is
	// not known, so try the sizes bbolt may have used.
	sizes = append(sizes, 4096, 8192, 16384, 32768, 65536)
	var m1 meta
	err1 := errors.New("not found")
	for _, ps := range slices.Compact(sizes) {
		b := make([]byte, min(ps, 4096))
		if _, err := f.ReadAt(b, ps); err != nil {
			continue
		}
		if m, err := readMeta(b); err == nil && int64(m.pageSize) == ps {
			m1, err1 = m, nil
			break
		}
	}
	var m meta
	switch {
	case err0 != nil && err1 != nil:
		return meta{}, fmt.Errorf("both meta pages are invalid (page 0: %v; page 1: %v)", err0, err1)
	case err0 != nil:
		m = m1
	case err1 != nil || m0.txid >= m1.txid:
		m = m0
	default:
		m = m1
	}
	ps := int64(m.pageSize)
	if ps < 1024 || ps&(ps-1) != 0 {
		return m, fmt.Errorf("page size %d", ps)
	}
	if m.pgid < 4 || m.pgid > uint64(1<<40) {
		return m, fmt.Errorf("the meta page records %d pages", m.pgid)
	}
	if need := int64(m.pgid) * ps; size < need {
		return m, fmt.Errorf("the file is %d bytes, shorter than the %d pages (%d bytes) its meta page records in use: truncated", size, m.pgid, need)
	}
	if m.root < 2 || m.root >= m.pgid {
		return m, fmt.Errorf("root bucket page %d outside the %d pages in use", m.root, m.pgid)
	}
	if err := checkPage(f, ps, m.root, m.pgid, flagLeaf|flagBranch); err != nil {
		return m, fmt.Errorf("root bucket: %w", err)
	}
	if m.freelist != noFreelist {
		if m.freelist < 2 || m.freelist >= m.pgid {
			return m, fmt.Errorf("freelist page %d outside the %d pages in use", m.freelist, m.pgid)
		}
		if err := checkFreelist(f, ps, m); err != nil {
			return m, fmt.Errorf("freelist: %w", err)
		}
	}
	return m, nil
}

// checkPage reads page id's header and checks that it is one of flags and
// names itself, with its overflow pages inside the pages in use.
func checkPage(f *os.File, ps int64, id, pgid uint64, flags uint16) error {
	b := make([]byte, pageHeaderSize)
	if _, err := f.ReadAt(b, int64(id)*ps); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	h := readHeader(b)
	if h.flags&flags == 0 || h.flags&^flags != 0 {
		return fmt.Errorf("page %d has flags %#x", id, h.flags)
	}
	if h.id != id {
		return fmt.Errorf("page %d calls itself %d", id, h.id)
	}
	if id+uint64(h.overflow) >= pgid {
		return fmt.Errorf("page %d runs %d pages past the %d in use", id, h.overflow, pgid)
	}
	return nil
}

// checkFreelist checks the freelist page and the ids on it.
func checkFreelist(f *os.File, ps int64, m meta) error {
	if err := checkPage(f, ps, m.freelist, m.pgid, flagFreelist); err != nil {
		return err
	}
	b := make([]byte, pageHeaderSize+8)
	if _, err := f.ReadAt(b, int64(m.freelist)*ps); err != nil {
		return err
	}
	h := readHeader(b)
	start, count := int64(pageHeaderSize), uint64(h.count)
	if h.count == 0xFFFF {
		count, start = le.Uint64(b[pageHeaderSize:]), pageHeaderSize+8
	}
	if room := (int64(h.overflow)+1)*ps - start; count > uint64(room/8) {
		return fmt.Errorf("%d free page ids do not fit in %d pages", count, h.overflow+1)
	}
	ids := make([]byte, count*8)
	if _, err := f.ReadAt(ids, int64(m.freelist)*ps+start); err != nil {
		return err
	}
	for i := uint64(0); i < count; i++ {
		if id := le.Uint64(ids[i*8:]); id < 2 || id >= m.pgid {
			return fmt.Errorf("free page id %d outside the %d pages in use", id, m.pgid)
		}
	}
	return nil
}

// checkBeforeOpen runs the raw checks on the file at path, holding the
// file lock bbolt uses so that a file another daemon is writing is never
// judged. It reports whether the file existed (a new store needs no
// check).
func checkBeforeOpen(path string, timeout time.Duration) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open store %s: %w", path, err)
	}
	defer f.Close()
	for deadline := time.Now().Add(timeout); ; {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return true, fmt.Errorf("open store %s: %w (waited %s; is another kioskpayd running on this state dir?)", path, ErrLocked, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Closing f releases the lock; bbolt takes it again at once.
	st, err := f.Stat()
	if err != nil {
		return true, fmt.Errorf("open store %s: %w", path, err)
	}
	if _, err := checkFile(f, st.Size()); err != nil {
		return true, &DamagedError{Path: path, Reason: err.Error()}
	}
	return true, nil
}

// checkLive reads, inside a transaction, the pages every start reads: the
// root page of every bucket and the first and last page of each, every
// live order, the inbox and the outbox.
func checkLive(btx *bolt.Tx) error {
	t := &Tx{tx: btx}
	err := btx.ForEach(func(name []byte, b *bolt.Bucket) error {
		c := b.Cursor()
		c.First()
		c.Last()
		return nil
	})
	if err != nil {
		return err
	}
	if btx.Bucket(bucketLive) != nil && btx.Bucket(bucketOrders) != nil {
		if _, err := t.LiveOrders(); err != nil {
			return err
		}
	}
	if btx.Bucket(bucketInbox) != nil {
		if _, _, err := t.InboxSize(); err != nil {
			return err
		}
	}
	if btx.Bucket(bucketOutbox) != nil {
		if _, err := t.Outbox(); err != nil {
			return err
		}
	}
	return nil
}

// Check runs the full consistency check over the whole file: every page
// reachable from the root checked with plain reads (walk), then bbolt's
// own check (Tx.Check: no page used twice or lost, keys in order), which
// runs only on a file whose structure the walk found sound, since bbolt
// checks in a goroutine of its own, where a bad page would crash the
// process. It reads the whole history: it is for doctor and `kioskpayd
// recover`, not for every start. It returns the problems found (none for a
// sound file) and an error when the file could not be checked at all (a
// daemon holds it: ErrLocked).
func Check(path string) ([]string, error) {
	problems, err := checkAll(path)
	if errors.Is(err, ErrLocked) {
		return nil, fmt.Errorf("check store %s: %w (stop kioskpayd first)", path, err)
	}
	if err != nil || len(problems) > 0 {
		return problems, err
	}
	err = guard(func() error {
		b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if errors.Is(err, berrors.ErrTimeout) {
			return ErrLocked
		}
		if err != nil {
			return err
		}
		defer b.Close()
		return b.View(func(tx *bolt.Tx) error {
			for e := range tx.Check() {
				if len(problems) < 100 {
					problems = append(problems, e.Error())
				}
			}
			return checkLive(tx)
		})
	})
	switch {
	case errors.Is(err, ErrLocked):
		return nil, fmt.Errorf("check store %s: %w (stop kioskpayd first)", path, err)
	case errors.Is(err, ErrDamaged):
		problems = append(problems, err.Error())
	case err != nil:
		return nil, fmt.Errorf("check store %s: %w", path, err)
	}
	return problems, nil
}
