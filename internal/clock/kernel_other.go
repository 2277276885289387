//go:build !linux

package clock

import "errors"

// KernelProbe is only implemented on Linux; elsewhere use sync_check = "none".
func KernelProbe() (bool, error) {
	return false, errors.New("kernel clock sync check is only available on Linux; set clock.sync_check = \"none\"")
}
