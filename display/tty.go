package display

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/kioskpay/kioskpay/payment"
)

// Half blocks: each character shows two QR rows, like `qrencode -t UTF8`.
const (
	blockFull  = "█"
	blockUpper = "▀"
	blockLower = "▄"
	blockNone  = " "
)

// TermCode is a QR code to draw in a terminal, with its label above it.
type TermCode struct {
	Label   string
	Content string
}

// TermCodes draws codes in UTF-8 half blocks, each under its label: side
// by side, two columns apart, when together they fit in width terminal
// columns (width <= 0: no limit), else one below the other. invert draws
// the dark modules instead of the light ones, for dark-on-light terminals.
func TermCodes(codes []TermCode, width int, invert bool) ([]string, error) {
	blocks := make([][]string, len(codes))
	total := 0
	for i, c := range codes {
		mods, err := payment.QRModules(c.Content)
		if err != nil {
			return nil, fmt.Errorf("%s QR code: %w", c.Label, err)
		}
		blocks[i] = halfBlockLines(mods, invert)
		total += cellWidth(blocks[i][0])
	}
	total += 2 * max(0, len(codes)-1)
	var lines []string
	if width > 0 && total > width {
		for i, c := range codes {
			lines = append(lines, c.Label)
			lines = append(lines, blocks[i]...)
		}
		return lines, nil
	}
	row := func(cell func(i int, bl []string) string) string {
		var l strings.Builder
		for i, bl := range blocks {
			if i > 0 {
				l.WriteString("  ")
			}
			l.WriteString(cell(i, bl))
		}
		return strings.TrimRight(l.String(), " ")
	}
	lines = append(lines, row(func(i int, bl []string) string {
		return padRight(FitCells(codes[i].Label, cellWidth(bl[0])), cellWidth(bl[0]))
	}))
	rows := 0
	for _, bl := range blocks {
		rows = max(rows, len(bl))
	}
	for y := 0; y < rows; y++ {
		lines = append(lines, row(func(i int, bl []string) string {
			if y < len(bl) {
				return bl[y]
			}
			return strings.Repeat(" ", cellWidth(bl[0]))
		}))
	}
	return lines, nil
}

// halfBlockLines returns the lines of a half-block QR code with its quiet
// zone. Rows past the bottom count as the terminal's background. Light
// modules are drawn, or the dark ones with invert.
func halfBlockLines(mods [][]bool, invert bool) []string {
	n := len(mods)
	q := payment.QuietZone
	side := n + 2*q
	drawn := func(x, y int) bool {
		if y >= side {
			return false
		}
		x, y = x-q, y-q
		light := x < 0 || y < 0 || x >= n || y >= n || !mods[y][x]
		return light != invert
	}
	var lines []string
	var b strings.Builder
	for y := 0; y < side; y += 2 {
		b.Reset()
		for x := 0; x < side; x++ {
			top, bottom := drawn(x, y), drawn(x, y+1)
			switch {
			case top && bottom:
				b.WriteString(blockFull)
			case top:
				b.WriteString(blockUpper)
			case bottom:
				b.WriteString(blockLower)
			default:
				b.WriteString(blockNone)
			}
		}
		lines = append(lines, b.String())
	}
	return lines
}

// FitCells returns s cut to at most w terminal columns, ending in "…" when
// it was cut. East Asian wide characters take two columns.
func FitCells(s string, w int) string {
	if cellWidth(s) <= w {
		return s
	}
	var b strings.Builder
	used := 0
	for _, r := range s {
		cw := cellWidth(string(r))
		if used+cw > w-1 {
			break
		}
		b.WriteRune(r)
		used += cw
	}
	return b.String() + "…"
}

// cellWidth is how many terminal columns s takes: East Asian wide
// characters take two.
func cellWidth(s string) int {
	w := 0
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Cf, r):
		case isWide(r):
			w += 2
		default:
			w++
		}
	}
	return w
}

func isWide(r rune) bool {
	return unicode.Is(unicode.Han, r) || unicode.Is(unicode.Hangul, r) ||
		unicode.Is(unicode.Hiragana, r) || unicode.Is(unicode.Katakana, r) ||
		(r >= 0x3000 && r <= 0x303F) || (r >= 0xFF00 && r <= 0xFF60) || (r >= 0xFFE0 && r <= 0xFFE6)
}

func padRight(s string, w int) string {
	if d := w - cellWidth(s); d > 0 {
		return s + strings.Repeat(" ", d)
	}
	return s
}

