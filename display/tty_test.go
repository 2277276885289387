package display

import (
	"fmt"
	"image"
	"image/draw"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/display/termqr"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
)

// halfBlocksToImage draws terminal output as a terminal shows it, for a
// QR reader.
func halfBlocksToImage(t *testing.T, text string) image.Image {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	cols := 0
	for _, l := range lines {
		cols = max(cols, termqr.Width(l))
	}
	img, err := TerminalImage(lines, cols, len(lines))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestTermCodes(t *testing.T) {
	codes := []termqr.Code{{Label: "微信支付", Content: wxContent}, {Label: "支付宝", Content: aliContent}}
	for _, tc := range []struct {
		width   int
		invert  bool
		stacked bool
	}{{0, false, false}, {80, false, false}, {80, true, false}, {60, false, true}} {
		lines, err := termqr.Lines(codes, tc.width, tc.invert)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(lines, "\n")
		for _, l := range lines {
			if tc.width > 0 && termqr.Width(l) > tc.width {
				t.Errorf("width %d: a line of %d columns", tc.width, termqr.Width(l))
			}
		}
		// Side by side, the labels share the first line.
		if side := strings.Contains(lines[0], "微信支付") && strings.Contains(lines[0], "支付宝"); side == tc.stacked {
			t.Errorf("width %d: first line %q, stacked=%v", tc.width, lines[0], tc.stacked)
		}
		var img image.Image = halfBlocksToImage(t, text)
		if tc.invert {
			// A dark-on-light terminal: what is drawn is dark.
			neg := image.NewGray(img.Bounds())
			draw.Draw(neg, neg.Bounds(), img, img.Bounds().Min, draw.Src)
			for i := range neg.Pix {
				neg.Pix[i] = 255 - neg.Pix[i]
			}
			img = neg
		}
		preview(t, fmt.Sprintf("tty_codes_%d_%v", tc.width, tc.invert), img)
		wantCodes(t, decodeQR(t, img), wxContent, aliContent)
	}
	if _, err := termqr.Lines([]termqr.Code{{Label: "x", Content: strings.Repeat("x", 3000)}}, 0, false); err == nil {
		t.Fatal("content too long for a QR code accepted")
	}
}

func TestTTYOutput(t *testing.T) {
	var buf syncbuf.Buffer
	o := &ttyOutput{w: &buf, tx: &textsZH}
	f := &frame{Screen: payScreen(wxCode, aliCode), seq: 1, start: testNow}
	if err := o.draw(f, testNow); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"¥10.00", "4:59", "微信支付", "支付宝", "KP20250301120000001"} {
		if !strings.Contains(out, want) {
			t.Errorf("tty output lacks %q:\n%s", want, out)
		}
	}
	wantCodes(t, decodeQR(t, halfBlocksToImage(t, out)), wxContent, aliContent)
	for _, l := range strings.Split(out, "\n") {
		if w := termqr.Width(l); w > 80 {
			t.Errorf("line %d columns wide: %q", w, l)
		}
	}
	// A plain writer gets a block per new screen, not a countdown tick
	// every second.
	if o.ticks() {
		t.Error("tty output to a plain writer ticks")
	}
	o.draw(f, testNow.Add(time.Second))
	if buf.String() != out {
		t.Error("tick rewrote a plain writer")
	}
}

func TestTTYFileHoldsCurrentScreen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "screen.txt")
	o := &ttyOutput{path: path, tx: &textsEN}
	defer o.close()
	f := &frame{Screen: payScreen(wxCode), seq: 1, start: testNow}
	if err := o.draw(f, testNow); err != nil {
		t.Fatal(err)
	}
	if !o.ticks() {
		t.Fatal("tty output to a file does not tick")
	}
	if err := o.draw(f, testNow.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "Time left 4:57") || strings.Contains(string(b), "4:59") {
		t.Fatalf("file does not hold just the current screen:\n%s", b)
	}
	wantCodes(t, decodeQR(t, halfBlocksToImage(t, string(b))), wxContent)
	o.draw(&frame{Screen: Screen{Kind: Paid, Amount: 250}, seq: 2}, testNow)
	b, _ = os.ReadFile(path)
	if !strings.HasPrefix(string(b), "Payment received  ¥2.50\n") || strings.ContainsRune(string(b), '█') {
		t.Fatalf("paid screen file:\n%s", b)
	}
}
