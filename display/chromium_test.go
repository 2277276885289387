package display

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/browsertest"
)

// TestWebInChromium loads the page in a real headless Chromium, then
// changes the screen with Show: the update must arrive over Server-Sent
// Events (no reload), the QR codes in the screenshot must decode, and the
// paid screen must follow.
func TestWebInChromium(t *testing.T) {
	zbar(t)
	for _, tc := range []struct {
		name  string
		w, h  int
		codes []Code
		want  []string
	}{
		{"portrait_any", 600, 1000, []Code{wxCode, aliCode}, []string{wxContent, aliContent}},
		{"landscape_wxpay", 1024, 600, []Code{wxCode}, []string{wxContent}},
		{"landscape_any", 1024, 600, []Code{wxCode, aliCode}, []string{wxContent, aliContent}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, addr := runWeb(t, Config{Display: config.Display{Locale: "zh", FontFile: cjkFontIfPresent()}})

			b := browsertest.Start(t)
			b.Viewport(tc.w, tc.h)
			b.Navigate("http://" + addr + "/")
			b.WaitFor("document.body.dataset.kind", "idle")
			b.WaitFor("document.body.dataset.sse", "open")
			preview(t, "web_idle_"+tc.name, b.Screenshot())

			s := payScreen(tc.codes...)
			s.ExpiresAt = time.Now().Add(5 * time.Minute)
			d.Show(s)
			b.WaitFor("document.body.dataset.kind", "pay")
			if got := b.Eval(`document.getElementById("amount").textContent`); got != "¥10.00" {
				t.Errorf("amount on page %q", got)
			}
			if got := b.Eval(`document.getElementById("cd").textContent`); !regexp.MustCompile(`^[45]:\d\d$`).MatchString(got) {
				t.Errorf("countdown on page %q", got)
			}
			shot := b.Screenshot()
			preview(t, "web_pay_"+tc.name, shot)
			wantCodes(t, decodeQR(t, shot), tc.want...)

			d.Show(Screen{Kind: Paid, Amount: 1000, OutTradeNo: s.OutTradeNo})
			b.WaitFor("document.body.dataset.kind", "paid")
			if got := b.Eval(`document.getElementById("stitle").textContent`); got != textsZH.PaidTitle && got != textsEN.PaidTitle {
				t.Errorf("paid title %q", got)
			}
			shot = b.Screenshot()
			preview(t, "web_paid_"+tc.name, shot)
			if got := decodeQR(t, shot); len(got) != 0 {
				t.Errorf("paid screen still shows a QR code: %q", got)
			}
		})
	}
}

// runWeb runs a display with only the web output on a free loopback port
// until the test ends, and returns it with its address.
func runWeb(t *testing.T, cfg Config) (*Display, string) {
	t.Helper()
	cfg.Outputs, cfg.WebListen = []config.Output{config.OutputWeb}, "127.0.0.1:0"
	d, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d, waitAddr(t, d)
}

func waitAddr(t testing.TB, d *Display) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if a := d.WebAddr(); a != "" {
			return a
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("web output did not start listening")
	return ""
}

// longSubject is what a shop may well send: 50 characters of product name.
const longSubject = "全身按摩椅 · 深层放松套餐 30 分钟（含加热与气囊）Full-body massage, deep relax, 30 min"

