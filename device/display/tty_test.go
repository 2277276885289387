package display

import (
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/syncbuf"
)

// halfBlocksToImage turns the half-block lines of text back into pixels
// (8×8 per module): blocks are light, spaces dark. Lines holding anything
// else (labels, amounts) are left out.
func halfBlocksToImage(text string) *image.Gray {
	var rows [][]rune
	for _, l := range strings.Split(text, "\n") {
		rs := []rune(l)
		if len(rs) == 0 {
			continue
		}
		ok := true
		for _, r := range rs {
			if !strings.ContainsRune("█▀▄ ", r) {
				ok = false
				break
			}
		}
		if ok && strings.ContainsAny(l, "█▀▄") {
			rows = append(rows, rs)
		}
	}
	w := 0
	for _, r := range rows {
		w = max(w, len(r))
	}
	const s = 8
	img := image.NewGray(image.Rect(0, 0, w*s, len(rows)*2*s))
	for y, r := range rows {
		for x, c := range r {
			top := c == '█' || c == '▀'
			bottom := c == '█' || c == '▄'
			for dy := 0; dy < s; dy++ {
				for dx := 0; dx < s; dx++ {
					if top {
						img.SetGray(x*s+dx, 2*y*s+dy, color.Gray{255})
					}
					if bottom {
						img.SetGray(x*s+dx, (2*y+1)*s+dy, color.Gray{255})
					}
				}
			}
		}
	}
	return img
}

func TestHalfBlockQR(t *testing.T) {
	for _, content := range []string{wxContent, aliContent} {
		s, err := HalfBlockQR(content)
		if err != nil {
			t.Fatal(err)
		}
		img := halfBlocksToImage(s)
		preview(t, "tty_"+content[:5], img)
		wantCodes(t, decodeQR(t, img), content)
	}
	if _, err := HalfBlockQR(strings.Repeat("x", 3000)); err == nil {
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
	wantCodes(t, decodeQR(t, halfBlocksToImage(out)), wxContent, aliContent)
	for _, l := range strings.Split(out, "\n") {
		if w := cellWidth(l); w > 80 {
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
	wantCodes(t, decodeQR(t, halfBlocksToImage(string(b))), wxContent)
	o.draw(&frame{Screen: Screen{Kind: Paid, Amount: 250}, seq: 2}, testNow)
	b, _ = os.ReadFile(path)
	if !strings.HasPrefix(string(b), "Payment received  ¥2.50\n") || strings.ContainsRune(string(b), '█') {
		t.Fatalf("paid screen file:\n%s", b)
	}
}
