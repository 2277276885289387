// Package unlock starts the service a customer paid for without an MQTT
// controller: kioskpayd itself closes a relay, sends a coin-acceptor pulse
// train, writes a line to a serial port or runs a program, and the driver's
// outcome takes the place of the controller's P/unlock/ack.
//
// The package holds the one interface every driver implements and the types
// they share; each implementation is a sub-package (the way litestream keeps
// one replica client per sub-package):
//
//	unlock/gpio    relay or pulse train on Linux GPIO character-device lines
//	unlock/serial  a command line on a serial port, answered by the machine
//	unlock/exec    a program run once per paid order
//
// # How the engine uses a driver
//
// The rule is the same as for every other side effect in kioskpayd: the
// action is persisted before it starts, its progress while it runs and its
// outcome after. For one paid order (only after the money rule has decided
// the order is paid):
//
//  1. At create time, before a QR code is shown, the engine calls
//     Driver.Plan. An error (unlock.ErrUnknownType for a type missing from
//     the driver's table) refuses the create: the customer is never asked to
//     pay for a service the driver cannot start.
//  2. When the order is paid, the engine calls Plan again and stores the
//     returned Progress in the order record in the same transaction as the
//     move to the state that means "unlocking". Nothing has happened outside
//     yet.
//  3. It calls Run with that Progress and a Reporter. The driver calls the
//     Reporter synchronously before every step that changes what the machine
//     may have received (before a relay's next slice of time, before each
//     pulse's active edge, before the serial line is written, before the
//     program is started); the Reporter writes the Progress to the order
//     record and returns only when it is durable. A Reporter error stops the
//     action at once (outputs to their safe level) and Run returns it.
//  4. Run returns (Result, nil) with Outcome Delivered or NotDelivered: that
//     is the ack. Delivered = ack ok; NotDelivered = ack not ok, so
//     on_no_ack's refund applies, with Result.Reason as the ack reason. The
//     paid result is still published for telemetry. Result.Progress is the
//     final progress; the engine stores it with the outcome.
//  5. Run returns an error when it stopped before an outcome: ctx was
//     cancelled (the daemon is stopping), the Reporter failed, or the device
//     failed mid-action. The order stays in "unlocking" with the last
//     persisted Progress, and the engine calls Resume for it at its next
//     start.
//  6. At start-up the engine opens the driver first (gpio drives its outputs
//     to their safe level then, so a relay left on by a killed process goes
//     off before anything else happens), and then calls Resume for every
//     order still in "unlocking", one at a time, with its last persisted
//     Progress. Resume either continues the action for what is left (gpio:
//     the remaining pulses, the remaining paid time; never more than paid in
//     total) and returns like Run, or returns ErrNotResumable when the action
//     may have had an effect that cannot be measured (a serial line was
//     written, a program was started): the engine then flags the order for a
//     human and neither refunds nor re-runs it, because the service may have
//     started. An action whose Progress says it never started is simply run.
//  7. On stop the engine cancels ctx, waits for Run to return, and calls
//     Close.
//
// A driver runs one action at a time; the engine serialises orders anyway
// (one machine, one customer). Drivers log through the *slog.Logger they are
// given and never log the order's custom field.
package unlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Driver names, as written in [unlock] driver.
const (
	DriverMQTT   = "mqtt" // no local driver: the controller acks over MQTT
	DriverGPIO   = "gpio"
	DriverSerial = "serial"
	DriverExec   = "exec"
)

// Order is what a driver is told about a paid order.
type Order struct {
	OutTradeNo string
	// Type selects the service in the driver's table (relay duration, pulse
	// count) and is passed on by serial and exec.
	Type string
	// TotalFee is the order total in fen (1 yuan = 100 fen).
	TotalFee int64
	// Provider is the provider that was paid: "wxpay" or "alipay".
	Provider string
	// Custom is the create request's custom object, verbatim JSON ("" when
	// absent).
	Custom json.RawMessage
}

// Outcome is what a finished action means for the order.
type Outcome uint8

