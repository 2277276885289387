// Package termqr draws QR codes in a terminal with UTF-8 half blocks and
// fits text to terminal columns. The daemon's tty output and kioskctl's pay
// command both use it; it needs only the payment package's QR encoder, so
// kioskctl does not link the display with its fonts and servers.
package termqr

import (
	"fmt"
	"strings"
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

// Code is a QR code to draw in a terminal, with its label above it.
type Code struct {
	Label   string
	Content string
}

// Lines draws codes in UTF-8 half blocks, each under its label: side
// by side, two columns apart, when together they fit in width terminal
// columns (width <= 0: no limit), else one below the other. invert draws
// the dark modules instead of the light ones, for dark-on-light terminals.
func Lines(codes []Code, width int, invert bool) ([]string, error) {
	blocks := make([][]string, len(codes))
	total := 0
	for i, c := range codes {
		mods, err := payment.QRModules(c.Content)
		if err != nil {
			return nil, fmt.Errorf("%s QR code: %w", c.Label, err)
		}
		blocks[i] = halfBlockLines(mods, invert)
		total += Width(blocks[i][0])
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
		return padRight(Fit(codes[i].Label, Width(bl[0])), Width(bl[0]))
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
			return strings.Repeat(" ", Width(bl[0]))
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

// Fit returns s cut to at most w terminal columns, ending in "…" when
// it was cut. East Asian wide characters take two columns.
func Fit(s string, w int) string {
	if Width(s) <= w {
		return s
	}
	var b strings.Builder
	used := 0
	for _, r := range s {
		cw := Width(string(r))
		if used+cw > w-1 {
			break
		}
		b.WriteRune(r)
		used += cw
	}
	return b.String() + "…"
}

// Width is how many terminal columns s takes: East Asian wide
// characters take two.
func Width(s string) int {
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
	if d := w - Width(s); d > 0 {
		return s + strings.Repeat(" ", d)
	}
	return s
}
