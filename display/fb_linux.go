package display

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kioskpay/kioskpay/display/fbgeom"
)

// ioctl requests and structures from <linux/fb.h>.
const (
	fbioGetVScreenInfo = 0x4600
	fbioGetFScreenInfo = 0x4602

	fbTypePackedPixels  = 0
	fbVisualTrueColor   = 2
	fbVisualDirectColor = 4
)

type fbBitfield struct {
	Offset, Length, MSBRight uint32
}

type fbVarScreenInfo struct {
	XRes, YRes, XResVirtual, YResVirtual uint32
	XOffset, YOffset                     uint32
	BitsPerPixel, Grayscale              uint32
	Red, Green, Blue, Transp             fbBitfield
	Nonstd, Activate                     uint32
	Height, Width                        uint32
	AccelFlags                           uint32
	Pixclock                             uint32
	LeftMargin, RightMargin              uint32
	UpperMargin, LowerMargin             uint32
	HsyncLen, VsyncLen                   uint32
	Sync, Vmode, Rotate, Colorspace      uint32
	Reserved                             [4]uint32
}

// fbFixScreenInfo mirrors struct fb_fix_screeninfo; its unsigned longs are
// pointer-sized on every Linux ABI, hence uintptr.
type fbFixScreenInfo struct {
	ID                            [16]byte
	SmemStart                     uintptr
	SmemLen                       uint32
	Type, TypeAux, Visual         uint32
	XPanStep, YPanStep, YWrapStep uint16
	LineLength                    uint32
	MmioStart                     uintptr
	MmioLen                       uint32
	Accel                         uint32
	Capabilities                  uint16
	Reserved                      [2]uint16
}

func ioctlPtr(fd uintptr, req uintptr, p unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(p))
	if errno != 0 {
		return errno
	}
	return nil
}

// fbQuery asks the driver for the geometry and pixel layout, and returns
// the byte offset of the visible area inside the framebuffer memory.
func fbQuery(f *os.File) (devGeometry, int64, error) {
	var v fbVarScreenInfo
	var fx fbFixScreenInfo
	fd := f.Fd()
	if err := ioctlPtr(fd, fbioGetVScreenInfo, unsafe.Pointer(&v)); err != nil {
		return devGeometry{}, 0, fmt.Errorf("FBIOGET_VSCREENINFO: %w", err)
	}
	if err := ioctlPtr(fd, fbioGetFScreenInfo, unsafe.Pointer(&fx)); err != nil {
		return devGeometry{}, 0, fmt.Errorf("FBIOGET_FSCREENINFO: %w", err)
	}
	if fx.Type != fbTypePackedPixels {
		return devGeometry{}, 0, fmt.Errorf("framebuffer type %d: only packed pixels are supported", fx.Type)
	}
	if fx.Visual != fbVisualTrueColor && fx.Visual != fbVisualDirectColor {
		return devGeometry{}, 0, fmt.Errorf("framebuffer visual %d: only true colour is supported", fx.Visual)
	}
	for _, b := range []fbBitfield{v.Red, v.Green, v.Blue, v.Transp} {
		if b.MSBRight != 0 {
			return devGeometry{}, 0, fmt.Errorf("framebuffer bitfields with msb_right are not supported")
		}
	}
	bf := func(b fbBitfield) fbgeom.Bitfield { return fbgeom.Bitfield{Offset: b.Offset, Length: b.Length} }
	g := devGeometry{
		Geometry: fbgeom.Geometry{
			Width:        int(v.XRes),
			Height:       int(v.YRes),
			BitsPerPixel: int(v.BitsPerPixel),
			LineLength:   int(fx.LineLength),
			Red:          bf(v.Red),
			Green:        bf(v.Green),
			Blue:         bf(v.Blue),
			Transp:       bf(v.Transp),
		},
		smem: int64(fx.SmemLen),
	}
	base := int64(v.YOffset)*int64(fx.LineLength) + int64(v.XOffset)*int64(v.BitsPerPixel/8)
	return g, base, nil
}
