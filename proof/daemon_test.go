package proof

import (
	"os"
	"testing"

	"github.com/kioskpay/kioskpay/internal/testrig"
)

// The /proc readers the flood and soak tests measure with, on this process.
func TestProcStatus(t *testing.T) {
	pid := os.Getpid()
	rss, peak, err := testrig.Memory(pid)
	if err != nil || rss <= 0 || peak < rss {
		t.Fatalf("testrig.Memory = %d, %d, %v; want 0 < rss ≤ peak", rss, peak, err)
	}
	anon, file, err := testrig.MemoryBreakdown(pid)
	if err != nil || anon <= 0 || file <= 0 {
		t.Fatalf("testrig.MemoryBreakdown = %d, %d, %v; want both > 0", anon, file, err)
	}
	if n, err := testrig.ContextSwitches(pid); err != nil || n <= 0 {
		t.Fatalf("testrig.ContextSwitches = %d, %v; want > 0", n, err)
	}
	if _, _, err := testrig.Memory(-1); err == nil {
		t.Fatal("testrig.Memory(-1) succeeded")
	}
}
