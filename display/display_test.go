package display

import (
	"context"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/display/fbgeom"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
)

// fakeOutput records draws; it can fail or block on demand.
type fakeOutput struct {
	mu      sync.Mutex
	draws   []time.Time
	seqs    []uint64
	fail    int           // fail this many draws first
	block   chan struct{} // when set, draw waits for it to close
	tickOff bool
}

func (o *fakeOutput) name() string { return "fake" }
func (o *fakeOutput) ticks() bool  { return !o.tickOff }
func (o *fakeOutput) close() error { return nil }

func (o *fakeOutput) draw(f *frame, now time.Time) error {
	o.mu.Lock()
	block := o.block
	o.mu.Unlock()
	if block != nil {
		<-block
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.draws = append(o.draws, time.Now())
	o.seqs = append(o.seqs, f.seq)
	if o.fail > 0 {
		o.fail--
		return errors.New("fake output broken")
	}
	return nil
}

func (o *fakeOutput) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.draws)
}

func (o *fakeOutput) lastSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.seqs) == 0 {
		return 0
	}
	return o.seqs[len(o.seqs)-1]
}

func runDisplay(t *testing.T, d *Display) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// eventually polls cond until it holds. The bound is generous because some
// conditions run zbarimg, which is slow on a loaded 2-core CI machine under
// the race detector; it only matters when something is really wrong.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func withFake(t *testing.T, fo *fakeOutput) *Display {
	d := newTestDisplay(t, Config{})
	d.runners = append(d.runners, &runner{out: fo, wake: make(chan struct{}, 1)})
	return d
}

// TestShowNeverBlocks: with an output stuck in draw, Show returns at once,
// and the output then draws the newest screen, not every one in between.
func TestShowNeverBlocks(t *testing.T) {
	fo := &fakeOutput{block: make(chan struct{})}
	d := withFake(t, fo)
	runDisplay(t, d)
	start := time.Now()
	for i := 0; i < 1000; i++ {
		d.Show(Screen{Kind: Error, Message: "x"})
	}
	d.Show(Screen{Kind: Paid, Amount: 1})
	if el := time.Since(start); el > time.Second {
		t.Fatalf("1001 Show calls took %v with a stuck output", el)
	}
	want := d.current().seq
	close(fo.block)
	eventually(t, "the newest screen drawn", func() bool { return fo.lastSeq() == want })
	if n := fo.count(); n > 3 {
		t.Errorf("%d draws for 1001 screens: intermediate screens were not skipped", n)
	}
}

// TestCountdownTicksOnlyWhileVisible: a pay screen redraws once a second,
// idle does not wake at all.
func TestCountdownTicksOnlyWhileVisible(t *testing.T) {
	if testing.Short() {
		t.Skip("watches the output for several seconds of countdown: skipped with -short; run go test ./display/")
	}
	fo := &fakeOutput{}
	d := withFake(t, fo)
	runDisplay(t, d)
	eventually(t, "first draw", func() bool { return fo.count() == 1 })
	time.Sleep(1200 * time.Millisecond)
	if n := fo.count(); n != 1 {
		t.Fatalf("idle screen drawn %d times in 1.2s", n)
	}
	s := payScreen(wxCode)
	s.ExpiresAt = time.Now().Add(2500 * time.Millisecond)
	d.Show(s)
	time.Sleep(3200 * time.Millisecond)
	n := fo.count()
	// 1 idle + the pay screen + a tick at each second boundary (3).
	if n < 4 || n > 6 {
		t.Fatalf("pay screen expiring in 2.5s drawn %d times", n-1)
	}
	time.Sleep(1200 * time.Millisecond)
	if fo.count() != n {
		t.Fatal("kept ticking after the countdown reached 0:00")
	}
}

