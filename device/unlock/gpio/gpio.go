//go:build linux

// Package gpio is the unlock driver for machines started by a contact: a
// relay held closed for the paid time, or a pulse train on a coin-acceptor
// input, on lines of a Linux GPIO character device (/dev/gpiochipN, uAPI
// v2; never the deprecated sysfs interface).
//
// It uses github.com/warthog618/go-gpiocdev (pinned at v0.9.1): pure Go, so
// the CGO_ENABLED=0 builds for arm64 and armhf keep working; the Go
// counterpart of libgpiod, written by a contributor to the kernel's GPIO
// character-device code; MIT; covers uAPI v2 with edge events, active-low
// and bias flags; and is tested upstream against the kernel's gpio-sim.
// The alternatives either need cgo (libgpiod bindings), use sysfs
// (periph.io's legacy path, stianeikeland/go-rpio's /dev/mem) or cover only
// uAPI v1.
//
// # Modes
//
// relay: the output is active for the duration the order's type maps to
// in unlock.gpio.relay.durations. Without a busy input the order is
// delivered when the output goes active. With unlock.gpio.relay.busy_line
// it is delivered only when that input goes active within busy_timeout of
// the output; otherwise the output goes inactive at once and the order is
// not delivered. A busy input that is already active before the output is
// switched means the machine is occupied: the output is not switched and
// the order is not delivered.
//
// pulse: unlock.gpio.pulse.counts gives the number of pulses per order type,
// each active for width with gap inactive between pulses. The order is
// delivered when the train completes.
//
// The output is requested as an output at its inactive level when the
// driver opens (so a relay left closed by a killed process opens before
// anything else happens), held for the driver's lifetime, and driven
// inactive again by Close. While the daemon is not running the line keeps
// its last level or, after a reset, floats: the README's wiring notes ask
// for a pull resistor that holds the machine's input inactive.
//
// # Progress and crashes
//
// Progress is committed ahead: before each pulse's active edge
// (PulsesStarted), and before each checkpoint of active relay time
// (RelayUsed, committed two checkpoints ahead of the time actually used).
// Resume continues with PulsesPaid-PulsesStarted pulses or
// RelayPaid-RelayUsed of active time, so the machine never gets more than
// was paid in total; a crash costs the customer at most the one pulse
// whose start was committed, or two checkpoints of relay time. A pulse
// interrupted while active is cut short and counts as started.
package gpio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/warthog618/go-gpiocdev"

	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/gpio/gpioconf"
)

// Driver drives the configured lines. It runs one action at a time.
type Driver struct {
	cfg  gpioconf.Config
	log  *slog.Logger
	out  *gpiocdev.Line
	busy *gpiocdev.Line
	// edges receives the busy line's active edges; it is drained before
	// each activation so a stale edge never acks an order.
	edges chan time.Duration

	mu     sync.Mutex // one action at a time; guards closed and lastOff
	closed bool
	// lastOff is when the output last went inactive, so that the first
	// pulse of a train keeps the gap after the previous train too.
	lastOff time.Time
}

var _ unlock.Driver = (*Driver)(nil)

// Open validates cfg, requests the output line at its inactive level and
// the busy input if configured.
func Open(cfg gpioconf.Config, log *slog.Logger) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Consumer == "" {
		cfg.Consumer = gpioconf.DefaultConsumerLabel
	}
	d := &Driver{cfg: cfg, log: log.With("driver", unlock.DriverGPIO), edges: make(chan time.Duration, 16)}
	out, err := requestOutput(cfg, cfg.Consumer)
	if err != nil {
		return nil, err
	}
	d.out = out
	if cfg.Mode == gpioconf.ModeRelay && cfg.Relay.BusyLine >= 0 {
		opts := []gpiocdev.LineReqOption{
			gpiocdev.WithConsumer(cfg.Consumer),
			gpiocdev.WithABIVersion(2),
			gpiocdev.AsInput,
			// With active-low set, the kernel reports the logical edge:
			// "rising" is always inactive → active.
			gpiocdev.WithRisingEdge,
			gpiocdev.WithEventHandler(d.onEdge),
		}
		if cfg.Relay.BusyActiveLow {
			opts = append(opts, gpiocdev.AsActiveLow)
		}
		busy, err := gpiocdev.RequestLine(cfg.Chip, cfg.Relay.BusyLine, opts...)
		if err != nil {
			out.Close()
			return nil, fmt.Errorf("unlock.gpio.relay.busy_line: request line %d on %s: %w", cfg.Relay.BusyLine, cfg.Chip, err)
		}
		d.busy = busy
	}
	d.log.Info("gpio unlock ready", "chip", cfg.Chip, "output", cfg.Output, "mode", cfg.Mode,
		"active_low", cfg.ActiveLow, "busy_line", cfg.Relay.BusyLine)
	return d, nil
}

