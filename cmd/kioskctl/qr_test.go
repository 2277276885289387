package main

import (
	"strings"
	"testing"

	"github.com/kioskpay/kioskpay/display/termqr"
	"github.com/kioskpay/kioskpay/payment"
)

// decodeHalfBlocks turns terminal output back into a module grid, the way
// a camera sees it: drawn cells are light unless invert. Rows past the
// symbol and its quiet zone are ignored by the caller.
func decodeHalfBlocks(t *testing.T, s string, invert bool) [][]bool {
	t.Helper()
	var grid [][]bool
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		r := []rune(line)
		top, bot := make([]bool, len(r)), make([]bool, len(r))
		for x, c := range r {
			var dt, db bool // drawn halves
			switch c {
			case '█':
				dt, db = true, true
			case '▀':
				dt = true
			case '▄':
				db = true
			case ' ':
			default:
				t.Fatalf("unexpected rune %q", c)
			}
			top[x], bot[x] = dt == invert, db == invert
		}
		grid = append(grid, top, bot)
	}
	return grid
}

func TestHalfBlockQRRoundTrip(t *testing.T) {
	for _, content := range []string{"weixin://wxpay/bizpayurl?pr=abc123", "https://qr.alipay.com/bax0123456789abcdefghij"} {
		want, err := payment.QRModules(content)
		if err != nil {
			t.Fatal(err)
		}
		for _, invert := range []bool{false, true} {
			lines, err := termqr.Lines([]termqr.Code{{Label: "x", Content: content}}, 80, invert)
			if err != nil {
				t.Fatal(err)
			}
			// The label line, then the code; trailing blank cells are
			// cut and count as the terminal's background.
			side := len(want) + 2*payment.QuietZone
			for i, l := range lines[1:] {
				lines[i+1] = l + strings.Repeat(" ", side-len([]rune(l)))
			}
			grid := decodeHalfBlocks(t, strings.Join(lines[1:], "\n"), invert)
			q := payment.QuietZone
			n := len(want) + 2*q
			if len(grid) < n || len(grid[0]) != n {
				t.Fatalf("grid %dx%d, want %dx%d", len(grid[0]), len(grid), n, n)
			}
			for y := 0; y < n; y++ {
				for x := 0; x < n; x++ {
					dark := false
					if y >= q && y < n-q && x >= q && x < n-q {
						dark = want[y-q][x-q]
					}
					if grid[y][x] != dark {
						t.Fatalf("invert=%v: module (%d,%d) = %v, want %v", invert, x, y, grid[y][x], dark)
					}
				}
			}
		}
	}
}
