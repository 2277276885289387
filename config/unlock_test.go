package config

import (
	"testing"
	"time"
)

// TestParseUnlockDrivers: each driver's table is read with its defaults,
// and only the selected one is validated.
func TestParseUnlockDrivers(t *testing.T) {
	dir := keyFiles(t)
	for _, tt := range []struct {
		name, extra string
		check       func(t *testing.T, c *Config)
	}{
		{"mqtt default", "", func(t *testing.T, c *Config) {
			if c.Unlock.Driver != "mqtt" || c.Unlock.Local() {
				t.Fatalf("driver %q local %v", c.Unlock.Driver, c.Unlock.Local())
			}
		}},
		{"gpio relay", `
[unlock.gpio]
output = 17
active_low = true
[unlock.gpio.relay.durations]
massage_15 = "15m"
`, func(t *testing.T, c *Config) {
			g := c.Unlock.GPIO
			if g.Chip != "gpiochip0" || g.Output != 17 || !g.ActiveLow || g.Relay.Durations["massage_15"] != 15*time.Minute || g.Relay.BusyLine != -1 {
				t.Fatalf("gpio %+v", g)
			}
		}},
		{"serial", `
[unlock.serial]
port = "/dev/ttyUSB0"
send = "START {out_trade_no}\r\n"
expect = "OK {out_trade_no}"
`, func(t *testing.T, c *Config) {
			s := c.Unlock.Serial
			if s.Baud != 9600 || s.Send != "START {out_trade_no}\r\n" || s.Timeout != 5*time.Second {
				t.Fatalf("serial %+v", s)
			}
		}},
		{"exec", `
[unlock.exec]
command = ["/usr/local/bin/start", "--bay", "2"]
timeout = "20s"
`, func(t *testing.T, c *Config) {
			if e := c.Unlock.Exec; len(e.Command) != 3 || e.Timeout != 20*time.Second {
				t.Fatalf("exec %+v", e)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := base + tt.extra
			if tt.extra != "" {
				text = set(text, "unlock.driver", `"`+map[string]string{"gpio relay": "gpio", "serial": "serial", "exec": "exec"}[tt.name]+`"`)
			}
			c, err := Parse([]byte(text), dir)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestParseUnlockErrors: every problem names its key.
func TestParseUnlockErrors(t *testing.T) {
	dir := keyFiles(t)
	for _, tt := range []struct {
		name, text, key, msg string
	}{
		{"unknown driver", set(base, "unlock.driver", `"relay"`), "unlock.driver", "must be mqtt, gpio, serial or exec"},
		{"exec without command", set(base, "unlock.driver", `"exec"`), "unlock.exec.command", "must name a program"},
		{"exec relative", set(set(base, "unlock.driver", `"exec"`), "unlock.exec.command", `["start.sh"]`), "unlock.exec.command", "absolute path"},
		{"serial parity", set(set(set(set(set(base, "unlock.driver", `"serial"`), "unlock.serial.port", `"/dev/ttyS0"`),
			"unlock.serial.send", `"S"`), "unlock.serial.expect", `"OK"`), "unlock.serial.parity", `"x"`), "unlock.serial.parity", "must be none"},
		{"gpio empty table", set(base, "unlock.driver", `"gpio"`), "unlock.gpio.relay.durations", "needs at least one order type"},
		{"gpio misses a catalog type", set(set(base, "unlock.driver", `"gpio"`), "unlock.gpio.relay.durations.other", `"5m"`),
			"unlock.gpio.relay.durations", `no entry for catalog type "massage_15"`},
		{"gpio bad type name", set(set(base, "unlock.driver", `"gpio"`), "unlock.gpio.relay.durations.Massage", `"5m"`),
			"unlock.gpio.relay.durations.Massage", "order type must be"},
		{"gpio unknown key", set(base, "unlock.gpio.outptu", "3"), "unlock.gpio.outptu", "did you mean unlock.gpio.output"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.text), dir)
			if err == nil || !hasKeyError(err, tt.key, tt.msg) {
				t.Fatalf("error %v does not name %s with %q", err, tt.key, tt.msg)
			}
		})
	}
}
