package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Reading bbolt pages with plain reads, bounds-checked: the full check and
// the salvage must work on exactly the files bbolt cannot be trusted with.

const (
	elemSize       = 16   // leaf and branch elements are both 16 bytes
	bucketLeafFlag = 0x01 // a leaf element that is a nested bucket
	inBucketSize   = 16   // root pgid, sequence
)

// pageFile reads the pages of one file.
type pageFile struct {
	f    *os.File
	ps   int64
	size int64
}

// read returns page id with its overflow pages, or an error when it is not
// a sane page that names itself id and fits in the file.
func (pf *pageFile) read(id uint64) (pageHeader, []byte, error) {
	off := int64(id) * pf.ps
	if id > uint64(pf.size/pf.ps) || off+pf.ps > pf.size {
		return pageHeader{}, nil, fmt.Errorf("page %d is past the end of the file", id)
	}
	head := make([]byte, pf.ps)
	if _, err := pf.f.ReadAt(head, off); err != nil {
		return pageHeader{}, nil, fmt.Errorf("page %d: %w", id, err)
	}
	h := readHeader(head)
	if h.id != id {
		return h, nil, fmt.Errorf("page %d calls itself %d", id, h.id)
	}
	n := (int64(h.overflow) + 1) * pf.ps
	if off+n > pf.size || h.overflow > 1<<20 {
		return h, nil, fmt.Errorf("page %d and its %d overflow pages run past the end of the file", id, h.overflow)
	}
	if h.overflow == 0 {
		return h, head, nil
	}
	b := make([]byte, n)
	if _, err := pf.f.ReadAt(b, off); err != nil {
		return h, nil, fmt.Errorf("page %d: %w", id, err)
	}
	return h, b, nil
}

// readAny is read without the check that the page names itself id.
func (pf *pageFile) readAny(id uint64) (pageHeader, []byte, error) {
	b := make([]byte, pageHeaderSize)
	if _, err := pf.f.ReadAt(b, int64(id)*pf.ps); err != nil {
		return pageHeader{}, nil, err
	}
	h := readHeader(b)
	h.id = id
	n := (int64(h.overflow) + 1) * pf.ps
	if int64(id)*pf.ps+n > pf.size || h.overflow > 1<<20 {
		return h, nil, fmt.Errorf("page %d and its %d overflow pages run past the end of the file", id, h.overflow)
	}
	p := make([]byte, n)
	if _, err := pf.f.ReadAt(p, int64(id)*pf.ps); err != nil {
		return h, nil, err
	}
	return h, p, nil
}

// leafElem is one key/value of a leaf page; bucket is set for a nested
// bucket, whose value is its InBucket header (and, for an inline bucket,
// its page).
type leafElem struct {
	key, value []byte
	bucket     bool
}

// leafElems decodes the elements of the leaf page p (header included).
func leafElems(p []byte) ([]leafElem, error) {
	h := readHeader(p)
	if h.flags != flagLeaf {
		return nil, fmt.Errorf("flags %#x, not a leaf page", h.flags)
	}
	n := int(h.count)
	if pageHeaderSize+n*elemSize > len(p) {
		return nil, fmt.Errorf("%d elements do not fit in the page", n)
	}
	out := make([]leafElem, 0, n)
	for i := range n {
		at := pageHeaderSize + i*elemSize
		e := p[at : at+elemSize]
		flags, pos, ks, vs := le.Uint32(e), le.Uint32(e[4:]), le.Uint32(e[8:]), le.Uint32(e[12:])
		start := uint64(at) + uint64(pos)
		end := start + uint64(ks) + uint64(vs)
		if end > uint64(len(p)) {
			return out, fmt.Errorf("element %d runs past the page", i)
		}
		out = append(out, leafElem{key: p[start : start+uint64(ks)], value: p[start+uint64(ks) : end], bucket: flags&bucketLeafFlag != 0})
	}
	return out, nil
}

// branchChildren decodes the child page ids of the branch page p.
func branchChildren(p []byte) ([]uint64, error) {
	h := readHeader(p)
	if h.flags != flagBranch {
		return nil, fmt.Errorf("flags %#x, not a branch page", h.flags)
	}
	n := int(h.count)
	if pageHeaderSize+n*elemSize > len(p) {
		return nil, fmt.Errorf("%d elements do not fit in the page", n)
	}
	out := make([]uint64, 0, n)
	for i := range n {
		at := pageHeaderSize + i*elemSize
		e := p[at : at+elemSize]
		pos, ks := le.Uint32(e), le.Uint32(e[4:])
		if uint64(at)+uint64(pos)+uint64(ks) > uint64(len(p)) {
			return out, fmt.Errorf("element %d runs past the page", i)
		}
		out = append(out, le.Uint64(e[8:]))
	}
	return out, nil
}

