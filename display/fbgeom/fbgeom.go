// Package fbgeom describes a framebuffer's size and pixel layout and checks
// it. It needs only the standard library, so the configuration can check a
// display.fb_geometry override without linking the display.
package fbgeom

import "fmt"

// Bitfield is where one colour channel sits in a pixel word, counted from
// the least significant bit (struct fb_bitfield without msb_right).
type Bitfield struct {
	Offset uint32 `toml:"offset" json:"offset"`
	Length uint32 `toml:"length" json:"length"`
}

// Mask is the channel's bits within a pixel word.
func (b Bitfield) Mask() uint64 {
	if b.Length == 0 {
		return 0
	}
	return ((uint64(1) << b.Length) - 1) << b.Offset
}

// Geometry is a framebuffer's size and pixel layout. As an override
// (display.Config.FBGeometry, the config key display.fb_geometry) its non-zero fields replace what the driver reports,
// so that a plain file can stand in for /dev/fb0 and a driver whose ioctls
// lie can still be used. A zero LineLength means Width*BitsPerPixel/8;
// all-zero bitfields mean the usual layout for the depth (RGB565, RGB888
// with blue in the low byte, XRGB8888).
type Geometry struct {
	Width        int      `toml:"width" json:"width"`
	Height       int      `toml:"height" json:"height"`
	BitsPerPixel int      `toml:"bits_per_pixel" json:"bits_per_pixel"`
	LineLength   int      `toml:"line_length" json:"line_length"` // bytes per line, padding included
	Red          Bitfield `toml:"red" json:"red"`
	Green        Bitfield `toml:"green" json:"green"`
	Blue         Bitfield `toml:"blue" json:"blue"`
	Transp       Bitfield `toml:"transp" json:"transp"`
}

func (g Geometry) hasBitfields() bool {
	return g.Red.Length|g.Green.Length|g.Blue.Length|g.Transp.Length|
		g.Red.Offset|g.Green.Offset|g.Blue.Offset|g.Transp.Offset != 0
}

// defaultBitfields returns the common layout for a depth.
func defaultBitfields(bpp int) (r, g, b, t Bitfield) {
	switch bpp {
	case 16:
		return Bitfield{11, 5}, Bitfield{5, 6}, Bitfield{0, 5}, Bitfield{}
	case 24:
		return Bitfield{16, 8}, Bitfield{8, 8}, Bitfield{0, 8}, Bitfield{}
	default:
		return Bitfield{16, 8}, Bitfield{8, 8}, Bitfield{0, 8}, Bitfield{}
	}
}

// MaxSide bounds width and height: no panel is larger, and nonsense from
// a driver or a config file must not turn into a huge allocation.
const MaxSide = 16384

// Validate reports the first field that makes g unusable, naming it.
func (g Geometry) Validate() error {
	if g.Width <= 0 || g.Width > MaxSide {
		return fmt.Errorf("fb geometry: width %d: want 1..%d", g.Width, MaxSide)
	}
	if g.Height <= 0 || g.Height > MaxSide {
		return fmt.Errorf("fb geometry: height %d: want 1..%d", g.Height, MaxSide)
	}
	switch g.BitsPerPixel {
	case 16, 24, 32:
	default:
		return fmt.Errorf("fb geometry: bits_per_pixel %d: want 16, 24 or 32", g.BitsPerPixel)
	}
	if min := g.Width * g.BitsPerPixel / 8; g.LineLength < min {
		return fmt.Errorf("fb geometry: line_length %d is less than width*bits_per_pixel/8 = %d", g.LineLength, min)
	}
	if g.LineLength > 4*MaxSide*2 {
		return fmt.Errorf("fb geometry: line_length %d: too large", g.LineLength)
	}
	fields := []struct {
		name string
		b    Bitfield
	}{{"red", g.Red}, {"green", g.Green}, {"blue", g.Blue}, {"transp", g.Transp}}
	for i, f := range fields {
		if f.b.Length == 0 && i < 3 {
			return fmt.Errorf("fb geometry: %s.length 0: every colour needs bits", f.name)
		}
		if f.b.Length > 16 {
			return fmt.Errorf("fb geometry: %s.length %d: at most 16", f.name, f.b.Length)
		}
		if f.b.Length > 0 && uint64(f.b.Offset)+uint64(f.b.Length) > uint64(g.BitsPerPixel) {
			return fmt.Errorf("fb geometry: %s.offset %d + %s.length %d exceeds bits_per_pixel %d",
				f.name, f.b.Offset, f.name, f.b.Length, g.BitsPerPixel)
		}
	}
	for i := range fields {
		for j := i + 1; j < len(fields); j++ {
			if fields[i].b.Mask()&fields[j].b.Mask() != 0 {
				return fmt.Errorf("fb geometry: %s (offset %d, length %d) overlaps %s (offset %d, length %d)",
					fields[i].name, fields[i].b.Offset, fields[i].b.Length,
					fields[j].name, fields[j].b.Offset, fields[j].b.Length)
			}
		}
	}
	return nil
}

// Standalone completes an override that describes the whole panel (width,
// height and bits_per_pixel set) with the same defaults the framebuffer
// output applies, and validates it, so a config file can be checked without
// opening the device.
func (g Geometry) Standalone() (Geometry, error) { return Resolve(Geometry{}, g) }

// Resolve merges what the driver reported (dev, zero when it could
// not be asked) with the override o, fills in defaults and validates.
func Resolve(dev, o Geometry) (Geometry, error) {
	g := dev
	if o.Width != 0 {
		g.Width = o.Width
	}
	if o.Height != 0 {
		g.Height = o.Height
	}
	depthChanged := o.BitsPerPixel != 0 && o.BitsPerPixel != dev.BitsPerPixel
	if o.BitsPerPixel != 0 {
		g.BitsPerPixel = o.BitsPerPixel
	}
	switch {
	case o.hasBitfields():
		g.Red, g.Green, g.Blue, g.Transp = o.Red, o.Green, o.Blue, o.Transp
	case depthChanged || !g.hasBitfields():
		g.Red, g.Green, g.Blue, g.Transp = defaultBitfields(g.BitsPerPixel)
	}
	switch {
	case o.LineLength != 0:
		g.LineLength = o.LineLength
	case o.Width != 0 || depthChanged || g.LineLength == 0:
		g.LineLength = g.Width * g.BitsPerPixel / 8
	}
	if err := g.Validate(); err != nil {
		return Geometry{}, err
	}
	return g, nil
}