func (d *Driver) onEdge(e gpiocdev.LineEvent) {
	select {
	case d.edges <- e.Timestamp:
	default: // a flood of edges: one is enough to know the machine is running
	}
}

// Close drives the output inactive and releases the lines.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	err := d.out.SetValue(0)
	err = errors.Join(err, d.out.Close())
	if d.busy != nil {
		err = errors.Join(err, d.busy.Close())
	}
	return err
}

// Plan returns the action for o: the paid pulse count or relay time from
// the table, or unlock.ErrUnknownType.
func (d *Driver) Plan(o unlock.Order) (unlock.Progress, error) {
	return plan(d.cfg, o)
}

func plan(cfg gpioconf.Config, o unlock.Order) (unlock.Progress, error) {
	p := unlock.Progress{Driver: unlock.DriverGPIO, Mode: cfg.Mode}
	switch cfg.Mode {
	case gpioconf.ModePulse:
		n, ok := cfg.Pulse.Counts[o.Type]
		if !ok {
			return p, fmt.Errorf("%w: %q has no unlock.gpio.pulse.counts entry", unlock.ErrUnknownType, o.Type)
		}
		p.PulsesPaid = n
	default:
		t, ok := cfg.Relay.Durations[o.Type]
		if !ok {
			return p, fmt.Errorf("%w: %q has no unlock.gpio.relay.durations entry", unlock.ErrUnknownType, o.Type)
		}
		p.RelayPaid = t
	}
	return p, nil
}

// checkProgress refuses a Progress this driver did not write or that
// claims more than was paid.
func checkProgress(cfg gpioconf.Config, p unlock.Progress) error {
	switch {
	case p.Driver != unlock.DriverGPIO || p.Mode != cfg.Mode:
		return fmt.Errorf("%w: progress of %s/%s, driver is gpio/%s", unlock.ErrProgress, p.Driver, p.Mode, cfg.Mode)
	case p.Mode == gpioconf.ModePulse && (p.PulsesPaid < 1 || p.PulsesStarted < 0 || p.PulsesStarted > p.PulsesPaid ||
		p.PulsesDone < 0 || p.PulsesDone > p.PulsesStarted):
		return fmt.Errorf("%w: pulses paid %d, started %d, done %d", unlock.ErrProgress, p.PulsesPaid, p.PulsesStarted, p.PulsesDone)
	case p.Mode == gpioconf.ModeRelay && (p.RelayPaid <= 0 || p.RelayUsed < 0 || p.RelayUsed > p.RelayPaid):
		return fmt.Errorf("%w: relay paid %s, used %s", unlock.ErrProgress, p.RelayPaid, p.RelayUsed)
	}
	return nil
}

// Run performs a planned action.
func (d *Driver) Run(ctx context.Context, o unlock.Order, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	if p.Started {
		return unlock.Result{Progress: p}, fmt.Errorf("%w: Run with a started action; use Resume", unlock.ErrProgress)
	}
	return d.Resume(ctx, o, p, report)
}

// Resume continues an action from the last persisted Progress: the pulses
// not yet started, or the relay time not yet committed. When ctx ends it
// stops at once with the output inactive and, having seen the output
// itself, reports what was exactly used, so a clean stop costs the customer
// nothing. It never gives more
// than the Progress says was paid, whatever the table says now.
func (d *Driver) Resume(ctx context.Context, o unlock.Order, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return unlock.Result{Progress: p}, errors.New("unlock gpio: driver closed")
	}
	if err := checkProgress(d.cfg, p); err != nil {
		return unlock.Result{Progress: p}, err
	}
	log := d.log.With("out_trade_no", o.OutTradeNo, "type", o.Type)
	var (
		res unlock.Result
		err error
	)
	if p.Mode == gpioconf.ModePulse {
		res, err = d.pulses(ctx, log, p, report)
	} else {
		res, err = d.relay(ctx, log, p, report)
	}
	// Whatever happened, the output ends inactive.
	if e := d.out.SetValue(0); e != nil {
		err = errors.Join(err, fmt.Errorf("unlock gpio: output to inactive: %w", e))
	}
	d.lastOff = time.Now()
	return res, err
}

