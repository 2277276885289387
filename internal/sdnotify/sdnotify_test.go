package sdnotify

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen opens a unix datagram socket like systemd's notify socket and
// returns its address and a channel of the messages it receives.
func listen(t *testing.T, name string) <-chan string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan string, within time.Duration) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(within):
		t.Fatalf("no notification within %v", within)
		return ""
	}
}

func TestReadyAndStopping(t *testing.T) {
	for _, tc := range []struct{ name, sock string }{
		{"path", filepath.Join(t.TempDir(), "notify.sock")},
		{"abstract", fmt.Sprintf("@kioskpay-sdnotify-test-%d", time.Now().UnixNano())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := listen(t, tc.sock)
			n := New(tc.sock, "", "", 1)
			if err := n.Ready(); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, ch, 2*time.Second); got != "READY=1" {
				t.Fatalf("got %q, want READY=1", got)
			}
			if err := n.Stopping(); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, ch, 2*time.Second); got != "STOPPING=1" {
				t.Fatalf("got %q, want STOPPING=1", got)
			}
		})
	}
}

func TestNotUnderSystemd(t *testing.T) {
	n := New("", "30000000", "", 1)
	if n.Enabled() {
		t.Fatal("enabled without NOTIFY_SOCKET")
	}
	if err := n.Ready(); err != nil {
		t.Fatalf("Ready without systemd: %v", err)
	}
	if d := n.WatchdogInterval(); d != 0 {
		t.Fatalf("WatchdogInterval = %v, want 0", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.RunWatchdog(ctx, time.Second, func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	var zero *Notifier
	if err := zero.Ready(); err != nil {
		t.Fatalf("nil Notifier: %v", err)
	}
}

func TestFromEnv(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "n.sock")
	ch := listen(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	n := FromEnv()
	if d := n.WatchdogInterval(); d != 30*time.Second {
		t.Fatalf("WatchdogInterval = %v, want 30s", d)
	}
	if err := n.Status("serving"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch, 2*time.Second); got != "STATUS=serving" {
		t.Fatalf("got %q", got)
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"30000000", "", 30 * time.Second},
		{"30000000", "42", 30 * time.Second},
		{"30000000", "43", 0}, // meant for another process
		{"30000000", "x", 0},
		{"", "", 0},
		{"0", "", 0},
		{"-5", "", 0},
		{"abc", "", 0},
	} {
		n := New("/run/systemd/notify", tc.usec, tc.pid, 42)
		if got := n.WatchdogInterval(); got != tc.want {
			t.Errorf("usec=%q pid=%q: got %v, want %v", tc.usec, tc.pid, got, tc.want)
		}
	}
}

func TestSendError(t *testing.T) {
	n := New(filepath.Join(t.TempDir(), "missing.sock"), "", "", 1)
	err := n.Ready()
	if err == nil || !strings.Contains(err.Error(), "READY=1") {
		t.Fatalf("err = %v, want a send error naming the state", err)
	}
}

// TestWatchdogStopsWhenUnhealthy is the point of RunWatchdog: keep-alives
// flow while healthy and stop as soon as the daemon reports it is not, so
// systemd's watchdog fires.
func TestWatchdogStopsWhenUnhealthy(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "wd.sock")
	ch := listen(t, sock)
	n := New(sock, "", "", 1)

	var healthy atomic.Bool
	healthy.Store(true)
	var checks atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	const interval = 40 * time.Millisecond
	go func() {
		done <- n.RunWatchdog(ctx, interval, func() bool { checks.Add(1); return healthy.Load() })
	}()

	for i := 0; i < 3; i++ {
		if got := recv(t, ch, time.Second); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q", i, got)
		}
	}

	healthy.Store(false)
	// Wait until RunWatchdog has certainly observed the unhealthy state,
	// then drain the pings sent before it did: datagrams arrive in order,
	// so everything before our marker predates the switch.
	seen := checks.Load()
	deadline := time.Now().Add(2 * time.Second)
	for checks.Load() < seen+2 {
		if time.Now().After(deadline) {
			t.Fatal("RunWatchdog stopped checking health")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := n.Notify("MARK=1"); err != nil {
		t.Fatal(err)
	}
	for m := recv(t, ch, time.Second); m != "MARK=1"; m = recv(t, ch, time.Second) {
	}
	// Several more intervals pass: not a single ping may arrive.
	select {
	case m := <-ch:
		t.Fatalf("got %q while unhealthy", m)
	case <-time.After(4 * interval):
	}

	healthy.Store(true)
	if got := recv(t, ch, time.Second); got != "WATCHDOG=1" {
		t.Fatalf("after recovery: got %q", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}
