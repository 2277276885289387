package display

import (
	"image"
	"image/color"
	"image/draw"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/font/sfnt"
	"golang.org/x/image/math/fixed"

	"github.com/kioskpay/kioskpay/display/termqr"
)

// Cell size of TerminalImage in pixels: a QR module drawn as a half block
// is 8×8.
const (
	TermCellW = 8
	TermCellH = 16
)

// CJKFontPaths are where Debian puts fonts with Chinese glyphs
// (fonts-wqy-microhei, fonts-noto-cjk).
var CJKFontPaths = []string{
	"/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
	"/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
	"/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
}

// TerminalImage draws what a terminal of cols×rows cells shows when it
// holds lines (one per row from the top), for checking terminal output
// with a QR reader and for pictures of it in the documentation. It looks
// like most terminals: light on dark. The block elements QR codes are
// drawn with (█ ▀ ▄) fill exactly their cell or its upper or lower half,
// as terminals draw them; other characters are drawn in Go Mono, and East
// Asian wide characters, two cells wide, in the first font of
// CJKFontPaths present (blank without one).
func TerminalImage(lines []string, cols, rows int) (*image.RGBA, error) {
	mono, err := opentype.Parse(gomono.TTF)
	if err != nil {
		return nil, err
	}
	monoFace, err := opentype.NewFace(mono, &opentype.FaceOptions{Size: 13.3, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, err
	}
	var cjkFace font.Face
	for _, p := range CJKFontPaths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var f *sfnt.Font
		if f, _, err = pickFace(b); err == nil {
			cjkFace, err = opentype.NewFace(f, &opentype.FaceOptions{Size: 14, DPI: 72, Hinting: font.HintingFull})
		}
		if err == nil {
			break
		}
	}
	bg, fg := image.NewUniform(color.RGBA{0x1E, 0x1E, 0x1E, 0xFF}), image.NewUniform(color.RGBA{0xE8, 0xE8, 0xE8, 0xFF})
	img := image.NewRGBA(image.Rect(0, 0, cols*TermCellW, rows*TermCellH))
	draw.Draw(img, img.Bounds(), bg, image.Point{}, draw.Src)
	for y, line := range lines {
		if y >= rows {
			break
		}
		x := 0
		for _, r := range line {
			w := termqr.Width(string(r))
			if x+w > cols {
				break
			}
			cell := image.Rect(x*TermCellW, y*TermCellH, (x+w)*TermCellW, (y+1)*TermCellH)
			switch r {
			case '█':
				draw.Draw(img, cell, fg, image.Point{}, draw.Src)
			case '▀':
				cell.Max.Y -= TermCellH / 2
				draw.Draw(img, cell, fg, image.Point{}, draw.Src)
			case '▄':
				cell.Min.Y += TermCellH / 2
				draw.Draw(img, cell, fg, image.Point{}, draw.Src)
			case ' ':
			default:
				f := monoFace
				if w == 2 {
					f = cjkFace
				}
				if f != nil {
					d := font.Drawer{Dst: img, Src: fg, Face: f, Dot: fixed.P(cell.Min.X, cell.Max.Y-4)}
					d.DrawString(string(r))
				}
			}
			x += w
		}
	}
	return img, nil
}
