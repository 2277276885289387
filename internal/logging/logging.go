// Package logging sets up log/slog the way every kioskpay program logs:
// one record per line on standard error, JSON for journald and log
// collectors, text when a person watches a terminal. Durations are written
// as Go duration strings ("1s", "250ms") in both, not as nanoseconds.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// New returns a logger writing to w at level and above: text when w is a
// terminal, JSON otherwise.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	opts := Options(level)
	if IsTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Options are the handler options of every kioskpay logger.
func Options(level slog.Leveler) *slog.HandlerOptions {
	return &slog.HandlerOptions{Level: level, ReplaceAttr: ReplaceAttr}
}

// ReplaceAttr writes durations as strings: the JSON handler would print
// time.Second as 1000000000.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// ParseLevel reads a -log-level value: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch s {
	case "debug", "info", "warn", "error":
		return l, l.UnmarshalText([]byte(s))
	}
	return l, fmt.Errorf("%q: want debug, info, warn or error", s)
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
