// Package display shows the customer what to do: a QR code to scan with
// the amount and a countdown, then the outcome. One Screen at a time is
// composed for each configured output: the Linux framebuffer (fb), an
// atomically replaced PNG file (png), a page for a kiosk browser (web) and
// a UTF-8 terminal (tty).
//
// Displays are accessories to payment: Show never blocks, the newest screen
// replaces any not yet drawn, and an output that fails is logged and
// retried with backoff (1 s doubling to 30 s) while the others carry on.
// Outputs redraw once a second only while a countdown is visible; the idle
// screen is drawn once and never wakes the CPU again.
//
// Screens (fb, png) are composed at the output's resolution. The layout
// follows the shape of the screen: on a portrait panel the texts sit above
// and the countdown below the code(s); on a landscape panel the texts sit
// left of a single code, or in a band above two codes. Whichever
// arrangement gives the QR modules the largest integer pixel size wins.
// QR codes are always black on white with a quiet zone of at least
// payment.QuietZone modules; provider colours (WeChat #07C160, Alipay
// #1677FF) appear only as the frame and label around them. Amounts are
// shrunk to fit, never shortened; other text that does not fit ends in "…".
//
// Fonts: font_file (TTF, OTF or a TTC collection) is used first for every
// character it has, so Latin, digits and CJK share one design; the
// built-in Go fonts fill in the rest. Bold is synthesised for
// single-weight CJK fonts. Tofu boxes are never drawn: without a font that
// covers the Chinese texts the screens speak English, and a subject or
// message containing a character no font has is left out whole, because a
// partly drawn subject can change meaning ("按摩15分钟" without CJK glyphs
// would read "15").
//
// Rotation: rotate = 90 turns the picture 90° clockwise before it reaches
// the framebuffer (for a panel mounted turned 90° counter-clockwise); 180
// and 270 likewise. The fb output reads geometry and pixel layout from the
// driver (FBIOGET_VSCREENINFO, FBIOGET_FSCREENINFO), addresses every line
// by line_length and packs each pixel by the red/green/blue/transp
// bitfields as a little-endian word of 16, 24 or 32 bits. A whole frame
// goes out in one pwrite; a countdown tick rewrites only its rows.
// Config.FBGeometry overrides what the driver says, so a plain file can
// stand in for /dev/fb0.
//
// The web output serves a self-contained page (no external assets; a CSP
// forbids them) that renders the state it was served with, then follows
// Server-Sent Events from /events and reconnects by itself; the browser
// runs the countdown. /state is the same state as JSON, /qr.png?i=0|1 the
// code(s) as PNG, /healthz a liveness check. Handler exposes all of it for
// mounting on another server.
//
// The tty output draws codes with UTF-8 half blocks like `qrencode -t
// UTF8`: light modules are blocks, for light-on-dark terminals.
package display

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/display/fbgeom"
)

// Config selects and configures the outputs: the [display] table, and what
// only a program sets.
type Config struct {
	config.Display
	// PNGWidth and PNGHeight size the PNG, default 720×1280.
	PNGWidth  int
	PNGHeight int
	// TTY, when set, receives the tty output instead of TTYPath.
	TTY io.Writer
	// Now is the clock, time.Now when nil (tests inject their own).
	Now func() time.Time
}

// Defaults for empty Config fields that are not configuration keys; the
// others take config's Default* values.
const (
	DefaultPNGWidth  = 720
	DefaultPNGHeight = 1280
)