// TestWebPortraitFillsTheScreen loads the page on a portrait kiosk
// (1080×1920) with two codes and a long subject. Text wraps instead of
// ending in "…", the codes take the space there is (stacked, at a module
// size no other arrangement would beat), nothing runs off the screen,
// and both codes still decode from the screenshot. With
// KIOSKPAY_DOCS_SCREENSHOTS=DIR the screenshot is written there
// (docs/web-portrait.png in the repository is made this way).
func TestWebPortraitFillsTheScreen(t *testing.T) {
	zbar(t)
	d, addr := runWeb(t, Config{Display: config.Display{Locale: "zh"}})

	b := browsertest.Start(t)
	b.Viewport(1080, 1920)
	b.Navigate("http://" + addr + "/")
	b.WaitFor("document.body.dataset.kind", "idle")
	// Every text element shows its whole text: nothing overflows its box.
	const overflow = `[...document.querySelectorAll("body[data-kind=%s] .screen:not([style*=none]) *")].filter(e => e.offsetParent && (e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1) && e.tagName !== "CANVAS").map(e => e.id || e.className).join(",")`
	if got := b.Eval(fmt.Sprintf(overflow, "idle")); got != "" {
		t.Errorf("idle screen: cut text in %s", got)
	}
	// The idle screen of a narrow (480 px) portrait panel wraps its hint.
	b.Viewport(480, 800)
	if got := b.Eval(fmt.Sprintf(overflow, "idle")); got != "" {
		t.Errorf("idle screen at 480 px: cut text in %s", got)
	}
	b.Viewport(1080, 1920)

	s := payScreen(wxCode, aliCode)
	s.Subject = longSubject
	s.ExpiresAt = time.Now().Add(5 * time.Minute)
	d.Show(s)
	b.WaitFor("document.body.dataset.kind", "pay")
	shot := b.Screenshot()
	preview(t, "web_portrait_long_subject", shot)
	if got := b.Eval(fmt.Sprintf(overflow, "pay")); got != "" {
		t.Errorf("pay screen: cut text in %s", got)
	}
	if got := b.Eval(`document.getElementById("subject").textContent`); got != longSubject {
		t.Errorf("subject on the page %q", got)
	}
	// Sizes in CSS pixels: each code, and the lowest edge of anything shown.
	var geo struct {
		Codes  []float64 `json:"codes"`
		Bottom float64   `json:"bottom"`
		Dir    string    `json:"dir"`
	}
	js := b.Eval(`JSON.stringify({codes: [...document.querySelectorAll("#codes canvas")].map(c => c.getBoundingClientRect().width),
		bottom: Math.max(...[...document.querySelectorAll("#pay *")].filter(e => e.offsetParent).map(e => e.getBoundingClientRect().bottom)),
		dir: getComputedStyle(document.getElementById("codes")).flexDirection})`)
	if err := json.Unmarshal([]byte(js), &geo); err != nil {
		t.Fatalf("geometry %q: %v", js, err)
	}
	t.Logf("portrait, two codes: %+v", geo)
	if len(geo.Codes) != 2 || geo.Dir != "column" {
		t.Fatalf("codes %v laid out as %q, want two stacked", geo.Codes, geo.Dir)
	}
	for _, w := range geo.Codes {
		// Side by side, two codes could never be wider than half the
		// screen less its 5vmin margins: 486 px.
		if w <= 486 {
			t.Errorf("a code of %.0f px on a 1080×1920 screen: the codes do not use the space", w)
		}
	}
	if geo.Bottom > 1920 {
		t.Errorf("the page runs %0.f px past the bottom of the screen", geo.Bottom-1920)
	}
	docsScreenshot(t, "web-portrait.png", shot, 540)
	wantCodes(t, decodeQR(t, shot), wxContent, aliContent)
}

// docsScreenshot writes img, scaled down to width w (a whole-number
// factor, so QR modules stay sharp), to $KIOSKPAY_DOCS_SCREENSHOTS/name,
// and checks that the codes still decode from the smaller picture.
func docsScreenshot(t *testing.T, name string, img image.Image, w int) {
	dir := os.Getenv("KIOSKPAY_DOCS_SCREENSHOTS")
	if dir == "" {
		return
	}
	src := img.Bounds()
	f := src.Dx() / w
	if f < 1 {
		f = 1
	}
	small := image.NewRGBA(image.Rect(0, 0, src.Dx()/f, src.Dy()/f))
	for y := 0; y < small.Bounds().Dy(); y++ {
		for x := 0; x < small.Bounds().Dx(); x++ {
			small.Set(x, y, img.At(src.Min.X+x*f, src.Min.Y+y*f))
		}
	}
	before := decodeQR(t, img)
	if after := decodeQR(t, small); strings.Join(after, "|") != strings.Join(before, "|") {
		t.Fatalf("the %s screenshot at 1/%d decodes to %q, the page to %q", name, f, after, before)
	}
	out, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := png.Encode(out, small); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%dx%d)", out.Name(), small.Bounds().Dx(), small.Bounds().Dy())
}

// TestDocsScreenshotDecodes checks the screenshot README.md shows: both
// codes must still scan from it.
func TestDocsScreenshotDecodes(t *testing.T) {
	zbar(t)
	f, err := os.Open("../docs/web-portrait.png")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, decodeQR(t, img), wxContent, aliContent)
}
