package display

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"os"
	"time"

	"github.com/kioskpay/kioskpay/display/fbgeom"
)

// pixelFormat converts 8-bit RGB to the device's pixel words with one
// table per channel, each entry already scaled and shifted into place.
type pixelFormat struct {
	bytes   int
	r, g, b [256]uint32
	alpha   uint32 // transp bits all set: opaque
}

func newPixelFormat(g fbgeom.Geometry) *pixelFormat {
	p := &pixelFormat{bytes: g.BitsPerPixel / 8}
	fill := func(t *[256]uint32, b fbgeom.Bitfield) {
		for v := range 256 {
			t[v] = uint32(scale8(uint32(v), b.Length)) << b.Offset
		}
	}
	fill(&p.r, g.Red)
	fill(&p.g, g.Green)
	fill(&p.b, g.Blue)
	p.alpha = uint32(g.Transp.Mask())
	return p
}

// scale8 maps an 8-bit value to n bits, rounding, so that 255 is all ones.
func scale8(v uint32, n uint32) uint32 {
	if n == 0 {
		return 0
	}
	max := uint32(1)<<n - 1
	return (v*max + 127) / 255
}

// convertRow converts RGBA pixels from src into device pixels in dst.
// step is +4 to read src left to right and -4 to read it right to left
// (rotation by 180°); src then starts at the rightmost pixel.
func (p *pixelFormat) convertRow(dst, src []byte, n int, step int) {
	i := 0
	if step < 0 {
		i = (n - 1) * 4
	}
	switch p.bytes {
	case 4:
		dst = dst[:n*4]
		for x := 0; x < len(dst); x += 4 {
			s := src[i : i+3 : i+3]
			v := p.r[s[0]] | p.g[s[1]] | p.b[s[2]] | p.alpha
			binary.LittleEndian.PutUint32(dst[x:x+4], v)
			i += step
		}
	case 3:
		dst = dst[:n*3]
		for x := 0; x < len(dst); x += 3 {
			s := src[i : i+3 : i+3]
			v := p.r[s[0]] | p.g[s[1]] | p.b[s[2]] | p.alpha
			d := dst[x : x+3 : x+3]
			d[0], d[1], d[2] = byte(v), byte(v>>8), byte(v>>16)
			i += step
		}
	case 2:
		dst = dst[:n*2]
		for x := 0; x < len(dst); x += 2 {
			s := src[i : i+3 : i+3]
			v := p.r[s[0]] | p.g[s[1]] | p.b[s[2]] | p.alpha
			binary.LittleEndian.PutUint16(dst[x:x+2], uint16(v))
			i += step
		}
	}
}

// logicalSize is the size of the picture composed for a device of w×h
// mounted with rotation rot.
func logicalSize(w, h, rot int) (int, int) {
	if rot == 90 || rot == 270 {
		return h, w
	}
	return w, h
}

// deviceRows returns the device rows that show the logical rectangle r.
func deviceRows(r image.Rectangle, devH, rot int) (int, int) {
	switch rot {
	case 90:
		return r.Min.X, r.Max.X
	case 180:
		return devH - r.Max.Y, devH - r.Min.Y
	case 270:
		return devH - r.Max.X, devH - r.Min.X
	}
	return r.Min.Y, r.Max.Y
}

// blit converts device rows [y0, y1) of the picture src, rotated clockwise
// by rot, into dst laid out as g. Rows of the picture that repeat the
// previous one (most rows of a screen) are copied instead of converted.
func blit(dst []byte, g fbgeom.Geometry, p *pixelFormat, src *image.RGBA, rot, y0, y1 int) {
	W, H := g.Width, g.Height
	ll := g.LineLength
	rowBytes := W * p.bytes
	switch rot {
	case 0, 180:
		var prevSrc []byte
		prevDst := -1
		for dy := y0; dy < y1; dy++ {
			sy := dy
			if rot == 180 {
				sy = H - 1 - dy
			}
			off := src.PixOffset(0, sy)
			s := src.Pix[off : off+W*4]
			d := dst[dy*ll : dy*ll+rowBytes]
			if prevDst >= 0 && bytes.Equal(s, prevSrc) {
				copy(d, dst[prevDst:prevDst+rowBytes])
			} else {
				step := 4
				if rot == 180 {
					step = -4
				}
				p.convertRow(d, s, W, step)
			}
			prevSrc, prevDst = s, dy*ll
		}
	case 90, 270:
		// Device row dy shows one column of the picture. A block of
		// device rows is filled at once, so that each picture row is read
		// as one run of adjacent pixels and written to the rows side by
		// side.
		const block = 32
		bpp := p.bytes
		for by := y0; by < y1; by += block {
			n := min(block, y1-by)
			// Picture columns sx0..sx0+n-1 feed device rows by..by+n-1,
			// in reverse order for 270.
			sx0, first, step := by, by*ll, ll
			if rot == 270 {
				sx0, first, step = H-by-n, (by+n-1)*ll, -ll
			}
			for dx := 0; dx < W; dx++ {
				sy := W - 1 - dx
				if rot == 270 {
					sy = dx
				}
				o := src.PixOffset(sx0, sy)
				run := src.Pix[o : o+n*4 : o+n*4]
				off := first + dx*bpp
				for k := 0; k < len(run); k += 4 {
					v := p.r[run[k]] | p.g[run[k+1]] | p.b[run[k+2]] | p.alpha
					switch bpp {
					case 4:
						binary.LittleEndian.PutUint32(dst[off:off+4], v)
					case 3:
						dst[off], dst[off+1], dst[off+2] = byte(v), byte(v>>8), byte(v>>16)
					default:
						binary.LittleEndian.PutUint16(dst[off:off+2], uint16(v))
					}
					off += step
				}
			}
		}
	}
}

