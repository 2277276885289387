package config

import (
	"fmt"
	"strings"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/gpio"
)

// validateDriver checks [unlock] driver and the selected driver's table;
// the tables of drivers not selected are ignored. The drivers' own Validate
// name the key in each problem ("unlock.gpio.output: …"), which becomes the
// Error's Key.
func (c *Config) validateDriver() []error {
	u := c.Unlock
	var err error
	switch u.Driver {
	case unlock.DriverMQTT:
		return nil
	case unlock.DriverGPIO:
		err = u.GPIO.Validate()
	case unlock.DriverSerial:
		err = u.Serial.Validate()
	case unlock.DriverExec:
		err = u.Exec.Validate()
	default:
		return []error{&Error{Key: "unlock.driver", Msg: fmt.Sprintf("must be mqtt, gpio, serial or exec, got %q", u.Driver)}}
	}
	var errs []error
	for _, e := range splitErrors(err) {
		key, msg, ok := strings.Cut(e.Error(), ": ")
		if !ok {
			key, msg = "unlock."+u.Driver, e.Error()
		}
		errs = append(errs, &Error{Key: key, Msg: msg})
	}
	if u.Driver != unlock.DriverGPIO {
		return errs
	}
	// A gpio table is a price list: its keys are order types, and every
	// type the catalog sells must be in it, or that order is refused at
	// create time on every request.
	key, types := "unlock.gpio.relay.durations", sortedKeys(u.GPIO.Relay.Durations)
	if u.GPIO.Mode == gpio.ModePulse {
		key, types = "unlock.gpio.pulse.counts", sortedKeys(u.GPIO.Pulse.Counts)
	}
	have := map[string]bool{}
	for _, t := range types {
		have[t] = true
		if !contract.ValidOrderType(t) {
			errs = append(errs, &Error{Key: key + "." + t, Msg: "order type must be 1 to 32 characters of a-z 0-9 _"})
		}
	}
	for _, t := range sortedKeys(c.Catalog) {
		if !have[t] {
			errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf("has no entry for catalog type %q; orders of that type would be refused", t)})
		}
	}
	return errs
}
