//go:build !linux

package display

import (
	"fmt"
	"os"
)

// fbQuery needs Linux's fbdev ioctls; elsewhere only a full geometry
// override (a plain file) works.
func fbQuery(f *os.File) (devGeometry, int64, error) {
	return devGeometry{}, 0, fmt.Errorf("framebuffer ioctls: %w", errNotFB)
}
