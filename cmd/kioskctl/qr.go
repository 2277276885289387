package main

import (
	"strings"

	"github.com/kioskpay/kioskpay/device/display"
)

// invertBlocks swaps drawn and blank half blocks.
var invertBlocks = strings.NewReplacer("█", " ", " ", "█", "▀", "▄", "▄", "▀")

// renderQR draws content as a half-block QR code for the terminal, the same
// rendering as the device's tty display. Like qrencode -t UTF8 it draws the
// light modules, which suits light-on-dark terminals; invert draws the dark
// ones instead, for dark-on-light terminals.
func renderQR(content string, invert bool) (string, error) {
	s, err := display.HalfBlockQR(content)
	if err != nil || !invert {
		return s, err
	}
	return invertBlocks.Replace(s), nil
}