// Outcomes. The zero value is deliberately not an outcome.
const (
	// Delivered: the machine started the service; the ack is ok.
	Delivered Outcome = iota + 1
	// NotDelivered: the machine did not start the service (no answer, wrong
	// answer, busy input never went active, non-zero exit, timeout); the ack
	// is not ok and on_no_ack decides on the refund.
	NotDelivered
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case NotDelivered:
		return "not_delivered"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Result is a finished action.
type Result struct {
	Outcome Outcome
	// Reason says why an action was not delivered, in a few words fit for
	// the ack reason and the event log ("" when delivered).
	Reason   string
	Progress Progress
}

// Progress is the persisted state of one action: the engine stores it as
// JSON in the order record and hands the last stored value back to Resume.
// Counts are upper bounds of what the machine may have received, so that a
// resumed action never gives more than was paid; the difference to the
// lower bounds is what a crash may have cost the customer at most.
type Progress struct {
	// Driver and Mode name what produced it ("gpio"/"relay", "gpio"/"pulse",
	// "serial"/"line", "exec"/"program"); Resume refuses a Progress of
	// another driver or mode.
	Driver string `json:"driver"`
	Mode   string `json:"mode"`
	// Started is set (and reported) before the first thing that can reach
	// the machine.
	Started bool `json:"started"`
	// Outcome is set, and reported at once, when the outcome is decided
	// before the action ends: a relay is delivered when its output goes
	// active (or its busy input does) but stays active for the paid time.
	// Once set it is final: an engine may ack on it right away, and Resume
	// keeps it.
	Outcome Outcome `json:"outcome,omitempty"`

	// Pulse mode. PulsesPaid is what the order bought; PulsesStarted is
	// committed before each pulse's active edge (an upper bound of what the
	// machine may have counted); PulsesDone counts pulses driven back to
	// inactive (a lower bound).
	PulsesPaid    int `json:"pulses_paid,omitempty"`
	PulsesStarted int `json:"pulses_started,omitempty"`
	PulsesDone    int `json:"pulses_done,omitempty"`

	// Relay mode. RelayPaid is the paid time; RelayUsed is committed before
	// each slice of active time and so bounds the time the output may have
	// been active; RelayOnSince is the wall-clock time the output last went
	// active, for operators (zero while off).
	RelayPaid    time.Duration `json:"relay_paid,omitempty"`
	RelayUsed    time.Duration `json:"relay_used,omitempty"`
	RelayOnSince time.Time     `json:"relay_on_since,omitzero"`
}

// Reporter persists p before the driver takes its next step. It is called
// from the goroutine running the action and must return only when p is
// durable; a non-nil error stops the action.
type Reporter func(p Progress) error

// Driver starts the service for one paid order. See the package
// documentation for the order in which the engine calls its methods.
type Driver interface {
	// Plan checks that the driver can deliver o and returns the Progress
	// to persist before Run. It does not touch the machine.
	Plan(o Order) (Progress, error)
	// Run performs the action planned by Plan. It returns (Result, nil)
	// with the outcome, or an error when it stopped before one (the last
	// reported Progress is then what Resume needs).
	Run(ctx context.Context, o Order, plan Progress, report Reporter) (Result, error)
	// Resume continues an action interrupted by a stop or a crash from the
	// last persisted Progress, or returns ErrNotResumable.
	Resume(ctx context.Context, o Order, last Progress, report Reporter) (Result, error)
	// Close drives every output to its safe level and releases the device.
	Close() error
}

// Errors shared by the drivers.
var (
	// ErrUnknownType means the order's type has no entry in the driver's
	// table: refuse the create; never take money for it.
	ErrUnknownType = errors.New("unlock: order type not in the driver's table")
	// ErrNotResumable means the interrupted action may have reached the
	// machine and cannot be continued or repeated safely: flag the order
	// for a human, do not refund and do not run it again.
	ErrNotResumable = errors.New("unlock: interrupted action cannot be resumed")
	// ErrProgress means a Progress does not belong to this driver or is
	// inconsistent (more used than paid, another mode).
	ErrProgress = errors.New("unlock: progress does not match the driver")
)

// Status is the verdict of one doctor check.
type Status uint8

// Check verdicts, as kioskpayd doctor prints them.
const (
	OK Status = iota
	Warn
	Fail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	}
	return "FAIL"
}

// Check is one line of kioskpayd doctor's output.
type Check struct {
	Name   string // e.g. "unlock.gpio.output"
	Status Status
	Detail string
}

// Once is the Plan, Run, Resume and Close of a driver whose action is one
// step that can be neither measured nor repeated (serial, exec); the driver
// embeds it and supplies deliver. Plan accepts every order (the machine
// decides what a type means). Resume runs an action whose Progress never
// started and refuses one that may have reached the machine with
// ErrNotResumable. Close has nothing to release.
type Once struct {
	driver, mode string
	deliver      func(ctx context.Context, o Order, p Progress, report Reporter) (Result, error)
}

// NewOnce returns the Once of driver in mode: deliver is the action, given
// a Progress that has not started; it commits the start through report
// before it reaches the machine.
func NewOnce(driver, mode string, deliver func(ctx context.Context, o Order, p Progress, report Reporter) (Result, error)) Once {
	return Once{driver: driver, mode: mode, deliver: deliver}
}

// Plan accepts every order.
func (d Once) Plan(Order) (Progress, error) {
	return Progress{Driver: d.driver, Mode: d.mode}, nil
}

// Run delivers the action planned by Plan.
func (d Once) Run(ctx context.Context, o Order, p Progress, report Reporter) (Result, error) {
	if p.Started {
		return Result{Progress: p}, fmt.Errorf("%w: Run with a started action; use Resume", ErrProgress)
	}
	return d.deliver(ctx, o, p, report)
}

// Resume runs an action that never started and refuses one that may have.
func (d Once) Resume(ctx context.Context, o Order, last Progress, report Reporter) (Result, error) {
	if last.Driver != d.driver || last.Mode != d.mode {
		return Result{Progress: last}, fmt.Errorf("%w: progress of %s/%s, driver is %s/%s", ErrProgress, last.Driver, last.Mode, d.driver, d.mode)
	}
	if last.Started {
		return Result{Progress: last}, ErrNotResumable
	}
	return d.deliver(ctx, o, last, report)
}

// Close has nothing to release.
func (Once) Close() error { return nil }
