package display

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/display/fbgeom"
)

// layouts are the pixel formats the fb output must honour, each with a
// padded line_length (padding is where drivers that ignore line_length go
// wrong).
var layouts = []struct {
	name string
	g    fbgeom.Geometry
}{
	{"RGB565", fbgeom.Geometry{BitsPerPixel: 16, Red: fbgeom.Bitfield{Offset: 11, Length: 5}, Green: fbgeom.Bitfield{Offset: 5, Length: 6}, Blue: fbgeom.Bitfield{Offset: 0, Length: 5}}},
	{"BGR24", fbgeom.Geometry{BitsPerPixel: 24, Red: fbgeom.Bitfield{Offset: 0, Length: 8}, Green: fbgeom.Bitfield{Offset: 8, Length: 8}, Blue: fbgeom.Bitfield{Offset: 16, Length: 8}}},
	{"RGB24", fbgeom.Geometry{BitsPerPixel: 24, Red: fbgeom.Bitfield{Offset: 16, Length: 8}, Green: fbgeom.Bitfield{Offset: 8, Length: 8}, Blue: fbgeom.Bitfield{Offset: 0, Length: 8}}},
	{"XRGB8888", fbgeom.Geometry{BitsPerPixel: 32, Red: fbgeom.Bitfield{Offset: 16, Length: 8}, Green: fbgeom.Bitfield{Offset: 8, Length: 8}, Blue: fbgeom.Bitfield{Offset: 0, Length: 8}}},
	{"vfb32_R0G8B16A24", fbgeom.Geometry{BitsPerPixel: 32, Red: fbgeom.Bitfield{Offset: 0, Length: 8}, Green: fbgeom.Bitfield{Offset: 8, Length: 8}, Blue: fbgeom.Bitfield{Offset: 16, Length: 8}, Transp: fbgeom.Bitfield{Offset: 24, Length: 8}}},
}

func withSize(g fbgeom.Geometry, w, h, pad int) fbgeom.Geometry {
	g.Width, g.Height = w, h
	g.LineLength = w*g.BitsPerPixel/8 + pad
	return g
}

// readPixel decodes the device pixel at (x, y) of raw using g.
func readPixel(raw []byte, g fbgeom.Geometry, x, y int) (uint32, color.RGBA) {
	bpp := g.BitsPerPixel / 8
	off := y*g.LineLength + x*bpp
	var v uint32
	for i := bpp - 1; i >= 0; i-- {
		v = v<<8 | uint32(raw[off+i])
	}
	ch := func(b fbgeom.Bitfield) uint8 {
		m := uint32(1)<<b.Length - 1
		return uint8((v >> b.Offset & m) * 255 / m)
	}
	return v, color.RGBA{ch(g.Red), ch(g.Green), ch(g.Blue), 0xFF}
}

