package device

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/sdnotify"
)

// TestWatchdogStopsWhenEngineStalls feeds a systemd-style notify socket from
// the engine's own health, as kioskpayd does, and wedges the engine loop:
// the WATCHDOG=1 datagrams must stop (so systemd restarts the daemon) and
// come back once the loop turns again.
func TestWatchdogStopsWhenEngineStalls(t *testing.T) {
	h := newHarness(t, nil)

	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pings := make(chan struct{}, 1024)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "WATCHDOG=1" {
				pings <- struct{}{}
			}
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The loop sleeps up to idleWake when there is nothing to do; prod it
	// often so that a short maxAge tells "idle" from "stuck".
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				signal(h.e.wakeCh)
			}
		}
	}()
	const maxAge = 300 * time.Millisecond
	n := sdnotify.New(sock, "200000", "", 0) // WatchdogSec=200ms: a ping every 100 ms
	go n.RunWatchdog(ctx, n.WatchdogInterval(), func() bool { return h.e.Healthy(maxAge) })

	countPings := func(d time.Duration) int {
		deadline := time.After(d)
		got := 0
		for {
			select {
			case <-pings:
				got++
			case <-deadline:
				return got
			}
		}
	}
	if got := countPings(500 * time.Millisecond); got < 2 {
		t.Fatalf("healthy engine: %d pings in 500ms, want several", got)
	}

	// Wedge the loop: every pass takes e.mu.
	h.e.mu.Lock()
	countPings(maxAge + 200*time.Millisecond) // pings already under way drain
	stalled := countPings(time.Second)
	h.e.mu.Unlock()
	if stalled != 0 {
		t.Fatalf("stalled engine: %d pings in 1s, want none", stalled)
	}
	if got := countPings(500 * time.Millisecond); got < 2 {
		t.Fatalf("recovered engine: %d pings in 500ms, want several", got)
	}
}
