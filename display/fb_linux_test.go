package display

import (
	"testing"
	"unsafe"
)

// The ioctl structures must match <linux/fb.h> byte for byte.
func TestFBStructSizes(t *testing.T) {
	if s := unsafe.Sizeof(fbVarScreenInfo{}); s != 160 {
		t.Errorf("fb_var_screeninfo is %d bytes, want 160", s)
	}
	want := uintptr(80) // LP64
	if unsafe.Sizeof(uintptr(0)) == 4 {
		want = 68
	}
	if s := unsafe.Sizeof(fbFixScreenInfo{}); s != want {
		t.Errorf("fb_fix_screeninfo is %d bytes, want %d", s, want)
	}
	if o := unsafe.Offsetof(fbFixScreenInfo{}.LineLength); o != map[uintptr]uintptr{80: 48, 68: 44}[want] {
		t.Errorf("line_length at offset %d", o)
	}
}
