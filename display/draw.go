package display

import (
	"image"
	"image/color"
	"math"

	"golang.org/x/image/vector"
)

// Colours of the screens. Provider colours are accents around the QR code
// only; the code itself is always black on white.
var (
	colBackground = color.RGBA{0xF4, 0xF5, 0xF7, 0xFF}
	colCard       = color.RGBA{0xFF, 0xFF, 0xFF, 0xFF}
	colText       = color.RGBA{0x1F, 0x23, 0x29, 0xFF}
	colText2      = color.RGBA{0x4E, 0x55, 0x5E, 0xFF}
	colText3      = color.RGBA{0x8F, 0x95, 0x9E, 0xFF}
	colTrack      = color.RGBA{0xDE, 0xE0, 0xE3, 0xFF}
	colWxPay      = color.RGBA{0x07, 0xC1, 0x60, 0xFF}
	colAlipay     = color.RGBA{0x16, 0x77, 0xFF, 0xFF}
	colSuccess    = color.RGBA{0x07, 0xC1, 0x60, 0xFF}
	colWarn       = color.RGBA{0xF5, 0x4A, 0x45, 0xFF}
	colNeutral    = color.RGBA{0x8F, 0x95, 0x9E, 0xFF}
	colQRDark     = color.RGBA{0x00, 0x00, 0x00, 0xFF}
	colQRLight    = color.RGBA{0xFF, 0xFF, 0xFF, 0xFF}
)

// fillRect fills r (clipped to dst) with c, one row at a time.
func fillRect(dst *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(dst.Rect)
	if r.Empty() {
		return
	}
	w := r.Dx() * 4
	first := dst.Pix[dst.PixOffset(r.Min.X, r.Min.Y):]
	first = first[:w]
	for i := 0; i < w; i += 4 {
		first[i], first[i+1], first[i+2], first[i+3] = c.R, c.G, c.B, c.A
	}
	for y := r.Min.Y + 1; y < r.Max.Y; y++ {
		off := dst.PixOffset(r.Min.X, y)
		copy(dst.Pix[off:off+w], first)
	}
}

// painter draws anti-aliased shapes with one reusable rasterizer.
type painter struct {
	z vector.Rasterizer
}

// shape rasterises the path built by fn inside box and fills it with c.
// fn gets coordinates relative to box.Min.
func (p *painter) shape(dst *image.RGBA, box image.Rectangle, c color.RGBA, fn func(z *vector.Rasterizer)) {
	if box.Empty() {
		return
	}
	p.z.Reset(box.Dx(), box.Dy())
	fn(&p.z)
	// Rasterizer.Draw maps box.Min to the rasterizer's origin and does not
	// clip, so a shape that would stick out of dst is not drawn at all.
	if !box.In(dst.Rect) {
		return
	}
	p.z.Draw(dst, box, image.NewUniform(c), image.Point{})
}

// circle fills a disc centred at (cx, cy).
func (p *painter) circle(dst *image.RGBA, cx, cy, r float64, c color.RGBA) {
	box := image.Rect(int(math.Floor(cx-r)), int(math.Floor(cy-r)), int(math.Ceil(cx+r)), int(math.Ceil(cy+r)))
	ox, oy := float64(box.Min.X), float64(box.Min.Y)
	p.shape(dst, box, c, func(z *vector.Rasterizer) {
		arcPath(z, cx-ox, cy-oy, r)
	})
}

// arcPath adds a closed circle made of four cubic Béziers.
func arcPath(z *vector.Rasterizer, cx, cy, r float64) {
	const k = 0.5522847498
	f := func(v float64) float32 { return float32(v) }
	z.MoveTo(f(cx+r), f(cy))
	z.CubeTo(f(cx+r), f(cy+k*r), f(cx+k*r), f(cy+r), f(cx), f(cy+r))
	z.CubeTo(f(cx-k*r), f(cy+r), f(cx-r), f(cy+k*r), f(cx-r), f(cy))
	z.CubeTo(f(cx-r), f(cy-k*r), f(cx-k*r), f(cy-r), f(cx), f(cy-r))
	z.CubeTo(f(cx+k*r), f(cy-r), f(cx+r), f(cy-k*r), f(cx+r), f(cy))
	z.ClosePath()
}

// roundRect fills r with corners of radius rad.
func (p *painter) roundRect(dst *image.RGBA, r image.Rectangle, rad float64, c color.RGBA) {
	w, h := float64(r.Dx()), float64(r.Dy())
	rad = math.Min(rad, math.Min(w, h)/2)
	if rad < 1 {
		fillRect(dst, r, c)
		return
	}
	// Fill the straight middle parts directly; rasterise only the corners'
	// rows, which keeps large cards cheap.
	ri := int(math.Ceil(rad))
	fillRect(dst, image.Rect(r.Min.X, r.Min.Y+ri, r.Max.X, r.Max.Y-ri), c)
	const k = 0.5522847498
	f := func(v float64) float32 { return float32(v) }
	for _, top := range []bool{true, false} {
		band := image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+ri)
		if !top {
			band = image.Rect(r.Min.X, r.Max.Y-ri, r.Max.X, r.Max.Y)
		}
		p.shape(dst, band, c, func(z *vector.Rasterizer) {
			if top {
				z.MoveTo(0, f(rad))
				z.CubeTo(0, f(rad-k*rad), f(rad-k*rad), 0, f(rad), 0)
				z.LineTo(f(w-rad), 0)
				z.CubeTo(f(w-rad+k*rad), 0, f(w), f(rad-k*rad), f(w), f(rad))
				z.LineTo(f(w), f(float64(ri)))
				z.LineTo(0, f(float64(ri)))
			} else {
				d := float64(ri) - rad // band starts rad-ri above the curve start
				z.MoveTo(0, 0)
				z.LineTo(f(w), 0)
				z.LineTo(f(w), f(d))
				z.CubeTo(f(w), f(d+k*rad), f(w-rad+k*rad), f(d+rad), f(w-rad), f(d+rad))
				z.LineTo(f(rad), f(d+rad))
				z.CubeTo(f(rad-k*rad), f(d+rad), 0, f(d+k*rad), 0, f(d))
			}
			z.ClosePath()
		})
	}
}

// line draws a thick segment with round caps.
func (p *painter) line(dst *image.RGBA, x0, y0, x1, y1, width float64, c color.RGBA) {
	h := width / 2
	box := image.Rect(int(math.Floor(math.Min(x0, x1)-h)), int(math.Floor(math.Min(y0, y1)-h)),
		int(math.Ceil(math.Max(x0, x1)+h)), int(math.Ceil(math.Max(y0, y1)+h)))
	ox, oy := float64(box.Min.X), float64(box.Min.Y)
	dx, dy := x1-x0, y1-y0
	l := math.Hypot(dx, dy)
	if l == 0 {
		p.circle(dst, x0, y0, h, c)
		return
	}
	nx, ny := -dy/l*h, dx/l*h
	f := func(v float64) float32 { return float32(v) }
	p.shape(dst, box, c, func(z *vector.Rasterizer) {
		z.MoveTo(f(x0+nx-ox), f(y0+ny-oy))
		z.LineTo(f(x1+nx-ox), f(y1+ny-oy))
		z.LineTo(f(x1-nx-ox), f(y1-ny-oy))
		z.LineTo(f(x0-nx-ox), f(y0-ny-oy))
		z.ClosePath()
	})
	// Caps are separate shapes: in one path their winding could cancel the
	// segment's where they overlap.
	p.circle(dst, x0, y0, h, c)
	p.circle(dst, x1, y1, h, c)
}