// TestFailingOutputRetriesWithBackoff: failures are retried, each wait
// longer, and a good draw ends the retries.
func TestFailingOutputRetriesWithBackoff(t *testing.T) {
	fo := &fakeOutput{fail: 3, tickOff: true}
	d := withFake(t, fo)
	d.retryMin, d.retryMax = 50*time.Millisecond, 150*time.Millisecond
	runDisplay(t, d)
	eventually(t, "recovery", func() bool { return fo.count() == 4 })
	fo.mu.Lock()
	gaps := []time.Duration{fo.draws[1].Sub(fo.draws[0]), fo.draws[2].Sub(fo.draws[1]), fo.draws[3].Sub(fo.draws[2])}
	fo.mu.Unlock()
	for i, min := range []time.Duration{50, 100, 150} {
		if gaps[i] < min*time.Millisecond {
			t.Errorf("retry %d after %v, want at least %vms", i+1, gaps[i], min)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if fo.count() != 4 {
		t.Fatal("kept retrying after a good draw")
	}
}

// TestDisplayAllOutputs runs fb (a plain file), png and tty together; a
// broken fb does not stop the others, and it recovers when it can.
func TestDisplayAllOutputs(t *testing.T) {
	zbar(t)
	dir := t.TempDir()
	fbPath := filepath.Join(dir, "later", "fb0") // directory missing at first
	pngPath := filepath.Join(dir, "run", "qr.png")
	var tty syncbuf.Buffer
	geom := fbgeom.Geometry{Width: 480, Height: 800, BitsPerPixel: 16, LineLength: 1024}
	d := newTestDisplay(t, Config{
		Display: config.Display{
			Outputs:    []config.Output{config.OutputFB, config.OutputPNG, config.OutputTTY},
			FBDevice:   fbPath,
			FBGeometry: geom,
			PNGPath:    pngPath,
			FontFile:   cjkFontIfPresent(),
		},
		PNGWidth: 480, PNGHeight: 800,
		TTY: &tty,
	})
	d.retryMin, d.retryMax = 20*time.Millisecond, 100*time.Millisecond
	runDisplay(t, d)
	s := payScreen(wxCode, aliCode)
	s.ExpiresAt = time.Now().Add(5 * time.Minute)
	d.Show(s)

	readPNG := func() []string {
		f, err := os.Open(pngPath)
		if err != nil {
			return nil
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatalf("png output is not a whole PNG: %v", err)
		}
		return decodeQR(t, img)
	}
	eventually(t, "png with both codes", func() bool { return len(readPNG()) == 2 })
	wantCodes(t, readPNG(), wxContent, aliContent)
	eventually(t, "tty output", func() bool { return strings.Contains(tty.String(), "¥10.00") })
	wantCodes(t, decodeQR(t, halfBlocksToImage(t, tty.String())), wxContent, aliContent)

	// The framebuffer file appears: the fb output recovers on its own.
	if err := os.MkdirAll(filepath.Dir(fbPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fbPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	g, _ := fbgeom.Resolve(fbgeom.Geometry{}, geom)
	eventually(t, "fb frame", func() bool {
		b, _ := os.ReadFile(fbPath)
		return len(b) == g.LineLength*g.Height
	})
	raw, _ := os.ReadFile(fbPath)
	wantCodes(t, decodeQR(t, unrotate(raw, g, 0)), wxContent, aliContent)

	d.Show(Screen{Kind: Paid, Amount: 1000})
	eventually(t, "paid screen in png", func() bool { return len(readPNG()) == 0 })
	eventually(t, "paid screen on fb", func() bool {
		raw, _ := os.ReadFile(fbPath)
		return len(decodeQR(t, unrotate(raw, g, 0))) == 0
	})
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		key string
	}{
		{Config{Display: config.Display{Outputs: []config.Output{"hdmi"}}}, "display.outputs"},
		{Config{Display: config.Display{Outputs: []config.Output{"web", "web"}}}, "display.outputs"},
		{Config{Display: config.Display{Rotate: 45}}, "display.rotate"},
		{Config{Display: config.Display{Locale: "fr"}}, "display.locale"},
		{Config{Display: config.Display{WebListen: "nonsense"}}, "display.web_listen"},
		{Config{Display: config.Display{FontFile: "/nonexistent.ttc"}}, "display.font_file"},
		{Config{Display: config.Display{FBGeometry: fbgeom.Geometry{Width: 10, Height: 10, BitsPerPixel: 7}}}, "bits_per_pixel"},
		{Config{Display: config.Display{FBGeometry: fbgeom.Geometry{Width: 10, Height: 10, BitsPerPixel: 32, LineLength: 8}}}, "line_length"},
		{Config{Display: config.Display{FBGeometry: fbgeom.Geometry{BitsPerPixel: 12}}}, "bits_per_pixel"},
	} {
		_, err := New(tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%+v: error %v, want one naming %s", tc.cfg, err, tc.key)
		}
	}
}

// TestFBPlainFileNeedsOverride: without a complete geometry a plain file
// is refused with a hint, never treated as a framebuffer of guessed size.
func TestFBPlainFileNeedsOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fb0")
	os.WriteFile(path, nil, 0o644)
	o := &fbOutput{path: path, comp: newComposer(testFonts(t, false), "en"), log: testLogger(t)}
	err := o.draw(&frame{Screen: Screen{Kind: Idle}, seq: 1}, testNow)
	if err == nil || !strings.Contains(err.Error(), "override") {
		t.Fatalf("plain file without geometry: %v", err)
	}
}