// fbOutput draws screens on a Linux framebuffer (or a file standing in
// for one). Whole frames are written with one pwrite; a countdown tick
// rewrites only the rows it changed.
type fbOutput struct {
	path     string
	override fbgeom.Geometry
	rotate   int
	comp     *composer
	log      *slog.Logger

	f      *os.File
	geom   fbgeom.Geometry
	base   int64 // byte offset of the visible area (panning)
	pf     *pixelFormat
	buf    []byte
	img    *image.RGBA
	opened bool

	written int // bytes written by the last draw, for tests
}

func (o *fbOutput) name() string { return "fb" }

func (o *fbOutput) open() error {
	f, err := os.OpenFile(o.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open framebuffer: %w", err)
	}
	dev, base, qerr := fbQuery(f)
	if qerr != nil && (o.override.Width == 0 || o.override.Height == 0 || o.override.BitsPerPixel == 0) {
		f.Close()
		return fmt.Errorf("framebuffer %s: %w (set a geometry override with width, height and bits_per_pixel for a plain file)", o.path, qerr)
	}
	g, err := fbgeom.Resolve(dev.Geometry, o.override)
	if err != nil {
		f.Close()
		return fmt.Errorf("framebuffer %s: %w", o.path, err)
	}
	if qerr == nil && dev.smem > 0 && base+int64(g.Height*g.LineLength) > dev.smem {
		f.Close()
		return fmt.Errorf("framebuffer %s: %d lines of %d bytes past its memory of %d bytes", o.path, g.Height, g.LineLength, dev.smem)
	}
	o.f, o.geom, o.base = f, g, base
	o.pf = newPixelFormat(g)
	if len(o.buf) != g.Height*g.LineLength {
		o.buf = make([]byte, g.Height*g.LineLength)
	}
	lw, lh := logicalSize(g.Width, g.Height, o.rotate)
	if o.img == nil || o.img.Rect.Dx() != lw || o.img.Rect.Dy() != lh {
		o.img = image.NewRGBA(image.Rect(0, 0, lw, lh))
	}
	o.comp.lastDst = nil // the device holds unknown pixels: draw whole
	if !o.opened {
		o.log.Info("framebuffer opened", "device", o.path, "width", g.Width, "height", g.Height,
			"bpp", g.BitsPerPixel, "line_length", g.LineLength, "rotate", o.rotate,
			"red", g.Red, "green", g.Green, "blue", g.Blue, "ioctl", qerr == nil)
		o.opened = true
	}
	return nil
}

func (o *fbOutput) draw(f *frame, now time.Time) error {
	if o.f == nil {
		if err := o.open(); err != nil {
			return err
		}
	}
	dirty, rerr := o.comp.render(o.img, f, now)
	if dirty.Empty() {
		return rerr
	}
	y0, y1 := deviceRows(dirty, o.geom.Height, o.rotate)
	blit(o.buf, o.geom, o.pf, o.img, o.rotate, y0, y1)
	ll := o.geom.LineLength
	if _, err := o.f.WriteAt(o.buf[y0*ll:y1*ll], o.base+int64(y0*ll)); err != nil {
		o.close()
		return fmt.Errorf("write framebuffer %s: %w", o.path, err)
	}
	o.written = (y1 - y0) * ll
	return rerr
}

func (o *fbOutput) close() error {
	if o.f == nil {
		return nil
	}
	err := o.f.Close()
	o.f = nil
	o.comp.lastDst = nil
	return err
}

// ProbeFramebuffer opens the framebuffer at path for writing, asks the
// driver for its geometry, applies override and returns the result, as the
// fb output would use it. It is for `kioskpayd doctor`: an error says why
// the fb output could not draw (permissions, 8-bit pseudocolour, a plain
// file without a complete override, nonsense geometry).
func ProbeFramebuffer(path string, override fbgeom.Geometry) (fbgeom.Geometry, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fbgeom.Geometry{}, fmt.Errorf("open framebuffer: %w", err)
	}
	defer f.Close()
	dev, _, qerr := fbQuery(f)
	if qerr != nil && (override.Width == 0 || override.Height == 0 || override.BitsPerPixel == 0) {
		return fbgeom.Geometry{}, fmt.Errorf("framebuffer %s: %w", path, qerr)
	}
	return fbgeom.Resolve(dev.Geometry, override)
}

// devGeometry is what the driver reports.
type devGeometry struct {
	fbgeom.Geometry
	smem int64 // size of the framebuffer memory, 0 if unknown
}

var errNotFB = errors.New("not a framebuffer")
