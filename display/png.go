package display

import (
	"bufio"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"time"
)

// pngOutput keeps the current screen in a PNG file, replaced atomically
// (temporary file in the same directory, fsync, rename) so that a reader
// never sees half an image.
type pngOutput struct {
	path string
	w, h int
	comp *composer
	img  *image.RGBA
	enc  png.Encoder
}

func (o *pngOutput) name() string { return "png" }

func (o *pngOutput) draw(f *frame, now time.Time) error {
	if o.img == nil {
		o.img = image.NewRGBA(image.Rect(0, 0, o.w, o.h))
		// Screens are flat colours: the fastest level compresses them well.
		o.enc.CompressionLevel = png.BestSpeed
	}
	dirty, rerr := o.comp.render(o.img, f, now)
	if dirty.Empty() {
		return rerr
	}
	if err := o.write(); err != nil {
		o.comp.lastDst = nil // write the whole picture next time
		return err
	}
	return rerr
}

func (o *pngOutput) write() error {
	dir := filepath.Dir(o.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("png output: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(o.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("png output: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	bw := bufio.NewWriterSize(tmp, 64<<10)
	err = o.enc.Encode(bw, o.img)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), o.path)
	}
	if err != nil {
		return fmt.Errorf("png output %s: %w", o.path, err)
	}
	return nil
}

func (o *pngOutput) close() error { return nil }