// walk visits every page reachable from the root bucket, checking each as
// bbolt would read it, and reports the pages in use. It never maps the
// file and never panics on what it reads.
func (pf *pageFile) walk(m meta) (map[uint64]bool, []string) {
	seen := map[uint64]bool{}
	var problems []string
	report := func(format string, args ...any) {
		if len(problems) < 100 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var bucketPage func(id uint64, path string)
	var inPage func(p []byte, id uint64, path string)
	inPage = func(p []byte, id uint64, path string) {
		switch readHeader(p).flags {
		case flagBranch:
			kids, err := branchChildren(p)
			if err != nil {
				report("page %d (%s): %v", id, path, err)
			}
			for _, k := range kids {
				bucketPage(k, path)
			}
		case flagLeaf:
			elems, err := leafElems(p)
			if err != nil {
				report("page %d (%s): %v", id, path, err)
			}
			for _, e := range elems {
				if !e.bucket {
					continue
				}
				sub := path + "/" + printable(e.key)
				if len(e.value) < inBucketSize {
					report("page %d: bucket %s: header of %d bytes", id, sub, len(e.value))
					continue
				}
				if root := le.Uint64(e.value); root != 0 {
					bucketPage(root, sub)
				} else {
					inPage(e.value[inBucketSize:], id, sub) // inline bucket
				}
			}
		default:
			report("page %d (%s): flags %#x, not a branch or leaf page", id, path, readHeader(p).flags)
		}
	}
	bucketPage = func(id uint64, path string) {
		if id < 2 || id >= m.pgid {
			report("%s: page %d outside the %d pages in use", path, id, m.pgid)
			return
		}
		if seen[id] {
			report("%s: page %d reached twice", path, id)
			return
		}
		h, p, err := pf.read(id)
		if err != nil {
			report("%s: %v", path, err)
			return
		}
		for i := uint64(0); i <= uint64(h.overflow); i++ {
			seen[id+i] = true
		}
		inPage(p, id, path)
	}
	bucketPage(m.root, "")
	return seen, problems
}

// bucketLenient returns the key/values of the top-level bucket name, read
// from the tree as the meta m describes it but forgiving what the salvage
// forgives: a page whose id field is damaged is read all the same. ok is
// false when the bucket could not be read whole (a page on its path is not
// a branch or leaf page, or is missing): then the entries are partial.
func (pf *pageFile) bucketLenient(m meta, name []byte) (entries []leafElem, ok bool) {
	seen := map[uint64]bool{}
	var pageElems func(id uint64) ([]leafElem, bool)
	var inPage func(p []byte) ([]leafElem, bool)
	inPage = func(p []byte) ([]leafElem, bool) {
		switch readHeader(p).flags {
		case flagLeaf:
			elems, err := leafElems(p)
			return elems, err == nil
		case flagBranch:
			kids, err := branchChildren(p)
			all, good := []leafElem(nil), err == nil
			for _, k := range kids {
				es, g := pageElems(k)
				all, good = append(all, es...), good && g
			}
			return all, good
		}
		return nil, false
	}
	pageElems = func(id uint64) ([]leafElem, bool) {
		if id < 2 || seen[id] || int64(id+1)*pf.ps > pf.size {
			return nil, false
		}
		seen[id] = true
		_, p, err := pf.readAny(id)
		if err != nil {
			return nil, false
		}
		return inPage(p)
	}
	top, good := pageElems(m.root)
	for _, e := range top {
		if !e.bucket || string(e.key) != string(name) || len(e.value) < inBucketSize {
			continue
		}
		if root := le.Uint64(e.value); root != 0 {
			es, g := pageElems(root)
			return es, good && g
		}
		es, g := inPage(e.value[inBucketSize:])
		return es, good && g
	}
	return nil, false
}

// checkAll is the full structural check of a file: every reachable page
// sane, none used twice, none both in use and free, and every page below
// the high-water mark either in use or free.
func checkAll(path string) ([]string, error) {
	f, size, err := openSized(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// A file a daemon is writing changes under the walk (pages freed and
	// reused between reads) and would look damaged: take bbolt's lock
	// shared, as a read-only bbolt does, and leave a held file alone.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		return nil, ErrLocked
	}
	m, err := checkFile(f, size)
	if err != nil {
		return []string{err.Error()}, nil
	}
	pf := &pageFile{f: f, ps: int64(m.pageSize), size: size}
	used, problems := pf.walk(m)
	// bbolt runs on one valid meta page, but a damaged other one is still
	// damage (and bbolt's own check would fault on it).
	for id := uint64(0); id < 2; id++ {
		b := make([]byte, pf.ps)
		if _, err := f.ReadAt(b, int64(id)*pf.ps); err != nil {
			problems = append(problems, fmt.Sprintf("meta page %d: %v", id, err))
			continue
		}
		if _, err := readMeta(b); err != nil {
			problems = append(problems, fmt.Sprintf("meta page %d: %v", id, err))
		} else if h := readHeader(b); h.id != id {
			problems = append(problems, fmt.Sprintf("meta page %d calls itself %d", id, h.id))
		}
	}
	free := map[uint64]bool{}
	if m.freelist != noFreelist {
		h, p, err := pf.read(m.freelist)
		if err != nil {
			return append(problems, "freelist: "+err.Error()), nil
		}
		for i := uint64(0); i <= uint64(h.overflow); i++ {
			used[m.freelist+i] = true
		}
		start, count := pageHeaderSize, uint64(h.count)
		if h.count == 0xFFFF {
			start, count = pageHeaderSize+8, le.Uint64(p[pageHeaderSize:])
		}
		for i := uint64(0); i < count && start+int(i+1)*8 <= len(p); i++ {
			id := le.Uint64(p[start+int(i)*8:])
			if free[id] {
				problems = append(problems, fmt.Sprintf("page %d freed twice", id))
			}
			if used[id] {
				problems = append(problems, fmt.Sprintf("page %d both in use and free", id))
			}
			free[id] = true
		}
	}
	used[0], used[1] = true, true
	missing := 0
	for id := uint64(0); id < m.pgid; id++ {
		if !used[id] && !free[id] {
			if missing++; missing <= 10 {
				problems = append(problems, fmt.Sprintf("page %d neither in use nor free", id))
			}
		}
	}
	if missing > 10 {
		problems = append(problems, fmt.Sprintf("… %d pages neither in use nor free in all", missing))
	}
	return problems, nil
}

// openSized opens path for reading and returns its size.
func openSized(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func printable(b []byte) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", b)
		}
	}
	return string(b)
}
