package display

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/display/fbgeom"
)

// BenchmarkFrame1080x1920XRGB8888 composes a whole pay screen (two QR
// codes, CJK text) and writes it to a file-backed 1080×1920 XRGB8888
// framebuffer: what happens when a new order appears.
func BenchmarkFrame1080x1920XRGB8888(b *testing.B) {
	benchFrame(b, 0, false)
}

// BenchmarkFrame1080x1920XRGB8888Rot90 is the same on a panel mounted
// turned (1920×1080 device, portrait picture).
func BenchmarkFrame1080x1920XRGB8888Rot90(b *testing.B) {
	benchFrame(b, 90, false)
}

// BenchmarkCountdownTick1080x1920XRGB8888 is the once-a-second redraw of
// the countdown alone.
func BenchmarkCountdownTick1080x1920XRGB8888(b *testing.B) {
	benchFrame(b, 0, true)
}

func benchFrame(b *testing.B, rot int, tick bool) {
	fs := testFonts(b, true)
	w, h := 1080, 1920
	if rot == 90 {
		w, h = h, w
	}
	path := filepath.Join(b.TempDir(), "fb0")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	g := fbgeom.Geometry{Width: w, Height: h, BitsPerPixel: 32, Red: fbgeom.Bitfield{Offset: 16, Length: 8}, Green: fbgeom.Bitfield{Offset: 8, Length: 8}, Blue: fbgeom.Bitfield{Offset: 0, Length: 8}}
	o := &fbOutput{path: path, override: g, rotate: rot, comp: newComposer(fs, "zh"), log: slog.New(slog.DiscardHandler)}
	defer o.close()
	s := payScreen(wxCode, aliCode)
	f := &frame{Screen: s, seq: 1, start: testNow}
	// Open the device and warm the glyph cache, as a running display has.
	if err := o.draw(f, testNow); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now := testNow.Add(time.Duration(i%200) * time.Second)
		if !tick {
			f.seq++ // a new screen: compose and write the whole frame
		}
		if err := o.draw(f, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
}
