package store

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// IsNoSpace reports whether err means the file system holding the store is
// full (or the user's quota is used up): the write may succeed once space
// returns, so the caller should retry, not give up. bbolt reports a failed
// resize as text, so the message is checked too.
func IsNoSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}

// FreeSpace is how many bytes an unprivileged writer may still add to the
// file system holding path's directory (statfs f_bavail).
func FreeSpace(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(path), &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// FreeSpace is how many bytes the store's file system has left.
func (db *DB) FreeSpace() (uint64, error) { return FreeSpace(db.path) }
