package store

import (
	"errors"
	"io/fs"
	"os"
)

// DefaultReserve is the size of the space reserve kept beside the store.
//
// When the file system fills up, bbolt can commit only while the file has
// free pages of its own; with none, no command can even be recorded, so a
// create could not be refused with STORAGE_FULL and an ack could not be
// taken until space returned. The reserve is a file of real blocks the
// daemon deletes at the first ENOSPC, which gives the store room for the
// refusals, acks and events of a full-disk period; it is written again
// once space returns.
const DefaultReserve = 1 << 20

// ReservePath is the reserve file of the store at path.
func ReservePath(path string) string { return path + ".reserve" }

// KeepReserve makes sure the reserve file exists with size bytes of
// written (not sparse) blocks, synced. It fails with an error IsNoSpace
// recognises when the file system has no room for it; the partial file is
// removed then.
func (db *DB) KeepReserve(size int64) error {
	p := ReservePath(db.path)
	if fi, err := os.Stat(p); err == nil && fi.Size() >= size {
		return nil
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	chunk := make([]byte, 64<<10)
	for n := int64(0); n < size && err == nil; n += int64(len(chunk)) {
		_, err = f.Write(chunk[:min(int64(len(chunk)), size-n)])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

// ReleaseReserve deletes the reserve file; it reports whether there was
// one to delete.
func (db *DB) ReleaseReserve() (bool, error) {
	err := os.Remove(ReservePath(db.path))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
