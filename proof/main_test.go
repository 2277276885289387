//go:build linux

package proof

import (
	"os"
	"testing"

	"github.com/kioskpay/kioskpay/internal/qemuvm"
)

// TestMain lets the test binary be the /init of TestGPIOCrash's guest.
func TestMain(m *testing.M) {
	if qemuvm.IsInit() {
		qemuvm.RunAsInit(m)
	}
	os.Exit(m.Run())
}
