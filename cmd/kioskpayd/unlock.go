package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/device/unlock"
	unlockexec "github.com/kioskpay/kioskpay/device/unlock/exec"
	"github.com/kioskpay/kioskpay/device/unlock/gpio"
	"github.com/kioskpay/kioskpay/device/unlock/serial"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/systemd"
)

// checkUnlock is doctor's unlock lines: the driver's own checks of the
// configured lines, port or program.
func checkUnlock(r *report, cfg *config.Config, broken brokenKeys) {
	if bad := broken.under("unlock.driver", "unlock."+cfg.Unlock.Driver); bad != "" {
		r.skip("unlock", bad)
		return
	}
	var checks []unlock.Check
	switch cfg.Unlock.Driver {
	case unlock.DriverGPIO:
		checks = gpio.Doctor(cfg.Unlock.GPIO)
	case unlock.DriverSerial:
		checks = serial.Doctor(cfg.Unlock.Serial)
	case unlock.DriverExec:
		checks = unlockexec.Doctor(cfg.Unlock.Exec)
	default:
		r.ok("unlock", "driver mqtt: a controller acks P/pay/result")
		return
	}
	for _, c := range checks {
		switch c.Status {
		case unlock.OK:
			r.ok(c.Name, c.Detail)
		case unlock.Warn:
			r.warn(c.Name, c.Detail)
		default:
			r.fail(c.Name, c.Detail)
		}
	}
}

// loadUnlock reads the configuration for the unlock sub-commands, which
// need [unlock] only: a problem elsewhere in the file (a key file missing)
// must not keep a relay closed.
func loadUnlock(path string) (*config.Config, error) {
	cfg, errs := config.Check(path)
	if cfg == nil {
		return nil, errors.Join(errs...)
	}
	var mine []error
	for _, err := range errs {
		var ce *config.Error
		if errors.As(err, &ce) && (ce.Key == "unlock.driver" || strings.HasPrefix(ce.Key, "unlock."+cfg.Unlock.Driver)) {
			mine = append(mine, err)
		}
	}
	return cfg, errors.Join(mine...)
}

const unlockSafeUsage = `kioskpayd unlock-safe drives the configured unlock outputs to their inactive
(safe) level and releases them. The systemd drop-in runs it after the daemon
stops for any reason (ExecStopPost=): the kernel keeps an output line at its
last level when the process holding it dies, so a relay closed by a killed
daemon would stay closed. With a driver other than gpio it does nothing.

Usage:
  kioskpayd unlock-safe -config FILE

Exit codes: 0 outputs safe (or nothing to do), 1 the line could not be driven,
2 bad configuration or usage.
`

// unlockCommand parses a sub-command's -config flag and reads the file's
// [unlock]; done reports that the command ends with code.
func unlockCommand(name, usage string, args []string, stdout, stderr io.Writer) (cfg *config.Config, path string, code int, done bool) {
	fs := flag.NewFlagSet("kioskpayd "+name, flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file")
	if code, done := cli.Parse(fs, args, usage, false, stdout, stderr); done {
		return nil, "", code, true
	}
	if *configPath == "" {
		return nil, "", cli.Usagef(stderr, "kioskpayd "+name, "-config FILE is required"), true
	}
	cfg, err := loadUnlock(*configPath)
	if err != nil {
		printConfigError(stderr, err)
		return nil, "", exitBadConfig, true
	}
	return cfg, *configPath, 0, false
}

func runUnlockSafe(args []string, stdout, stderr io.Writer) int {
	cfg, _, code, done := unlockCommand("unlock-safe", unlockSafeUsage, args, stdout, stderr)
	if done {
		return code
	}
	if cfg.Unlock.Driver != unlock.DriverGPIO {
		fmt.Fprintf(stdout, "unlock driver %s: no outputs to drive\n", cfg.Unlock.Driver)
		return exitOK
	}
	g := cfg.Unlock.GPIO
	if err := gpio.Safe(g); err != nil {
		fmt.Fprintf(stderr, "kioskpayd unlock-safe: %v\n", err)
		return exitFatal
	}
	fmt.Fprintf(stdout, "%s line %d inactive\n", g.Chip, g.Output)
	return exitOK
}

const unitDropInUsage = `kioskpayd unit-dropin prints the systemd drop-in the configured unlock driver
needs: DeviceAllow= for its gpiochip or serial port, the group that may open it,
and for gpio the ExecStopPost= that drives the outputs safe after any stop.

Usage:
  kioskpayd unit-dropin -config FILE > ` + systemd.DropInPath + `
  systemctl daemon-reload

Run it on the device (it looks at the device node's group), again whenever
[unlock] changes. Exit codes: 0 printed, 2 bad configuration or usage.
`

func runUnitDropIn(args []string, stdout, stderr io.Writer) int {
	cfg, path, code, done := unlockCommand("unit-dropin", unitDropInUsage, args, stdout, stderr)
	if done {
		return code
	}
	abs, _ := filepath.Abs(path)
	fmt.Fprint(stdout, dropInFor(cfg.Unlock, abs))
	return exitOK
}

// dropInFor is the drop-in for u; the daemon binary is the packaged one.
func dropInFor(u config.Unlock, configPath string) systemd.DropIn {
	d := systemd.DropIn{Driver: u.Driver, Binary: "/usr/bin/kioskpayd", Config: configPath}
	fallback := ""
	switch u.Driver {
	case unlock.DriverGPIO:
		d.Device, fallback = u.GPIO.Chip, "gpio"
		if !strings.Contains(d.Device, "/") {
			d.Device = "/dev/" + d.Device
		}
	case unlock.DriverSerial:
		d.Device, fallback = u.Serial.Port, "dialout"
	}
	if d.Device != "" {
		d.Group, d.Note = systemd.DeviceGroup(d.Device, fallback)
	}
	return d
}