// withDefaults fills in defaults and checks every field, naming the key
// that is wrong.
func (c Config) withDefaults() (Config, error) {
	if c.FBDevice == "" {
		c.FBDevice = config.DefaultFBDevice
	}
	if c.PNGPath == "" {
		c.PNGPath = config.DefaultPNGPath
	}
	if c.WebListen == "" {
		c.WebListen = config.DefaultWebListen
	}
	if c.PNGWidth == 0 {
		c.PNGWidth = DefaultPNGWidth
	}
	if c.PNGHeight == 0 {
		c.PNGHeight = DefaultPNGHeight
	}
	if c.Locale == "" {
		c.Locale = config.DefaultLocale
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	seen := map[config.Output]bool{}
	for _, o := range c.Outputs {
		if !o.Valid() {
			return c, fmt.Errorf("display.outputs: unknown output %q (want fb, png, web or tty)", o)
		}
		if seen[o] {
			return c, fmt.Errorf("display.outputs: %q listed twice", o)
		}
		seen[o] = true
	}
	switch c.Rotate {
	case 0, 90, 180, 270:
	default:
		return c, fmt.Errorf("display.rotate: %d: want 0, 90, 180 or 270", c.Rotate)
	}
	if !c.Locale.Valid() {
		return c, fmt.Errorf("display.locale: %q: want zh or en", c.Locale)
	}
	if c.PNGWidth < 64 || c.PNGHeight < 64 || c.PNGWidth > fbgeom.MaxSide || c.PNGHeight > fbgeom.MaxSide {
		return c, fmt.Errorf("display.png_width/png_height: %dx%d: want 64..%d", c.PNGWidth, c.PNGHeight, fbgeom.MaxSide)
	}
	if _, _, err := net.SplitHostPort(c.WebListen); err != nil {
		return c, fmt.Errorf("display.web_listen: %w", err)
	}
	if c.FBGeometry != (fbgeom.Geometry{}) {
		// Validate what can be validated without the device: a complete
		// override must make sense on its own.
		o := c.FBGeometry
		if o.Width != 0 && o.Height != 0 && o.BitsPerPixel != 0 {
			if _, err := fbgeom.Resolve(fbgeom.Geometry{}, o); err != nil {
				return c, fmt.Errorf("display.fb_geometry: %w", err)
			}
		} else if o.BitsPerPixel != 0 && o.BitsPerPixel != 16 && o.BitsPerPixel != 24 && o.BitsPerPixel != 32 {
			return c, fmt.Errorf("display.fb_geometry: bits_per_pixel %d: want 16, 24 or 32", o.BitsPerPixel)
		}
	}
	return c, nil
}

// output is one place where screens appear. draw is called from the
// output's own goroutine only.
type output interface {
	name() string
	// draw shows f as it looks at now. It may redraw only what changed
	// since the last call with the same frame.
	draw(f *frame, now time.Time) error
	close() error
}

// ticker is implemented by outputs that redraw the countdown themselves
// (the web page counts down in the browser and needs no ticks).
type ticker interface {
	ticks() bool
}

// Display fans screens out to the configured outputs.
type Display struct {
	cfg   Config
	log   *slog.Logger
	fonts *fontSet
	web   *webOutput

	mu      sync.Mutex
	cur     frame
	runners []*runner

	retryMin, retryMax time.Duration // backoff for failing outputs

	closeOnce sync.Once
}

// New checks cfg, loads the font and prepares the outputs. It does not
// touch the devices: Run opens them, and retries while they fail.
func New(cfg Config, logger *slog.Logger) (*Display, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fs, err := loadFonts(cfg.FontFile)
	if err != nil {
		return nil, fmt.Errorf("display.%w", err)
	}
	d := &Display{cfg: cfg, log: logger.With("component", "display"), fonts: fs,
		retryMin: retryMin, retryMax: retryMax}
	d.cur = frame{Screen: Screen{Kind: Idle}, seq: 1}
	probe := newTypesetter(fs)
	warnNoCJK(d.log, cfg, probe)
	// A browser draws Chinese with its own fonts: the page follows the
	// locale whatever font_file says.
	d.web = newWebOutput(textsOf(cfg.Locale), cfg.Now)
	d.web.draw(&d.cur, cfg.Now())
	for _, name := range cfg.Outputs {
		var o output
		switch name {
		case config.OutputFB:
			o = &fbOutput{path: cfg.FBDevice, override: cfg.FBGeometry, rotate: cfg.Rotate,
				comp: newComposer(fs, cfg.Locale), log: d.log}
		case config.OutputPNG:
			o = &pngOutput{path: cfg.PNGPath, w: cfg.PNGWidth, h: cfg.PNGHeight, comp: newComposer(fs, cfg.Locale)}
		case config.OutputWeb:
			o = &webServer{web: d.web, addr: cfg.WebListen, log: d.log}
		case config.OutputTTY:
			o = &ttyOutput{w: cfg.TTY, path: cfg.TTYPath, tx: textsFor(cfg.Locale, probe)}
		}
		d.runners = append(d.runners, &runner{out: o, wake: make(chan struct{}, 1)})
	}
	return d, nil
}

// warnNoCJK tells the operator when outputs that draw their own text (fb,
// png, tty) will show English although the locale is Chinese, and why.
func warnNoCJK(log *slog.Logger, cfg Config, probe *typesetter) {
	if cfg.Locale != "zh" || textsFor("zh", probe).Lang == "zh" {
		return
	}
	var own []string
	for _, o := range cfg.Outputs {
		if o != config.OutputWeb {
			own = append(own, string(o))
		}
	}
	if len(own) == 0 {
		return
	}
	if cfg.FontFile == "" {
		log.Warn("no font_file set: the "+strings.Join(own, ", ")+" output shows English; set display.font_file to a font with Chinese glyphs (e.g. /usr/share/fonts/truetype/wqy/wqy-microhei.ttc)",
			"outputs", own)
		return
	}
	log.Warn("font_file has no glyphs for the Chinese texts: the "+strings.Join(own, ", ")+" output shows English",
		"font_file", cfg.FontFile, "outputs", own)
}

// Handler serves the web display (page, /events, /state, /qr.png,
// /healthz) so that a caller can mount it on its own server.
func (d *Display) Handler() http.Handler {
	return d.web
}

// WebAddr returns the address the web output listens on once Run has
// started it ("" before, or without a web output): with web_listen port 0
// the system picks the port.
func (d *Display) WebAddr() string {
	for _, r := range d.runners {
		if w, ok := r.out.(*webServer); ok {
			return w.Addr()
		}
	}
	return ""
}

// Show makes s the screen to display. It never blocks: outputs pick up the
// newest screen when they are ready, skipping any in between.
func (d *Display) Show(s Screen) {
	s.Codes = slices.Clone(s.Codes)
	now := d.cfg.Now()
	d.mu.Lock()
	start := d.cur.start
	if s.Kind != Pay || d.cur.Kind != Pay || d.cur.OutTradeNo != s.OutTradeNo || s.OutTradeNo == "" {
		start = now
	}
	d.cur = frame{Screen: s, seq: d.cur.seq + 1, start: start}
	f := d.cur
	d.mu.Unlock()
	// The web state is cheap to update and must be current for Handler
	// users even when the web output is not run by Run.
	d.web.draw(&f, now)
	for _, r := range d.runners {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// current returns the newest frame.
func (d *Display) current() frame {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// Run drives the outputs until ctx is cancelled, then closes them. It
// returns nil on cancellation: failing outputs are logged, never fatal.
func (d *Display) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, r := range d.runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.runOutput(ctx, r)
		}()
	}
	wg.Wait()
	return nil
}

// Close releases the outputs' devices. Run closes them too when it ends.
func (d *Display) Close() error {
	var first error
	d.closeOnce.Do(func() {
		for _, r := range d.runners {
			r.mu.Lock()
			if err := r.out.close(); err != nil && first == nil {
				first = err
			}
			r.mu.Unlock()
		}
	})
	return first
}

// runner drives one output.
type runner struct {
	out  output
	wake chan struct{}
	mu   sync.Mutex // serialises draw and Close
}

// Backoff bounds for a failing output.
const (
	retryMin = time.Second
	retryMax = 30 * time.Second
)

func (d *Display) runOutput(ctx context.Context, r *runner) {
	log := d.log.With("output", r.out.name())
	defer func() {
		r.mu.Lock()
		if err := r.out.close(); err != nil {
			log.Warn("close display output", "err", err)
		}
		r.mu.Unlock()
	}()
	backoff := time.Duration(0)
	failing := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		f := d.current()
		now := d.cfg.Now()
		r.mu.Lock()
		err := r.out.draw(&f, now)
		r.mu.Unlock()
		var wait time.Duration
		armed := false
		if err != nil {
			backoff = min(max(2*backoff, d.retryMin), d.retryMax)
			if !failing || backoff == d.retryMax {
				log.Error("display output failed; retrying", "err", err, "retry_in", backoff)
			}
			failing = true
			wait, armed = backoff, true
		} else {
			if failing {
				log.Info("display output recovered")
			}
			failing, backoff = false, 0
			tick := true
			if t, ok := r.out.(ticker); ok {
				tick = t.ticks()
			}
			if tick {
				wait, armed = nextTick(&f, now)
			}
		}
		timer.Stop()
		var tc <-chan time.Time
		if armed {
			timer.Reset(wait)
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tc:
		}
	}
}

// openOut opens path for an output that writes a stream ("-" or "" is
// standard output).
func openOut(path string) (io.WriteCloser, error) {
	if path == "" || path == "-" {
		return nopCloser{os.Stdout}, nil
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
