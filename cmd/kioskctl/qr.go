package main

import (
	"strings"

	"github.com/kioskpay/kioskpay/payment"
)

// halfBlockQR renders content as a QR code in text, two module rows per
// line with Unicode half blocks, inside the standard 4-module quiet zone.
//
// Like qrencode -t UTF8 it draws the light modules and leaves the dark ones
// as terminal background, which suits the usual light-on-dark terminal;
// invert draws the dark modules instead, for dark-on-light terminals.
func halfBlockQR(content string, invert bool) (string, error) {
	mods, err := payment.QRModules(content)
	if err != nil {
		return "", err
	}
	q := payment.QuietZone
	n := len(mods) + 2*q
	dark := func(x, y int) bool {
		x, y = x-q, y-q
		if y < 0 || y >= len(mods) || x < 0 || x >= len(mods) {
			return false
		}
		return mods[y][x]
	}
	var b strings.Builder
	for y := 0; y < n; y += 2 {
		for x := 0; x < n; x++ {
			drawTop := dark(x, y) == invert
			// n is odd: the last line's lower half lies outside the
			// symbol and its quiet zone, so it stays background.
			drawBot := y+1 < n && dark(x, y+1) == invert
			switch {
			case drawTop && drawBot:
				b.WriteRune('█')
			case drawTop:
				b.WriteRune('▀')
			case drawBot:
				b.WriteRune('▄')
			default:
				b.WriteByte(' ')
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}
