package payment

import (
	"bytes"
	"encoding/base64"
	"image/png"
	"strings"
	"testing"

	"github.com/kioskpay/kioskpay/internal/qrtest"
)

var qrContents = []string{
	"weixin://wxpay/bizpayurl?pr=JyC91EIz1",
	"https://qr.alipay.com/bax03431ljhokirwl38f00a7",
}

func TestQRImageGeometry(t *testing.T) {
	for _, content := range qrContents {
		mods, err := QRModules(content)
		if err != nil {
			t.Fatal(err)
		}
		img, err := QRImage(content, 5)
		if err != nil {
			t.Fatal(err)
		}
		want := (len(mods) + 2*QuietZone) * 5
		if b := img.Bounds(); b.Dx() != want || b.Dy() != want {
			t.Fatalf("%s: image %v, want %dx%d", content, b, want, want)
		}
		// The quiet zone is blank: no dark pixel within 4 modules of the edge.
		for y := 0; y < want; y++ {
			for x := 0; x < want; x++ {
				inZone := x < QuietZone*5 || y < QuietZone*5 || x >= want-QuietZone*5 || y >= want-QuietZone*5
				if inZone && img.ColorIndexAt(x, y) != 0 {
					t.Fatalf("%s: dark pixel in the quiet zone at %d,%d", content, x, y)
				}
			}
		}
		// Every module is exactly scale×scale pixels of one colour.
		for my, row := range mods {
			for mx, dark := range row {
				for d := 0; d < 25; d++ {
					px, py := (mx+QuietZone)*5+d%5, (my+QuietZone)*5+d/5
					if (img.ColorIndexAt(px, py) == 1) != dark {
						t.Fatalf("%s: module %d,%d not uniform", content, mx, my)
					}
				}
			}
		}
	}
	if _, err := QRImage("x", 0); err == nil {
		t.Error("scale 0 accepted")
	}
}

// TestQRDataURLDecodes decodes the qrcodeImage a reply would carry with a real
// QR reader (zbarimg), as a customer's phone would.
func TestQRDataURLDecodes(t *testing.T) {
	qrtest.Zbar(t)
	for _, content := range qrContents {
		url, err := QRDataURL(content)
		if err != nil {
			t.Fatal(err)
		}
		b64, ok := strings.CutPrefix(url, "data:image/png;base64,")
		if !ok {
			t.Fatalf("not a PNG data URL: %.40s", url)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(raw)); err != nil {
			t.Fatalf("not a PNG: %v", err)
		}
		qrtest.Want(t, qrtest.DecodePNG(t, raw), content)
	}
}

func TestQRTooLong(t *testing.T) {
	if _, err := QRModules(strings.Repeat("x", 3000)); err == nil {
		t.Error("3000-byte content encoded")
	}
}
