// Package serialconf is the [unlock.serial] table: its keys, defaults and
// checks, and the templates' placeholders. It needs only the standard
// library and the unlock package, so the configuration checks the table
// without linking the serial driver's port library.
package serialconf

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/device/unlock"
)

// Defaults for [unlock.serial].
const (
	DefaultBaud     = 9600
	DefaultDataBits = 8
	DefaultParity   = ParityNone
	DefaultStopBits = StopBits1
	DefaultTimeout  = 5 * time.Second
	MaxTimeout      = 10 * time.Minute
	// maxLine bounds the expanded templates.
	maxLine = 1024
)

// Config is the [unlock.serial] table.
type Config struct {
	Port     string        `toml:"port"`
	Baud     int           `toml:"baud"`
	DataBits int           `toml:"data_bits"`
	Parity   string        `toml:"parity"`
	StopBits string        `toml:"stop_bits"`
	Send     string        `toml:"send"`
	Expect   string        `toml:"expect"`
	Reject   string        `toml:"reject"`
	Timeout  time.Duration `toml:"timeout"`
}

// DefaultConfig returns the defaults; port, send and expect have none.
func DefaultConfig() Config {
	return Config{Baud: DefaultBaud, DataBits: DefaultDataBits, Parity: DefaultParity,
		StopBits: DefaultStopBits, Timeout: DefaultTimeout}
}

// Parities, as written in unlock.serial.parity.
const (
	ParityNone  = "none"
	ParityOdd   = "odd"
	ParityEven  = "even"
	ParityMark  = "mark"
	ParitySpace = "space"
)

// Parities are the values of unlock.serial.parity.
var Parities = []string{ParityNone, ParityOdd, ParityEven, ParityMark, ParitySpace}

// Stop bits, as written in unlock.serial.stop_bits.
const (
	StopBits1   = "1"
	StopBits1_5 = "1.5"
	StopBits2   = "2"
)

// StopBitsValues are the values of unlock.serial.stop_bits.
var StopBitsValues = []string{StopBits1, StopBits1_5, StopBits2}

// Placeholders the templates may use.
var placeholderRe = regexp.MustCompile(`\{[a-z_]+\}`)

var known = map[string]bool{"{out_trade_no}": true, "{type}": true, "{total_fee}": true}

// Validate names the offending key in every problem.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("unlock.serial.%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.Port == "" {
		bad("port", "must name the serial device, e.g. /dev/ttyUSB0")
	}
	if c.Baud < 50 || c.Baud > 4_000_000 {
		bad("baud", "must be from 50 to 4000000, got %d", c.Baud)
	}
	if c.DataBits < 5 || c.DataBits > 8 {
		bad("data_bits", "must be 5, 6, 7 or 8, got %d", c.DataBits)
	}
	if !slices.Contains(Parities, c.Parity) {
		bad("parity", "must be none, odd, even, mark or space, got %q", c.Parity)
	}
	if !slices.Contains(StopBitsValues, c.StopBits) {
		bad("stop_bits", "must be \"1\", \"1.5\" or \"2\", got %q", c.StopBits)
	}
	for _, f := range []struct{ key, v string }{{"send", c.Send}, {"expect", c.Expect}, {"reject", c.Reject}} {
		if f.v == "" && f.key != "reject" {
			bad(f.key, "must be set")
		}
		for _, p := range placeholderRe.FindAllString(f.v, -1) {
			if !known[p] {
				bad(f.key, "unknown placeholder %s (have {out_trade_no}, {type}, {total_fee})", p)
			}
		}
		if len(f.v) > maxLine/2 {
			bad(f.key, "longer than %d bytes", maxLine/2)
		}
	}
	if c.Reject != "" && strings.Contains(Expand(c.Expect, sample), Expand(c.Reject, sample)) {
		bad("reject", "is part of unlock.serial.expect, so every expected answer would also reject")
	}
	if c.Timeout < 100*time.Millisecond || c.Timeout > MaxTimeout {
		bad("timeout", "must be from 100ms to %s, got %s", MaxTimeout, c.Timeout)
	}
	return errors.Join(errs...)
}

// sample is an order used to check templates against each other.
var sample = unlock.Order{OutTradeNo: "sample_0001", Type: "sample", TotalFee: 100}

// Expand fills a template's placeholders from o.
func Expand(tmpl string, o unlock.Order) string {
	return strings.NewReplacer(
		"{out_trade_no}", o.OutTradeNo,
		"{type}", o.Type,
		"{total_fee}", strconv.FormatInt(o.TotalFee, 10),
	).Replace(tmpl)
}
