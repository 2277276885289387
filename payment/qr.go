package payment

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"

	qrcode "github.com/skip2/go-qrcode"
)

// QuietZone is the blank border, in modules, around every QR code kioskpay
// draws. ISO/IEC 18004 asks for 4; readers fail on less.
const QuietZone = 4

// QRModules encodes content as a QR code (error correction M) and returns its
// modules without any border: modules[y][x] is true for a dark module.
func QRModules(content string) ([][]bool, error) {
	q, err := qrcode.New(content, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("encode QR: %w", err)
	}
	// DisableBorder must be set before the first Bitmap call: the library
	// caches the symbol.
	q.DisableBorder = true
	return q.Bitmap(), nil
}

// QRImage draws content as a QR code with scale pixels per module and a
// QuietZone border. The integer scale keeps every module the same size.
func QRImage(content string, scale int) (*image.Paletted, error) {
	if scale < 1 {
		return nil, fmt.Errorf("QR scale %d: must be at least 1", scale)
	}
	mods, err := QRModules(content)
	if err != nil {
		return nil, err
	}
	n := len(mods) + 2*QuietZone
	img := image.NewPaletted(image.Rect(0, 0, n*scale, n*scale), color.Palette{color.White, color.Black})
	for y, row := range mods {
		for x, dark := range row {
			if !dark {
				continue
			}
			x0, y0 := (x+QuietZone)*scale, (y+QuietZone)*scale
			for dy := 0; dy < scale; dy++ {
				off := img.PixOffset(x0, y0+dy)
				for dx := 0; dx < scale; dx++ {
					img.Pix[off+dx] = 1
				}
			}
		}
	}
	return img, nil
}

// QRPNG returns content as a PNG QR code with scale pixels per module.
func QRPNG(content string, scale int) ([]byte, error) {
	img, err := QRImage(content, scale)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode QR PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// QRDataURL returns content as a "data:image/png;base64,…" URL, the form of
// the seed API's qrcodeImage field. 8 pixels per module gives a 300–400 px
// image for typical payment URLs, enough for a phone to scan off a screen.
func QRDataURL(content string) (string, error) {
	b, err := QRPNG(content, 8)
	if err != nil {
		return "", err
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b), nil
}
