package display

import (
	"fmt"
	"image"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
)

var sizes = []struct{ w, h int }{
	{1080, 1920}, {480, 800}, {800, 480}, {1920, 1080}, {600, 600},
}

func TestPayScreenDecodes(t *testing.T) {
	fs := testFonts(t, true)
	for _, sz := range sizes {
		for _, tc := range []struct {
			name  string
			codes []Code
			want  []string
		}{
			{"wxpay", []Code{wxCode}, []string{wxContent}},
			{"alipay", []Code{aliCode}, []string{aliContent}},
			{"any", []Code{wxCode, aliCode}, []string{wxContent, aliContent}},
		} {
			if sz.w*sz.h > 1e6 && len(tc.codes) == 1 {
				continue // big screens: the dual layout is the one at risk
			}
			name := fmt.Sprintf("%s_%dx%d", tc.name, sz.w, sz.h)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				img := renderScreen(t, fs, "zh", payScreen(tc.codes...), sz.w, sz.h)
				preview(t, "pay_"+name, img)
				wantCodes(t, decodeQR(t, img), tc.want...)
			})
		}
	}
}

func TestStatusScreensPreview(t *testing.T) {
	fs := testFonts(t, true)
	for _, loc := range []config.Locale{config.LocaleZH, config.LocaleEN} {
		for _, s := range []Screen{
			{Kind: Idle},
			{Kind: Paid, Amount: 1000, OutTradeNo: "KP1"},
			{Kind: Expired, OutTradeNo: "KP1"},
			{Kind: Error, Message: "WeChat Pay is not reachable (timeout)"},
		} {
			for _, sz := range []struct{ w, h int }{{1080, 1920}, {800, 480}} {
				img := renderScreen(t, fs, loc, s, sz.w, sz.h)
				preview(t, fmt.Sprintf("%s_%s_%dx%d", s.Kind, loc, sz.w, sz.h), img)
			}
		}
	}
}

func TestCountdown(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{5 * time.Minute, "5:00"},
		{4*time.Minute + 59*time.Second + time.Millisecond, "5:00"},
		{59 * time.Second, "0:59"},
		{time.Millisecond, "0:01"},
		{0, "0:00"},
		{-time.Second, "0:00"},
		{2*time.Hour + 3*time.Second, "2:00:03"},
	} {
		if got := formatCountdown(remaining(testNow.Add(tc.d), testNow)); got != tc.want {
			t.Errorf("countdown %v = %q, want %q", tc.d, got, tc.want)
		}
	}
}

var _ = image.Rect

// TestQuietZoneAndIntegerScale measures the drawn code: every module is
// the same whole number of pixels and at least 4 modules of white
// surround the code.
func TestQuietZoneAndIntegerScale(t *testing.T) {
	fs := testFonts(t, false)
	black := func(img *image.RGBA, x, y int) bool {
		c := img.RGBAAt(x, y)
		return c.R == 0 && c.G == 0 && c.B == 0
	}
	for _, sz := range sizes {
		img := renderScreen(t, fs, "en", payScreen(aliCode), sz.w, sz.h)
		// Bounding box of pure black: only QR modules are pure black.
		bb := image.Rectangle{Min: image.Pt(sz.w, sz.h)}
		for y := 0; y < sz.h; y++ {
			for x := 0; x < sz.w; x++ {
				if black(img, x, y) {
					bb = bb.Union(image.Rect(x, y, x+1, y+1))
				}
			}
		}
		// The top-left finder pattern's top edge is 7 modules of black.
		run := 0
		for x := bb.Min.X; black(img, x, bb.Min.Y); x++ {
			run++
		}
		if run%7 != 0 {
			t.Fatalf("%dx%d: finder edge %d px is not 7 whole modules", sz.w, sz.h, run)
		}
		scale := run / 7
		mods, _ := newComposer(fs, "en").modules(aliContent)
		if bb.Dx() != len(mods)*scale || bb.Dy() != len(mods)*scale {
			t.Fatalf("%dx%d: code is %v, want %d modules of %d px", sz.w, sz.h, bb.Size(), len(mods), scale)
		}
		qz := bb.Inset(-4 * scale)
		for y := qz.Min.Y; y < qz.Max.Y; y++ {
			for x := qz.Min.X; x < qz.Max.X; x++ {
				if image.Pt(x, y).In(bb) {
					continue
				}
				if c := img.RGBAAt(x, y); c != colQRLight {
					t.Fatalf("%dx%d: quiet zone pixel (%d,%d) is %v", sz.w, sz.h, x, y, c)
				}
			}
		}
		t.Logf("%dx%d: %d px per module", sz.w, sz.h, scale)
	}
}

// TestUnencodableCodeShowsError: content too long for a QR code gives an
// error screen and an error to log, never a broken code.
func TestUnencodableCodeShowsError(t *testing.T) {
	fs := testFonts(t, false)
	c := newComposer(fs, "en")
	img := image.NewRGBA(image.Rect(0, 0, 480, 800))
	s := payScreen(Code{Provider: "wxpay", Content: string(make([]byte, 3000))})
	if _, err := c.render(img, &frame{Screen: s, seq: 1}, testNow); err == nil {
		t.Fatal("no error for an unencodable code")
	}
	if got := decodeQR(t, img); len(got) != 0 {
		t.Fatalf("decoded %q from the error screen", got)
	}
}
