// Package serial is the unlock driver for machines that take a command on a
// serial line (RS-232/RS-485 adapters, a controller board's UART): for each
// paid order it writes one configured line and waits for the configured
// answer.
//
//	[unlock.serial]
//	port = "/dev/ttyUSB0"
//	baud = 9600
//	data_bits = 8
//	parity = "none"        # none | odd | even | mark | space
//	stop_bits = "1"        # 1 | 1.5 | 2
//	send = "START {type} {out_trade_no} {total_fee}\r\n"
//	expect = "OK {out_trade_no}"   # delivered when this arrives in time
//	reject = "ERR"                 # optional: not delivered at once
//	timeout = "5s"
//
// send, expect and reject are templates with three placeholders,
// {out_trade_no}, {type} and {total_fee} (fen); every other character is
// sent or expected verbatim (TOML escapes such as \r\n, \u0002 give control
// characters). Input already waiting when the order starts is discarded,
// and expect should contain {out_trade_no}: then neither a late answer to a
// previous order nor line noise can deliver this one. Bytes that match
// neither answer are ignored until the timeout, which means not delivered.
//
// It uses go.bug.st/serial (pinned at v1.8.0): pure Go on Linux (the cgo
// parts are macOS-only, so the CGO_ENABLED=0 arm builds work), maintained
// by Arduino's Cristian Maglie for the Arduino CLI, BSD-3-Clause, with read
// timeouts, exclusive open and all the framing options above. tarm/serial
// has had no release since 2017 and has no parity mark/space or 1.5 stop
// bits; pkg/term is a terminal library with a smaller serial surface.
//
// The port is opened per order and closed after it, so an adapter that was
// unplugged and came back under the same name works again. A written line
// cannot be taken back: Resume refuses an action that reached the write
// (unlock.ErrNotResumable) and the order goes to a human.
package serial

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.bug.st/serial"

	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/serial/serialconf"
)

// Mode is the only mode of this driver, as written in Progress.Mode.
const Mode = "line"

// maxInput bounds what is kept of the machine's answer while matching.
const maxInput = 4096

var parities = map[string]serial.Parity{
	serialconf.ParityNone: serial.NoParity, serialconf.ParityOdd: serial.OddParity, serialconf.ParityEven: serial.EvenParity,
	serialconf.ParityMark: serial.MarkParity, serialconf.ParitySpace: serial.SpaceParity,
}

var stopBits = map[string]serial.StopBits{
	serialconf.StopBits1: serial.OneStopBit, serialconf.StopBits1_5: serial.OnePointFiveStopBits, serialconf.StopBits2: serial.TwoStopBits,
}

// Expand fills a template's placeholders from o.
func Expand(tmpl string, o unlock.Order) string { return serialconf.Expand(tmpl, o) }

// mode is the port settings of the table.
func mode(c serialconf.Config) *serial.Mode {
	return &serial.Mode{BaudRate: c.Baud, DataBits: c.DataBits, Parity: parities[c.Parity], StopBits: stopBits[c.StopBits]}
}

// Driver writes one line per order. The port is opened per order, so Close
// has nothing to release.
type Driver struct {
	unlock.Once
	cfg serialconf.Config
	log *slog.Logger
	mu  sync.Mutex // one order at a time on the port
}

var _ unlock.Driver = (*Driver)(nil)

// New validates cfg. The port is opened per order.
func New(cfg serialconf.Config, log *slog.Logger) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, log: log.With("driver", unlock.DriverSerial)}
	d.Once = unlock.NewOnce(unlock.DriverSerial, Mode, d.run)
	return d, nil
}