// ttyText renders f as lines of text for a terminal.
func ttyText(f *frame, now time.Time, tx *texts) ([]string, error) {
	var lines []string
	switch f.Kind {
	case Pay:
		var codes []TermCode
		for _, c := range f.Codes {
			if len(codes) == 2 {
				break
			}
			codes = append(codes, TermCode{Label: tx.provider(c.Provider), Content: c.Content})
		}
		lines = append(lines, tx.PayTitle+"  "+f.Amount.String())
		if s := cleanText(f.Subject); s != "" {
			lines = append(lines, s)
		}
		// Codes side by side with their labels above.
		block, err := TermCodes(codes, 0, false)
		if err != nil {
			return nil, err
		}
		lines = append(lines, block...)
		lines = append(lines, tx.TimeLeft+" "+formatCountdown(remaining(f.ExpiresAt, now)))
		if f.OutTradeNo != "" {
			lines = append(lines, tx.Order+" "+cleanText(f.OutTradeNo))
		}
	case Idle:
		lines = append(lines, tx.IdleTitle, tx.IdleHint)
	case Paid:
		lines = append(lines, tx.PaidTitle+"  "+f.Amount.String(), tx.PaidHint)
	case Expired:
		lines = append(lines, tx.ExpiredTitle, tx.ExpiredHint)
	default:
		lines = append(lines, tx.ErrorTitle)
		if m := cleanText(f.Message); m != "" {
			lines = append(lines, m)
		}
		lines = append(lines, tx.ErrorHint)
	}
	return lines, nil
}

// ttyOutput writes screens to a terminal (redrawn in place with ANSI
// cursor control), a regular file (rewritten from the start, so it always
// holds the current screen) or any other writer (one block per new
// screen, no countdown ticks: a log would fill up).
type ttyOutput struct {
	w    io.Writer // set by Config.TTY
	path string
	tx   *texts

	out     io.Writer
	closer  io.Closer
	mode    ttyMode
	lastSeq uint64
	last    string
}

type ttyMode int

const (
	ttyStream ttyMode = iota
	ttyTerminal
	ttyFile
)

func (o *ttyOutput) name() string { return "tty" }

func (o *ttyOutput) ticks() bool { return o.out == nil || o.mode != ttyStream }

func (o *ttyOutput) open() error {
	if o.w != nil {
		o.out = o.w
	} else {
		wc, err := openOut(o.path)
		if err != nil {
			return fmt.Errorf("tty output: %w", err)
		}
		o.out, o.closer = wc, wc
		if nc, ok := wc.(nopCloser); ok {
			o.out = nc.Writer
		}
	}
	o.mode = ttyStream
	if f, ok := o.out.(*os.File); ok {
		if st, err := f.Stat(); err == nil {
			switch {
			case st.Mode()&os.ModeCharDevice != 0:
				o.mode = ttyTerminal
			case st.Mode().IsRegular():
				o.mode = ttyFile
			}
		}
	}
	o.last = ""
	return nil
}

func (o *ttyOutput) draw(f *frame, now time.Time) error {
	if o.out == nil {
		if err := o.open(); err != nil {
			return err
		}
	}
	if o.mode == ttyStream && f.seq == o.lastSeq && o.last != "" {
		return nil
	}
	lines, rerr := ttyText(f, now, o.tx)
	if rerr != nil {
		lines = []string{o.tx.ErrorTitle, rerr.Error()}
	}
	text := strings.Join(lines, "\n") + "\n"
	if text == o.last {
		return rerr
	}
	var err error
	switch o.mode {
	case ttyTerminal:
		// Home, overwrite each line and clear its rest, clear below: no
		// flicker from clearing the whole screen every second.
		var b strings.Builder
		b.WriteString("\x1b[H")
		for _, l := range lines {
			b.WriteString(l)
			b.WriteString("\x1b[K\n")
		}
		b.WriteString("\x1b[J")
		_, err = io.WriteString(o.out, b.String())
	case ttyFile:
		fl := o.out.(*os.File)
		if _, err = fl.WriteAt([]byte(text), 0); err == nil {
			err = fl.Truncate(int64(len(text)))
		}
	default:
		_, err = io.WriteString(o.out, text+"\n")
	}
	if err != nil {
		o.close()
		return fmt.Errorf("tty output: %w", err)
	}
	o.last, o.lastSeq = text, f.seq
	return rerr
}

func (o *ttyOutput) close() error {
	var err error
	if o.closer != nil {
		err = o.closer.Close()
	}
	o.out, o.closer, o.last = nil, nil, ""
	return err
}
