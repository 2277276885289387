//go:build linux

package gpio

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/gpio/gpioconf"
)

func relayConfig() gpioconf.Config {
	c := gpioconf.DefaultConfig()
	c.Output = 17
	c.Relay.Durations = map[string]time.Duration{"massage_15": 15 * time.Minute}
	return c
}

func pulseConfig() gpioconf.Config {
	c := gpioconf.DefaultConfig()
	c.Output = 17
	c.Mode = gpioconf.ModePulse
	c.Pulse.Counts = map[string]int{"wash_5": 5, "wash_10": 10}
	return c
}

func TestDefaultsValidate(t *testing.T) {
	for _, c := range []gpioconf.Config{relayConfig(), pulseConfig()} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", c.Mode, err)
		}
	}
}

func TestValidateNamesKey(t *testing.T) {
	for _, tc := range []struct {
		base func() gpioconf.Config
		edit func(*gpioconf.Config)
		want string
	}{
		{relayConfig, func(c *gpioconf.Config) { c.Chip = "" }, "unlock.gpio.chip"},
		{relayConfig, func(c *gpioconf.Config) { c.Output = -1 }, "unlock.gpio.output"},
		{relayConfig, func(c *gpioconf.Config) { c.Mode = "toggle" }, "unlock.gpio.mode"},
		{relayConfig, func(c *gpioconf.Config) { c.Relay.Durations = nil }, "unlock.gpio.relay.durations: needs at least one"},
		{relayConfig, func(c *gpioconf.Config) { c.Relay.Durations["massage_15"] = 15 }, "unlock.gpio.relay.durations.massage_15: must be from 1s"},
		{relayConfig, func(c *gpioconf.Config) { c.Relay.BusyLine = 17 }, "unlock.gpio.relay.busy_line: must differ"},
		{relayConfig, func(c *gpioconf.Config) { c.Relay.BusyLine = -2 }, "unlock.gpio.relay.busy_line"},
		{relayConfig, func(c *gpioconf.Config) { c.Relay.BusyLine = 4; c.Relay.BusyTimeout = time.Millisecond }, "unlock.gpio.relay.busy_timeout"},
		{relayConfig, func(c *gpioconf.Config) { c.Relay.Checkpoint = 0 }, "unlock.gpio.relay.checkpoint"},
		{pulseConfig, func(c *gpioconf.Config) { c.Pulse.Counts = nil }, "unlock.gpio.pulse.counts: needs at least one"},
		{pulseConfig, func(c *gpioconf.Config) { c.Pulse.Counts["wash_5"] = 0 }, "unlock.gpio.pulse.counts.wash_5"},
		{pulseConfig, func(c *gpioconf.Config) { c.Pulse.Counts["wash_5"] = gpioconf.MaxPulses + 1 }, "unlock.gpio.pulse.counts.wash_5"},
		// An integer in TOML decodes to nanoseconds: 50 is not 50 ms.
		{pulseConfig, func(c *gpioconf.Config) { c.Pulse.Width = 50 }, "unlock.gpio.pulse.width"},
		{pulseConfig, func(c *gpioconf.Config) { c.Pulse.Gap = 3 * time.Second }, "unlock.gpio.pulse.gap"},
	} {
		c := tc.base()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func TestPlan(t *testing.T) {
	p, err := plan(pulseConfig(), unlock.Order{Type: "wash_10", TotalFee: 1000})
	if err != nil || p.PulsesPaid != 10 || p.Driver != "gpio" || p.Mode != gpioconf.ModePulse || p.Started {
		t.Errorf("pulse plan %+v %v", p, err)
	}
	p, err = plan(relayConfig(), unlock.Order{Type: "massage_15"})
	if err != nil || p.RelayPaid != 15*time.Minute || p.Mode != gpioconf.ModeRelay {
		t.Errorf("relay plan %+v %v", p, err)
	}
	// No table entry: refuse, whatever the amount.
	if _, err := plan(pulseConfig(), unlock.Order{Type: "wash_7", TotalFee: 700}); !errors.Is(err, unlock.ErrUnknownType) {
		t.Errorf("unknown pulse type: %v", err)
	}
	if _, err := plan(relayConfig(), unlock.Order{Type: "massage_30"}); !errors.Is(err, unlock.ErrUnknownType) {
		t.Errorf("unknown relay type: %v", err)
	}
}

func TestCheckProgress(t *testing.T) {
	pc, rc := pulseConfig(), relayConfig()
	for _, tc := range []struct {
		cfg gpioconf.Config
		p   unlock.Progress
		ok  bool
	}{
		{pc, unlock.Progress{Driver: "gpio", Mode: gpioconf.ModePulse, PulsesPaid: 5, PulsesStarted: 3, PulsesDone: 2}, true},
		{pc, unlock.Progress{Driver: "gpio", Mode: gpioconf.ModePulse, PulsesPaid: 5, PulsesStarted: 6}, false},
		{pc, unlock.Progress{Driver: "gpio", Mode: gpioconf.ModePulse, PulsesPaid: 5, PulsesStarted: 2, PulsesDone: 3}, false},
		{pc, unlock.Progress{Driver: "gpio", Mode: gpioconf.ModePulse}, false},
		{pc, unlock.Progress{Driver: "gpio", Mode: gpioconf.ModeRelay, RelayPaid: time.Minute}, false},
		{rc, unlock.Progress{Driver: "gpio", Mode: gpioconf.ModeRelay, RelayPaid: time.Minute, RelayUsed: time.Minute}, true},
		{rc, unlock.Progress{Driver: "gpio", Mode: gpioconf.ModeRelay, RelayPaid: time.Minute, RelayUsed: 2 * time.Minute}, false},
		{rc, unlock.Progress{Driver: "exec", Mode: "program"}, false},
	} {
		err := checkProgress(tc.cfg, tc.p)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, unlock.ErrProgress)) {
			t.Errorf("%+v: %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}
