// Package sdnotify is a minimal, dependency-free client for systemd's
// service notification protocol (sd_notify(3)) and its watchdog.
//
// Every function is a no-op when the process does not run under a systemd
// unit with Type=notify (NOTIFY_SOCKET unset), so the daemon calls them
// unconditionally.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Well-known states (sd_notify(3)).
const (
	StateReady     = "READY=1"
	StateStopping  = "STOPPING=1"
	StateReloading = "RELOADING=1"
	StateWatchdog  = "WATCHDOG=1"
)

// Notifier sends notifications to one socket. The zero value is disabled.
type Notifier struct {
	socket string // NOTIFY_SOCKET; "" disables
	// watchdog is the interval systemd expects keep-alives within; 0 when
	// the watchdog is off or is not meant for this process.
	watchdog time.Duration
}

// FromEnv returns a Notifier configured from NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID. Unset variables disable the corresponding feature.
func FromEnv() *Notifier {
	return New(os.Getenv("NOTIFY_SOCKET"), os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
}

// New returns a Notifier for the given NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID values, as seen by process pid. It exists so tests and
// callers with their own environment need not touch the process's.
func New(socket, watchdogUsec, watchdogPID string, pid int) *Notifier {
	n := &Notifier{socket: socket}
	usec, err := strconv.ParseUint(watchdogUsec, 10, 63)
	if err != nil || usec == 0 {
		return n
	}
	// WATCHDOG_PID names the process the watchdog is meant for; a child
	// that inherited the environment must not feed it.
	if watchdogPID != "" {
		p, err := strconv.Atoi(watchdogPID)
		if err != nil || p != pid {
			return n
		}
	}
	n.watchdog = time.Duration(usec) * time.Microsecond
	return n
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Notify sends state, one or more newline-separated KEY=VALUE assignments.
// It returns nil without doing anything when not running under systemd.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	// A leading '@' names a socket in Linux's abstract namespace; the
	// syscall package turns it into the leading NUL byte the kernel wants.
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}

// Ready tells systemd that start-up finished (Type=notify).
func (n *Notifier) Ready() error { return n.Notify(StateReady) }

// Stopping tells systemd that the service is shutting down.
func (n *Notifier) Stopping() error { return n.Notify(StateStopping) }

// Watchdog sends one watchdog keep-alive.
func (n *Notifier) Watchdog() error { return n.Notify(StateWatchdog) }

// Status sets the free-form status line "systemctl status" shows.
func (n *Notifier) Status(s string) error { return n.Notify("STATUS=" + s) }

// WatchdogInterval returns WatchdogSec= as systemd passed it, or 0 when the
// watchdog is off, not meant for this process, or there is no socket.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog
}

// RunWatchdog sends WATCHDOG=1 every interval/2 for as long as healthy
// reports true, until ctx ends. interval is the watchdog timeout (usually
// WatchdogInterval()); 0 returns at once.
//
// Keep-alives depend on healthy rather than on the ticker alone, because a
// daemon whose event loop is wedged but whose ticker goroutine still runs is
// exactly what the watchdog is there to catch: once healthy returns false no
// more pings go out, and systemd restarts the service after interval.
// healthy is called from this goroutine only and must not block for long.
func (n *Notifier) RunWatchdog(ctx context.Context, interval time.Duration, healthy func() bool) error {
	if interval <= 0 || !n.Enabled() {
		return nil
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		if healthy() {
			// A failed send is transient (systemd restarting); the next
			// tick tries again and systemd decides on timeouts.
			_ = n.Watchdog()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
