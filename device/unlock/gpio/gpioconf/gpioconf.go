// Package gpioconf is the [unlock.gpio] table: its keys, defaults, limits
// and checks. It needs only the standard library, so the configuration
// checks the table without linking the GPIO driver (package gpio) and its
// character-device library.
package gpioconf

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Modes, as written in unlock.gpio.mode.
const (
	ModeRelay = "relay"
	ModePulse = "pulse"
)

// Defaults for the [unlock.gpio] table.
const (
	DefaultChip          = "gpiochip0"
	DefaultMode          = ModeRelay
	DefaultBusyLine      = -1 // no busy input
	DefaultBusyTimeout   = 10 * time.Second
	DefaultCheckpoint    = 5 * time.Second
	DefaultPulseWidth    = 100 * time.Millisecond
	DefaultPulseGap      = 100 * time.Millisecond
	DefaultConsumerLabel = "kioskpayd"
)

// Limits enforced by Validate. The pulse limits bracket what coin-acceptor
// inputs of vending and washing machines count (see README, "Unlock
// drivers"); the relay limits keep a typo ("15" for "15m") from becoming a
// 15 ns or a week-long service.
const (
	MinPulseWidth  = 5 * time.Millisecond
	MaxPulseWidth  = 2 * time.Second
	MaxPulses      = 1000
	MinRelay       = time.Second
	MaxRelay       = 24 * time.Hour
	MinBusyTimeout = 100 * time.Millisecond
	MaxBusyTimeout = 10 * time.Minute
	MinCheckpoint  = time.Second
	MaxCheckpoint  = 5 * time.Minute
	maxLine        = 1023
)

// Config is the [unlock.gpio] table. The TOML tags are the keys; durations
// are strings such as "50ms" or "15m".
type Config struct {
	// Chip is the GPIO character device: a name under /dev ("gpiochip0")
	// or a path.
	Chip string `toml:"chip"`
	// Output is the line offset on Chip that drives the relay or the
	// coin-acceptor input.
	Output int `toml:"output"`
	// ActiveLow: the output is active (relay closed, pulse on) at the low
	// electrical level, as on most opto-isolated relay boards.
	ActiveLow bool `toml:"active_low"`
	// Mode is "relay" or "pulse".
	Mode  string `toml:"mode"`
	Relay Relay  `toml:"relay"`
	Pulse Pulse  `toml:"pulse"`
	// Consumer is the label the kernel shows for the lines kioskpayd holds.
	Consumer string `toml:"-"`
}

// Relay is the [unlock.gpio.relay] table.
type Relay struct {
	// Durations maps an order type to how long the output stays active.
	Durations map[string]time.Duration `toml:"durations"`
	// BusyLine is an optional input offset on Chip that the machine drives
	// active while it runs; -1 means none. With it, an order is delivered
	// only when the input goes active within BusyTimeout of the output.
	BusyLine      int           `toml:"busy_line"`
	BusyActiveLow bool          `toml:"busy_active_low"`
	BusyTimeout   time.Duration `toml:"busy_timeout"`
	// Checkpoint is how much active time is committed ahead at a time: a
	// crash costs the customer at most two checkpoints of paid time, and
	// the store sees one write per checkpoint.
	Checkpoint time.Duration `toml:"checkpoint"`
}

// Pulse is the [unlock.gpio.pulse] table.
type Pulse struct {
	// Counts maps an order type to the number of pulses, the way a coin
	// acceptor reports credits: the price table decides, nothing is
	// derived from the amount.
	Counts map[string]int `toml:"counts"`
	// Width is how long each pulse is active; Gap how long the output is
	// inactive between two pulses.
	Width time.Duration `toml:"width"`
	Gap   time.Duration `toml:"gap"`
}

// DefaultConfig returns the defaults; tables of types are empty and must be
// filled for the mode in use.
func DefaultConfig() Config {
	return Config{
		Chip:     DefaultChip,
		Mode:     DefaultMode,
		Consumer: DefaultConsumerLabel,
		Relay: Relay{
			BusyLine:    DefaultBusyLine,
			BusyTimeout: DefaultBusyTimeout,
			Checkpoint:  DefaultCheckpoint,
		},
		Pulse: Pulse{Width: DefaultPulseWidth, Gap: DefaultPulseGap},
	}
}

// Validate checks c and names the offending key in every problem; several
// problems are joined.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("unlock.gpio.%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.Chip == "" {
		bad("chip", "must name a GPIO character device such as %q", DefaultChip)
	}
	if c.Output < 0 || c.Output > maxLine {
		bad("output", "must be a line offset from 0 to %d, got %d", maxLine, c.Output)
	}
	switch c.Mode {
	case ModeRelay:
		r := c.Relay
		checkTable(bad, "relay.durations", "massage_15 = \"15m\"", r.Durations, func(d time.Duration) string {
			if d < MinRelay || d > MaxRelay {
				return fmt.Sprintf("must be from %s to %s, got %s", MinRelay, MaxRelay, d)
			}
			return ""
		})
		if r.BusyLine < -1 || r.BusyLine > maxLine {
			bad("relay.busy_line", "must be a line offset from 0 to %d, or -1 for none, got %d", maxLine, r.BusyLine)
		}
		if r.BusyLine == c.Output {
			bad("relay.busy_line", "must differ from unlock.gpio.output (%d)", c.Output)
		}
		if r.BusyLine >= 0 && (r.BusyTimeout < MinBusyTimeout || r.BusyTimeout > MaxBusyTimeout) {
			bad("relay.busy_timeout", "must be from %s to %s, got %s", MinBusyTimeout, MaxBusyTimeout, r.BusyTimeout)
		}
		if r.Checkpoint < MinCheckpoint || r.Checkpoint > MaxCheckpoint {
			bad("relay.checkpoint", "must be from %s to %s, got %s", MinCheckpoint, MaxCheckpoint, r.Checkpoint)
		}
	case ModePulse:
		p := c.Pulse
		checkTable(bad, "pulse.counts", "wash_5 = 5", p.Counts, func(n int) string {
			if n < 1 || n > MaxPulses {
				return fmt.Sprintf("must be from 1 to %d pulses, got %d", MaxPulses, n)
			}
			return ""
		})
		if p.Width < MinPulseWidth || p.Width > MaxPulseWidth {
			bad("pulse.width", "must be from %s to %s, got %s", MinPulseWidth, MaxPulseWidth, p.Width)
		}
		if p.Gap < MinPulseWidth || p.Gap > MaxPulseWidth {
			bad("pulse.gap", "must be from %s to %s, got %s", MinPulseWidth, MaxPulseWidth, p.Gap)
		}
	default:
		bad("mode", "must be %q or %q, got %q", ModeRelay, ModePulse, c.Mode)
	}
	return errors.Join(errs...)
}

// checkTable checks a table of order types: not empty, every value valid
// (check returns a problem or ""). Keys are order types; the config layer
// checks them against the create request's type rule, as it does for
// [catalog].
func checkTable[V any](bad func(key, format string, a ...any), key, example string, m map[string]V, check func(V) string) {
	if len(m) == 0 {
		bad(key, "needs at least one order type, e.g. %s", example)
	}
	for _, t := range slices.Sorted(maps.Keys(m)) {
		if problem := check(m[t]); problem != "" {
			bad(key+"."+t, "%s", problem)
		}
	}
}