// pulses sends the pulses not yet started. Each start is committed during
// the preceding gap, so the store's write time stretches the gap only when
// it exceeds it.
func (d *Driver) pulses(ctx context.Context, log *slog.Logger, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	width, gap := d.cfg.Pulse.Width, d.cfg.Pulse.Gap
	if p.PulsesStarted > p.PulsesDone {
		// The pulse in flight at the crash counts as sent.
		p.PulsesDone = p.PulsesStarted
	}
	log.Info("pulse train", "paid", p.PulsesPaid, "already_started", p.PulsesStarted,
		"width", width, "gap", gap)
	lastEdge := d.lastOff
	for p.PulsesStarted < p.PulsesPaid {
		next := p
		next.Started = true
		next.PulsesStarted++
		if err := report(next); err != nil {
			// Not committed, so not started.
			return unlock.Result{Progress: p}, fmt.Errorf("unlock gpio: commit pulse %d: %w", next.PulsesStarted, err)
		}
		p = next
		if !lastEdge.IsZero() { // zero: nothing driven since Open
			if err := sleepUntil(ctx, lastEdge.Add(gap)); err != nil {
				// Stopped before the edge: this pulse certainly did not
				// start, so give it back (if that write fails the
				// committed count stands, which errs on the safe side).
				p.PulsesStarted--
				if report(p) != nil {
					p.PulsesStarted++
				}
				return unlock.Result{Progress: p}, err
			}
		}
		if err := d.out.SetValue(1); err != nil {
			return unlock.Result{Progress: p}, fmt.Errorf("unlock gpio: pulse %d on: %w", p.PulsesStarted, err)
		}
		on := time.Now()
		werr := sleepUntil(ctx, on.Add(width))
		if err := d.out.SetValue(0); err != nil {
			return unlock.Result{Progress: p}, fmt.Errorf("unlock gpio: pulse %d off: %w", p.PulsesStarted, err)
		}
		lastEdge = time.Now()
		p.PulsesDone = p.PulsesStarted
		if werr != nil {
			return unlock.Result{Progress: p}, werr
		}
	}
	log.Info("pulse train sent", "pulses", p.PulsesPaid)
	return unlock.Result{Outcome: unlock.Delivered, Progress: p}, nil
}

// reasonBusyPaidOut: the paid time ran out, or was all committed before a
// crash, without the busy input going active.
const reasonBusyPaidOut = "busy input not active before the paid time ended"

