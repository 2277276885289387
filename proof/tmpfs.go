package proof

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Tmpfs is a small file system mounted for one test, so that the daemon's
// state directory can really run out of space (ENOSPC from the kernel, not
// a simulation). Mounting needs root (CI runs as root); Mount reports the
// error otherwise and the test skips.
type Tmpfs struct {
	Dir    string
	filler string
}

// MountTmpfs mounts a tmpfs of size bytes at dir (created if needed).
func MountTmpfs(dir string, size int64) (*Tmpfs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mount tmpfs at %s: %v: %s", dir, err, out)
	}
	return &Tmpfs{Dir: dir, filler: filepath.Join(dir, "filler")}, nil
}

// Unmount unmounts it (lazily, so a daemon still holding files does not
// keep it busy).
func (f *Tmpfs) Unmount() error {
	if out, err := exec.Command("umount", "-l", f.Dir).CombinedOutput(); err != nil {
		return fmt.Errorf("umount %s: %v: %s", f.Dir, err, out)
	}
	return nil
}

// Fill writes a filler file until the file system is full (ENOSPC) and
// returns how much it wrote.
func (f *Tmpfs) Fill() (int64, error) {
	fh, err := os.OpenFile(f.filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	var n int64
	for _, chunk := range []int{1 << 20, 64 << 10, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			w, err := fh.Write(buf)
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Free removes the filler.
func (f *Tmpfs) Free() error {
	err := os.Remove(f.filler)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
