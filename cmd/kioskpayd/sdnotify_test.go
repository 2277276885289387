package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/logging"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
)

// notifySocket listens where the daemon sends sd_notify datagrams and
// returns the messages as they arrive.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ch := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func expectNotify(t *testing.T, ch <-chan string, want string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-ch:
			if strings.HasPrefix(m, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q from the daemon within %s", want, d)
		}
	}
}

func TestSystemdNotify(t *testing.T) {
	ch := notifySocket(t)
	e := newEnv(t)
	stop, stderr := start(t, []string{"-config", e.path})
	expectNotify(t, ch, "READY=1", 20*time.Second)
	expectNotify(t, ch, "WATCHDOG=1", 5*time.Second)
	expectNotify(t, ch, "WATCHDOG=1", 5*time.Second)
	if code := stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	expectNotify(t, ch, "STOPPING=1", time.Second)
}

// With the broker unreachable the daemon still reports ready after the
// grace period, so systemd's start timeout cannot trap it.
func TestReadyWithoutBroker(t *testing.T) {
	ch := notifySocket(t)
	e := newEnv(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "tcp://" + ln.Addr().String()
	ln.Close()
	e.edit(t, `url = "`+e.brokerURL+`"`, `url = "`+dead+`"`)
	cfg, err := config.Load(e.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr syncbuf.Buffer
	go func() {
		done <- daemon(ctx, cfg, io.Discard, logging.New(&stderr, slog.LevelInfo), &hooks{readyGrace: 300 * time.Millisecond})
	}()
	expectNotify(t, ch, "READY=1", 10*time.Second)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop")
	}
	if !strings.Contains(stderr.String(), "broker not reachable yet") {
		t.Errorf("no warning logged:\n%s", stderr.String())
	}
}
