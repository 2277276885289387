package proof

import (
	"os"
	"testing"
)

// The /proc readers the flood and soak tests measure with, on this process.
func TestProcStatus(t *testing.T) {
	pid := os.Getpid()
	rss, peak, err := Memory(pid)
	if err != nil || rss <= 0 || peak < rss {
		t.Fatalf("Memory = %d, %d, %v; want 0 < rss ≤ peak", rss, peak, err)
	}
	anon, file, err := MemoryBreakdown(pid)
	if err != nil || anon <= 0 || file <= 0 {
		t.Fatalf("MemoryBreakdown = %d, %d, %v; want both > 0", anon, file, err)
	}
	if n, err := ContextSwitches(pid); err != nil || n <= 0 {
		t.Fatalf("ContextSwitches = %d, %v; want > 0", n, err)
	}
	if _, _, err := Memory(-1); err == nil {
		t.Fatal("Memory(-1) succeeded")
	}
}