// run opens the port, commits the start, writes the line and waits for an
// answer.
func (d *Driver) run(ctx context.Context, o unlock.Order, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	log := d.log.With("out_trade_no", o.OutTradeNo, "type", o.Type, "port", d.cfg.Port)
	notDelivered := func(reason string) (unlock.Result, error) {
		log.Warn("serial: not delivered", "reason", reason)
		return unlock.Result{Outcome: unlock.NotDelivered, Reason: reason, Progress: p}, nil
	}

	port, err := serial.Open(d.cfg.Port, mode(d.cfg))
	if err != nil {
		// Nothing reached the machine.
		return notDelivered("serial port: " + err.Error())
	}
	defer port.Close()
	// Closing the port is what interrupts a blocked Read when ctx ends.
	stop := context.AfterFunc(ctx, func() { port.Close() })
	defer stop()
	if err := port.ResetInputBuffer(); err != nil {
		return notDelivered("serial port: discard stale input: " + err.Error())
	}

	line := []byte(Expand(d.cfg.Send, o))
	expect := []byte(Expand(d.cfg.Expect, o))
	var reject []byte
	if d.cfg.Reject != "" {
		reject = []byte(Expand(d.cfg.Reject, o))
	}

	p.Started = true
	if err := report(p); err != nil {
		p.Started = false
		return unlock.Result{Progress: p}, fmt.Errorf("unlock serial: commit start: %w", err)
	}
	start := time.Now()
	deadline := start.Add(d.cfg.Timeout)
	if _, err := port.Write(line); err != nil {
		if ctx.Err() != nil {
			return unlock.Result{Progress: p}, ctx.Err()
		}
		// Part of the line may be out: the outcome is unknown, not "not
		// delivered".
		return unlock.Result{Progress: p}, fmt.Errorf("unlock serial: write: %w", err)
	}
	log.Info("serial: line sent", "bytes", len(line))

	var got []byte
	buf := make([]byte, 256)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			if len(got) == 0 {
				return notDelivered(fmt.Sprintf("no answer within %s", d.cfg.Timeout))
			}
			return notDelivered(fmt.Sprintf("no expected answer within %s (got %s)", d.cfg.Timeout, excerpt(got)))
		}
		if err := port.SetReadTimeout(left); err != nil {
			return unlock.Result{Progress: p}, fmt.Errorf("unlock serial: %w", err)
		}
		n, err := port.Read(buf)
		if ctx.Err() != nil {
			return unlock.Result{Progress: p}, ctx.Err()
		}
		if err != nil {
			// The adapter went away after the line was written: the
			// machine may have started.
			return unlock.Result{Progress: p}, fmt.Errorf("unlock serial: read: %w", err)
		}
		got = append(got, buf[:n]...)
		if len(got) > maxInput {
			got = got[len(got)-maxInput:]
		}
		switch {
		case bytes.Contains(got, expect):
			log.Info("serial: delivered", "after", time.Since(start).Round(time.Millisecond))
			return unlock.Result{Outcome: unlock.Delivered, Progress: p}, nil
		case reject != nil && bytes.Contains(got, reject):
			return notDelivered("machine answered " + excerpt(got))
		}
	}
}

// excerpt quotes the last bytes of an answer for a reason or a log line;
// the machine's bytes are outside input, so they are escaped.
func excerpt(b []byte) string {
	const n = 48
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strconv.Quote(string(b))
}

// Doctor checks that the port exists, is a character device and opens with
// the configured framing.
func Doctor(cfg serialconf.Config) []unlock.Check {
	name := "unlock.serial.port"
	if err := cfg.Validate(); err != nil {
		return []unlock.Check{{Name: "unlock.serial", Status: unlock.Fail, Detail: err.Error()}}
	}
	fi, err := os.Stat(cfg.Port)
	if err != nil {
		return []unlock.Check{{Name: name, Status: unlock.Fail, Detail: err.Error()}}
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return []unlock.Check{{Name: name, Status: unlock.Fail, Detail: cfg.Port + " is not a character device"}}
	}
	port, err := serial.Open(cfg.Port, mode(cfg))
	if err != nil {
		var pe *serial.PortError
		if errors.As(err, &pe) && pe.Code() == serial.PortBusy {
			return []unlock.Check{{Name: name, Status: unlock.Warn, Detail: cfg.Port + " is busy (the daemon or another program holds it)"}}
		}
		return []unlock.Check{{Name: name, Status: unlock.Fail, Detail: cfg.Port + ": " + err.Error()}}
	}
	port.Close()
	return []unlock.Check{{Name: name, Status: unlock.OK,
		Detail: fmt.Sprintf("%s %d %d%s%s", cfg.Port, cfg.Baud, cfg.DataBits, strings.ToUpper(cfg.Parity[:1]), cfg.StopBits)}}
}
