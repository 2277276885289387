package config

import (
	"strings"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/gpio/gpioconf"
	"github.com/kioskpay/kioskpay/payment"
)

// validateDriver checks [unlock] driver and the selected driver's table;
// the tables of drivers not selected are ignored. The drivers' own Validate
// name the key in each problem ("unlock.gpio.output: …"), which becomes the
// Error's Key.
func (u Unlock) validateDriver(p *problems, catalog map[string]payment.Fen) {
	var err error
	switch u.Driver {
	case unlock.DriverMQTT:
		return
	case unlock.DriverGPIO:
		err = u.GPIO.Validate()
	case unlock.DriverSerial:
		err = u.Serial.Validate()
	case unlock.DriverExec:
		err = u.Exec.Validate()
	default:
		p.add("unlock.driver", "must be mqtt, gpio, serial or exec, got %q", u.Driver)
		return
	}
	for _, e := range splitErrors(err) {
		key, msg, ok := strings.Cut(e.Error(), ": ")
		if !ok {
			key, msg = "unlock."+u.Driver, e.Error()
		}
		*p = append(*p, &Error{Key: key, Msg: msg})
	}
	if u.Driver != unlock.DriverGPIO {
		return
	}
	// A gpio table is a price list: its keys are order types, and every
	// type the catalog sells must be in it, or that order is refused at
	// create time on every request.
	key, types := "unlock.gpio.relay.durations", sortedKeys(u.GPIO.Relay.Durations)
	if u.GPIO.Mode == gpioconf.ModePulse {
		key, types = "unlock.gpio.pulse.counts", sortedKeys(u.GPIO.Pulse.Counts)
	}
	have := map[string]bool{}
	for _, t := range types {
		have[t] = true
		if !contract.ValidOrderType(t) {
			p.add(key+"."+t, "order type must be 1 to 32 characters of a-z 0-9 _")
		}
	}
	for _, t := range sortedKeys(catalog) {
		if !have[t] {
			p.add(key, "has no entry for catalog type %q; orders of that type would be refused", t)
		}
	}
}