// relay keeps the output active for the paid time not yet used, committing
// two checkpoints ahead, and with a busy input decides the outcome by it.
func (d *Driver) relay(ctx context.Context, log *slog.Logger, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	cp := d.cfg.Relay.Checkpoint
	remaining := p.RelayPaid - p.RelayUsed
	if remaining <= 0 {
		if p.Outcome == 0 {
			// Crashes committed all the paid time while the busy input
			// stayed silent: nothing says the machine ever ran.
			return unlock.Result{Outcome: unlock.NotDelivered, Reason: reasonBusyPaidOut, Progress: p}, nil
		}
		return unlock.Result{Outcome: p.Outcome, Progress: p}, nil
	}
	base := p.RelayUsed // paid time used before this activation
	if d.busy != nil && p.Outcome == 0 {
		// A machine already running is occupied by someone else: starting
		// it again would take money for nothing.
		if v, err := d.busy.Value(); err != nil {
			return unlock.Result{Progress: p}, fmt.Errorf("unlock gpio: read busy input: %w", err)
		} else if v == 1 {
			log.Warn("busy input active before the relay: machine occupied")
			return unlock.Result{Outcome: unlock.NotDelivered, Reason: "machine busy before start", Progress: p}, nil
		}
		drain(d.edges)
	}

	before := p
	p.Started = true
	p.RelayUsed = min(p.RelayPaid, base+2*cp)
	p.RelayOnSince = time.Now()
	if d.busy == nil {
		p.Outcome = unlock.Delivered // delivered when the output goes active
	}
	if err := report(p); err != nil {
		return unlock.Result{Progress: before}, fmt.Errorf("unlock gpio: commit relay: %w", err)
	}
	if err := d.out.SetValue(1); err != nil {
		return unlock.Result{Progress: p}, fmt.Errorf("unlock gpio: relay on: %w", err)
	}
	on := time.Now()
	log.Info("relay on", "paid", p.RelayPaid, "remaining", remaining, "busy_line", d.cfg.Relay.BusyLine)

	var busyBy <-chan time.Time
	if p.Outcome == 0 { // decided by the busy input
		t := time.NewTimer(d.cfg.Relay.BusyTimeout)
		defer t.Stop()
		busyBy = t.C
	}
	tick := time.NewTicker(cp)
	defer tick.Stop()
	endT := time.NewTimer(remaining)
	defer endT.Stop()
	for {
		select {
		case <-ctx.Done():
			// A clean stop knows exactly how long the output was active:
			// switch it off, then record that instead of the bound.
			offErr := d.out.SetValue(0)
			used := min(p.RelayUsed, base+time.Since(on).Round(time.Millisecond)+time.Millisecond)
			if offErr == nil && used < p.RelayUsed {
				exact := p
				exact.RelayUsed, exact.RelayOnSince = used, time.Time{}
				if report(exact) == nil {
					p = exact
				}
			}
			p.RelayOnSince = time.Time{}
			log.Info("relay stopped", "used", p.RelayUsed, "paid", p.RelayPaid)
			return unlock.Result{Progress: p}, ctx.Err()
		case <-d.edges:
			if p.Outcome == 0 {
				p.Outcome = unlock.Delivered
				busyBy = nil
				log.Info("busy input active: delivered", "after", time.Since(on).Round(time.Millisecond))
				if err := report(p); err != nil {
					return unlock.Result{Progress: p}, fmt.Errorf("unlock gpio: commit busy ack: %w", err)
				}
			}
		case <-busyBy:
			p.RelayOnSince = time.Time{}
			log.Warn("busy input not active in time: not delivered", "busy_timeout", d.cfg.Relay.BusyTimeout)
			return unlock.Result{Outcome: unlock.NotDelivered,
				Reason:   fmt.Sprintf("busy input not active within %s", d.cfg.Relay.BusyTimeout),
				Progress: p}, nil
		case <-tick.C:
			next := min(p.RelayPaid, base+time.Since(on)+2*cp)
			if next > p.RelayUsed {
				p.RelayUsed = next
				if err := report(p); err != nil {
					return unlock.Result{Progress: p}, fmt.Errorf("unlock gpio: commit relay: %w", err)
				}
			}
		case <-endT.C:
			if p.Outcome == 0 {
				// Paid time ran out before the busy input answered.
				return unlock.Result{Outcome: unlock.NotDelivered, Reason: reasonBusyPaidOut, Progress: p}, nil
			}
			p.RelayUsed = p.RelayPaid
			p.RelayOnSince = time.Time{}
			log.Info("relay off: paid time served", "on_for", time.Since(on).Round(time.Millisecond))
			return unlock.Result{Outcome: p.Outcome, Progress: p}, nil
		}
	}
}

func drain(c chan time.Duration) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// sleepUntil waits for t or ctx, whichever comes first.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// Safe drives the configured output to its inactive level and releases it,
// for a process other than the daemon: the kernel keeps an output line at
// its last level when the process holding it dies (the qemu test shows a
// relay staying closed after SIGKILL), so the service manager runs this
// after the daemon exits, whatever the reason (systemd ExecStopPost=).
func Safe(cfg gpioconf.Config) error {
	if cfg.Consumer == "" {
		cfg.Consumer = gpioconf.DefaultConsumerLabel
	}
	l, err := requestOutput(cfg, cfg.Consumer+"-safe")
	if err != nil {
		return err
	}
	return l.Close()
}

// requestOutput requests the output line at its inactive level.
func requestOutput(cfg gpioconf.Config, consumer string) (*gpiocdev.Line, error) {
	opts := []gpiocdev.LineReqOption{
		gpiocdev.WithConsumer(consumer),
		gpiocdev.WithABIVersion(2),
		gpiocdev.AsOutput(0),
	}
	if cfg.ActiveLow {
		opts = append(opts, gpiocdev.AsActiveLow)
	}
	l, err := gpiocdev.RequestLine(cfg.Chip, cfg.Output, opts...)
	if err != nil {
		return nil, fmt.Errorf("unlock.gpio.output: request line %d on %s: %w", cfg.Output, cfg.Chip, err)
	}
	return l, nil
}