// unrotate turns the raw device frame back into the upright picture.
func unrotate(raw []byte, g fbgeom.Geometry, rot int) *image.RGBA {
	lw, lh := logicalSize(g.Width, g.Height, rot)
	img := image.NewRGBA(image.Rect(0, 0, lw, lh))
	for dy := 0; dy < g.Height; dy++ {
		for dx := 0; dx < g.Width; dx++ {
			var x, y int
			switch rot {
			case 0:
				x, y = dx, dy
			case 90: // picture turned clockwise: device (dx,dy) shows (dy, W-1-dx)
				x, y = dy, g.Width-1-dx
			case 180:
				x, y = g.Width-1-dx, g.Height-1-dy
			case 270:
				x, y = g.Height-1-dy, dx
			}
			_, c := readPixel(raw, g, dx, dy)
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestFBLayoutsAndRotations(t *testing.T) {
	fs := testFonts(t, true)
	for _, l := range layouts {
		for _, rot := range []int{0, 90, 180, 270} {
			t.Run(fmt.Sprintf("%s_rot%d", l.name, rot), func(t *testing.T) {
				t.Parallel()
				g := withSize(l.g, 600, 400, 52)
				path := filepath.Join(t.TempDir(), "fb0")
				// Start from garbage, as a real framebuffer would.
				if err := os.WriteFile(path, bytes.Repeat([]byte{0xA5}, g.LineLength*g.Height), 0o644); err != nil {
					t.Fatal(err)
				}
				o := &fbOutput{path: path, override: g, rotate: rot, comp: newComposer(fs, "zh"), log: testLogger(t)}
				defer o.close()
				codes := []Code{wxCode}
				want := []string{wxContent}
				if rot == 90 {
					codes, want = []Code{wxCode, aliCode}, []string{wxContent, aliContent}
				}
				f := &frame{Screen: payScreen(codes...), seq: 1, start: testNow}
				if err := o.draw(f, testNow); err != nil {
					t.Fatal(err)
				}
				raw, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if len(raw) != g.LineLength*g.Height {
					t.Fatalf("file is %d bytes, want %d", len(raw), g.LineLength*g.Height)
				}
				// The device frame, read back through the layout and turned
				// upright, is the composed picture (up to channel depth).
				up := unrotate(raw, g, rot)
				tol := 255/(1<<min(g.Red.Length, g.Green.Length, g.Blue.Length)-1) + 1
				if x, y, ok := sameImage(up, o.img, tol); !ok {
					t.Fatalf("pixel (%d,%d) is %v on the device, %v composed", x, y, up.At(x, y), o.img.At(x, y))
				}
				preview(t, fmt.Sprintf("fb_%s_rot%d", l.name, rot), up)
				// The device frame itself (rotated) decodes too.
				dev := unrotate(raw, g, 0)
				wantCodes(t, decodeQR(t, dev), want...)
			})
		}
	}
}

func sameImage(a, b *image.RGBA, tol int) (int, int, bool) {
	if a.Rect != b.Rect {
		return 0, 0, false
	}
	for y := a.Rect.Min.Y; y < a.Rect.Max.Y; y++ {
		for x := a.Rect.Min.X; x < a.Rect.Max.X; x++ {
			p, q := a.RGBAAt(x, y), b.RGBAAt(x, y)
			for _, d := range []int{int(p.R) - int(q.R), int(p.G) - int(q.G), int(p.B) - int(q.B)} {
				if d > tol || d < -tol {
					return x, y, false
				}
			}
		}
	}
	return 0, 0, true
}

// TestFBKnownPixel puts pure red, green and blue at known picture corners
// and checks the words land where rotation and bitfields say.
func TestFBKnownPixel(t *testing.T) {
	for _, l := range layouts {
		for _, rot := range []int{0, 90, 180, 270} {
			g := withSize(l.g, 7, 5, 9)
			lw, lh := logicalSize(g.Width, g.Height, rot)
			src := image.NewRGBA(image.Rect(0, 0, lw, lh))
			src.SetRGBA(0, 0, color.RGBA{255, 0, 0, 255})
			src.SetRGBA(lw-1, 0, color.RGBA{0, 255, 0, 255})
			src.SetRGBA(0, lh-1, color.RGBA{0, 0, 255, 255})
			buf := make([]byte, g.LineLength*g.Height)
			blit(buf, g, newPixelFormat(g), src, rot, 0, g.Height)
			W, H := g.Width, g.Height
			// Where the picture's top-left, top-right and bottom-left
			// corners end up on the device after turning it clockwise.
			corners := map[int][3]image.Point{
				0:   {{0, 0}, {W - 1, 0}, {0, H - 1}},
				90:  {{W - 1, 0}, {W - 1, H - 1}, {0, 0}},
				180: {{W - 1, H - 1}, {0, H - 1}, {W - 1, 0}},
				270: {{0, H - 1}, {0, 0}, {W - 1, H - 1}},
			}[rot]
			full := func(b fbgeom.Bitfield) uint32 { return (uint32(1)<<b.Length - 1) << b.Offset }
			alpha := full(g.Transp)
			if g.Transp.Length == 0 {
				alpha = 0
			}
			for i, want := range []uint32{full(g.Red) | alpha, full(g.Green) | alpha, full(g.Blue) | alpha} {
				p := corners[i]
				got, _ := readPixel(buf, g, p.X, p.Y)
				if got != want {
					t.Errorf("%s rot %d: colour %d at device %v = %#x, want %#x", l.name, rot, i, p, got, want)
				}
			}
			// Every other pixel is black (plus opaque alpha).
			if v, _ := readPixel(buf, g, W/2, H/2); v != alpha {
				t.Errorf("%s rot %d: centre pixel %#x, want %#x", l.name, rot, v, alpha)
			}
		}
	}
}

// TestFBCountdownTick checks that a countdown tick rewrites only some rows
// and leaves the device exactly as a full redraw would.
func TestFBCountdownTick(t *testing.T) {
	fs := testFonts(t, false)
	for _, rot := range []int{0, 90} {
		g := withSize(layouts[3].g, 480, 320, 0)
		dir := t.TempDir()
		tick := &fbOutput{path: filepath.Join(dir, "a"), override: g, rotate: rot, comp: newComposer(fs, "en"), log: testLogger(t)}
		full := &fbOutput{path: filepath.Join(dir, "b"), override: g, rotate: rot, comp: newComposer(fs, "en"), log: testLogger(t)}
		for _, o := range []*fbOutput{tick, full} {
			os.WriteFile(o.path, nil, 0o644)
			defer o.close()
		}
		f := &frame{Screen: payScreen(aliCode), seq: 1, start: testNow}
		if err := tick.draw(f, testNow); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(tick.path)
		later := testNow.Add(4*time.Minute - 1) // under a minute left: colours change too
		if err := tick.draw(f, later); err != nil {
			t.Fatal(err)
		}
		// Upright, the countdown is a band of rows; turned 90° it spans
		// most rows, so only the content is checked there.
		if tick.written == 0 || (rot == 0 && tick.written >= len(before)/3) {
			t.Fatalf("rot %d: tick wrote %d of %d bytes", rot, tick.written, len(before))
		}
		if err := full.draw(f, later); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(tick.path)
		b, _ := os.ReadFile(full.path)
		if bytes.Equal(a, before) {
			t.Fatalf("rot %d: tick changed nothing", rot)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("rot %d: frame after tick differs from a full redraw", rot)
		}
	}
}

func TestFBGeometryValidate(t *testing.T) {
	ok := withSize(layouts[3].g, 800, 480, 0)
	for _, tc := range []struct {
		name  string
		mod   func(g *fbgeom.Geometry)
		field string
	}{
		{"bpp7", func(g *fbgeom.Geometry) { g.BitsPerPixel = 7 }, "bits_per_pixel"},
		{"bpp8", func(g *fbgeom.Geometry) { g.BitsPerPixel = 8 }, "bits_per_pixel"},
		{"short line", func(g *fbgeom.Geometry) { g.LineLength = 800*4 - 1 }, "line_length"},
		{"zero width", func(g *fbgeom.Geometry) { g.Width = 0 }, "width"},
		{"negative height", func(g *fbgeom.Geometry) { g.Height = -1 }, "height"},
		{"huge width", func(g *fbgeom.Geometry) { g.Width = 1 << 20; g.LineLength = 4 << 20 }, "width"},
		{"red past bpp", func(g *fbgeom.Geometry) { g.Red = fbgeom.Bitfield{Offset: 28, Length: 8} }, "red.offset"},
		{"blue past bpp 16", func(g *fbgeom.Geometry) {
			*g = withSize(layouts[0].g, 800, 480, 0)
			g.Blue = fbgeom.Bitfield{Offset: 12, Length: 5}
		}, "blue"},
		{"green overlaps red", func(g *fbgeom.Geometry) { g.Green = fbgeom.Bitfield{Offset: 12, Length: 8} }, "overlaps"},
		{"transp overlaps blue", func(g *fbgeom.Geometry) { g.Transp = fbgeom.Bitfield{Offset: 4, Length: 8} }, "transp"},
		{"no blue", func(g *fbgeom.Geometry) { g.Blue = fbgeom.Bitfield{} }, "blue.length"},
		{"wide channel", func(g *fbgeom.Geometry) {
			g.Red = fbgeom.Bitfield{Offset: 0, Length: 17}
			g.Green = fbgeom.Bitfield{}
			g.Blue = fbgeom.Bitfield{}
		}, "red.length"},
	} {
		g := ok
		tc.mod(&g)
		err := g.Validate()
		if err == nil {
			t.Errorf("%s: %+v accepted", tc.name, g)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %q does not name %s", tc.name, err, tc.field)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid geometry refused: %v", err)
	}
}

func TestResolveGeometry(t *testing.T) {
	dev := fbgeom.Geometry{Width: 800, Height: 480, BitsPerPixel: 32, LineLength: 3328,
		Red: fbgeom.Bitfield{Offset: 0, Length: 8}, Green: fbgeom.Bitfield{Offset: 8, Length: 8}, Blue: fbgeom.Bitfield{Offset: 16, Length: 8}, Transp: fbgeom.Bitfield{Offset: 24, Length: 8}}
	// No override: the driver's word stands, line_length padding included.
	g, err := fbgeom.Resolve(dev, fbgeom.Geometry{})
	if err != nil || g != dev {
		t.Fatalf("no override: %+v, %v", g, err)
	}
	// A driver that lies about its depth: the override's bpp brings the
	// usual bitfields and an unpadded line.
	g, err = fbgeom.Resolve(dev, fbgeom.Geometry{BitsPerPixel: 16})
	if err != nil || g.Red != (fbgeom.Bitfield{Offset: 11, Length: 5}) || g.LineLength != 1600 {
		t.Fatalf("bpp override: %+v, %v", g, err)
	}
	// A plain file: everything from the override.
	g, err = fbgeom.Resolve(fbgeom.Geometry{}, fbgeom.Geometry{Width: 10, Height: 10, BitsPerPixel: 24})
	if err != nil || g.LineLength != 30 || g.Blue != (fbgeom.Bitfield{Offset: 0, Length: 8}) {
		t.Fatalf("file override: %+v, %v", g, err)
	}
	if _, err := fbgeom.Resolve(fbgeom.Geometry{}, fbgeom.Geometry{Width: 10, BitsPerPixel: 24}); err == nil || !strings.Contains(err.Error(), "height") {
		t.Fatalf("missing height: %v", err)
	}
}

// FuzzFBGeometry: whatever a driver or config claims, validation either
// refuses it or the blit stays inside the buffer.
func FuzzFBGeometry(f *testing.F) {
	f.Add(800, 480, 32, 3200, uint32(16), uint32(8), uint32(8), uint32(8), uint32(0), uint32(8), uint32(0), uint32(0), 90)
	f.Add(7, 5, 16, 14, uint32(11), uint32(5), uint32(5), uint32(6), uint32(0), uint32(5), uint32(0), uint32(0), 0)
	f.Add(3, 3, 24, 9, uint32(0), uint32(8), uint32(8), uint32(8), uint32(16), uint32(8), uint32(0), uint32(0), 270)
	f.Add(4, 4, 7, 1, uint32(40), uint32(8), uint32(0), uint32(0), uint32(0), uint32(0), uint32(0), uint32(0), 180)
	f.Fuzz(func(t *testing.T, w, h, bpp, ll int, ro, rl, gof, gl, bo, bl, to, tl uint32, rot int) {
		g := fbgeom.Geometry{Width: w, Height: h, BitsPerPixel: bpp, LineLength: ll,
			Red: fbgeom.Bitfield{Offset: ro, Length: rl}, Green: fbgeom.Bitfield{Offset: gof, Length: gl}, Blue: fbgeom.Bitfield{Offset: bo, Length: bl}, Transp: fbgeom.Bitfield{Offset: to, Length: tl}}
		if g.Validate() != nil {
			return
		}
		if w*h > 1<<16 || ll*h > 1<<20 {
			return // valid but too big to blit quickly
		}
		rot = []int{0, 90, 180, 270}[(rot%4+4)%4]
		lw, lh := logicalSize(w, h, rot)
		src := image.NewRGBA(image.Rect(0, 0, lw, lh))
		for i := range src.Pix {
			src.Pix[i] = byte(i * 37)
		}
		buf := make([]byte, ll*h)
		blit(buf, g, newPixelFormat(g), src, rot, 0, h)
	})
}

func TestProbeFramebuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fb0")
	os.WriteFile(path, nil, 0o644)
	if _, err := ProbeFramebuffer(path, fbgeom.Geometry{}); err == nil || !strings.Contains(err.Error(), "FBIOGET_VSCREENINFO") {
		t.Fatalf("plain file without override: %v", err)
	}
	g, err := ProbeFramebuffer(path, fbgeom.Geometry{Width: 800, Height: 480, BitsPerPixel: 16})
	if err != nil || g.LineLength != 1600 || g.Red != (fbgeom.Bitfield{Offset: 11, Length: 5}) {
		t.Fatalf("plain file with override: %+v, %v", g, err)
	}
	if _, err := ProbeFramebuffer(filepath.Join(t.TempDir(), "none"), fbgeom.Geometry{}); err == nil {
		t.Fatal("missing device accepted")
	}
}
