//go:build linux

package gpio

import (
	"fmt"

	"github.com/warthog618/go-gpiocdev"

	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/gpio/gpioconf"
)

// Doctor checks that the chip exists and can be opened, and that each
// configured line exists and is free or already held by kioskpayd. It
// requests nothing, so it is safe while the daemon runs.
func Doctor(cfg gpioconf.Config) []unlock.Check {
	if err := cfg.Validate(); err != nil {
		return []unlock.Check{{Name: "unlock.gpio", Status: unlock.Fail, Detail: err.Error()}}
	}
	consumer := cfg.Consumer
	if consumer == "" {
		consumer = gpioconf.DefaultConsumerLabel
	}
	c, err := gpiocdev.NewChip(cfg.Chip, gpiocdev.WithABIVersion(2))
	if err != nil {
		return []unlock.Check{{Name: "unlock.gpio.chip", Status: unlock.Fail, Detail: fmt.Sprintf("%s: %v", cfg.Chip, err)}}
	}
	defer c.Close()
	checks := []unlock.Check{{Name: "unlock.gpio.chip", Status: unlock.OK,
		Detail: fmt.Sprintf("%s (%s, %d lines, uAPI v%d)", c.Name, c.Label, c.Lines(), c.UapiAbiVersion())}}
	line := func(key string, offset int, what string) {
		if offset >= c.Lines() {
			checks = append(checks, unlock.Check{Name: key, Status: unlock.Fail,
				Detail: fmt.Sprintf("line %d does not exist on %s (%d lines)", offset, c.Name, c.Lines())})
			return
		}
		info, err := c.LineInfo(offset)
		switch {
		case err != nil:
			checks = append(checks, unlock.Check{Name: key, Status: unlock.Fail, Detail: err.Error()})
		case info.Used && info.Consumer != consumer:
			checks = append(checks, unlock.Check{Name: key, Status: unlock.Fail,
				Detail: fmt.Sprintf("line %d is in use by %q", offset, info.Consumer)})
		default:
			state := "free"
			if info.Used {
				state = "held by " + consumer
			}
			name := ""
			if info.Name != "" {
				name = " " + info.Name
			}
			checks = append(checks, unlock.Check{Name: key, Status: unlock.OK,
				Detail: fmt.Sprintf("line %d%s %s, %s", offset, name, what, state)})
		}
	}
	level := "active high"
	if cfg.ActiveLow {
		level = "active low"
	}
	line("unlock.gpio.output", cfg.Output, cfg.Mode+" output, "+level)
	if cfg.Mode == gpioconf.ModeRelay && cfg.Relay.BusyLine >= 0 {
		line("unlock.gpio.relay.busy_line", cfg.Relay.BusyLine, "busy input")
	}
	return checks
}
