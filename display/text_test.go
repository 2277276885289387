package display

import (
	"image"
	"strings"
	"testing"
)

// ink counts pixels of img inside r that differ from the background.
func ink(img *image.RGBA, r image.Rectangle) int {
	n := 0
	r = r.Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if img.RGBAAt(x, y) != colBackground {
				n++
			}
		}
	}
	return n
}

func TestCJKFontDrawsGlyphs(t *testing.T) {
	fs := testFonts(t, true)
	if !strings.Contains(fs.cjkName, "Micro Hei") && !strings.Contains(fs.cjkName, " SC") {
		t.Errorf("picked face %q from the collection", fs.cjkName)
	}
	ts := newTypesetter(fs)
	if !ts.covers("按摩椅 15分钟") {
		t.Fatal("CJK font does not cover the subject")
	}
	img := image.NewRGBA(image.Rect(0, 0, 400, 60))
	fillRect(img, img.Rect, colBackground)
	ts.draw(img, "按摩椅", regular, 40, 10, 45, colText)
	if n := ink(img, img.Rect); n < 300 {
		t.Fatalf("subject drew %d pixels", n)
	}
	// Every glyph drew ink: each of the three character cells has some.
	w := ts.width("按", regular, 40)
	for i := range 3 {
		cell := image.Rect(10+i*w, 0, 10+(i+1)*w, 60)
		if ink(img, cell) < 50 {
			t.Errorf("character %d drew nothing", i)
		}
	}
	preview(t, "cjk_subject", img)

	// On the pay screen the subject is there and the texts are Chinese.
	c := newComposer(fs, "zh")
	if c.tx.Lang != "zh" {
		t.Fatalf("with a CJK font the texts are %q", c.tx.Lang)
	}
	with := renderScreen(t, fs, "zh", payScreen(wxCode), 480, 800)
	s := payScreen(wxCode)
	s.Subject = ""
	without := renderScreen(t, fs, "zh", s, 480, 800)
	if x, y, same := sameImage(with, without, 0); same {
		t.Fatal("subject did not appear")
	} else {
		t.Logf("subject ink at (%d,%d)", x, y)
	}
}

func TestNoFontMeansEnglishAndNoTofu(t *testing.T) {
	fs := testFonts(t, false)
	c := newComposer(fs, "zh")
	if c.tx.Lang != "en" {
		t.Fatalf("without a CJK font the texts are %q, want English", c.tx.Lang)
	}
	// A CJK subject cannot be drawn: it is left out whole rather than
	// drawn as boxes or as the misleading "15".
	if got := c.outside("按摩椅 15分钟"); got != "" {
		t.Fatalf("undrawable subject kept as %q", got)
	}
	if got := c.outside("Massage\t15 min\n"); got != "Massage 15 min" {
		t.Fatalf("drawable subject = %q", got)
	}
	with := renderScreen(t, fs, "zh", payScreen(wxCode), 480, 800)
	s := payScreen(wxCode)
	s.Subject = ""
	without := renderScreen(t, fs, "zh", s, 480, 800)
	if _, _, same := sameImage(with, without, 0); !same {
		t.Fatal("an undrawable subject changed the screen")
	}
	preview(t, "nofont_pay_480x800", with)
	wantCodes(t, decodeQR(t, with), wxContent)

	// A rune no font has takes no room and draws nothing.
	ts := c.ts
	if a, b := ts.width("A\U0001F600B", regular, 30), ts.width("AB", regular, 30); a != b {
		t.Fatalf("missing glyph takes %d px", a-b)
	}
	// English titles are drawn.
	img := image.NewRGBA(image.Rect(0, 0, 400, 60))
	fillRect(img, img.Rect, colBackground)
	ts.draw(img, textsEN.PayTitle, regular, 30, 5, 40, colText)
	if ink(img, img.Rect) < 200 {
		t.Fatal("English title drew nothing")
	}
}

func TestFitEllipsis(t *testing.T) {
	ts := newTypesetter(testFonts(t, false))
	long := "A very long subject that cannot possibly fit on the line"
	got := ts.fit(long, regular, 20, 200)
	if !strings.HasSuffix(got, "…") || ts.width(got, regular, 20) > 200 || len(got) < 10 {
		t.Fatalf("fit = %q (%d px)", got, ts.width(got, regular, 20))
	}
	if got := ts.fit("short", regular, 20, 200); got != "short" {
		t.Fatalf("short text changed to %q", got)
	}
	if got := ts.fit(long, regular, 20, 1); got != "" {
		t.Fatalf("no room at all gives %q", got)
	}
	// The amount is shrunk, never shortened.
	c := newComposer(testFonts(t, false), "en")
	amount := "¥123456789.00"
	size := c.amountSize(amount, 100, 300)
	if c.ts.width(amount, bold, size) > 300 || size >= 100 {
		t.Fatalf("amount at size %d is %d px", size, c.ts.width(amount, bold, size))
	}
}

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"  a\tb\n\nc  ":    "a b c",
		"x\u200by\u202ez":  "xyz",
		"\x00\x1b[2Jhello": "[2Jhello",
		"":                 "",
		"按摩\r\n15分钟":       "按摩 15分钟",
	} {
		if got := cleanText(in); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoadFontErrors(t *testing.T) {
	if _, err := loadFonts("/nonexistent/font.ttf"); err == nil || !strings.Contains(err.Error(), "font_file") {
		t.Fatalf("missing font: %v", err)
	}
	if _, _, err := pickFace([]byte("ttcf\x00\x01\x00\x00\x00\x00\x00\x05")); err == nil {
		t.Fatal("truncated collection accepted")
	}
	if _, _, err := pickFace([]byte("not a font at all")); err == nil {
		t.Fatal("garbage accepted as a font")
	}
}

// FuzzFontFile: a broken font_file gives an error, never a panic.
func FuzzFontFile(f *testing.F) {
	f.Add([]byte("ttcf\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10"))
	f.Add([]byte("\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00glyf\x00\x00\x00\x00\x00\x00\x00\x1c\x00\x00\x00\x04abcd"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pickFace(b)
	})
}
