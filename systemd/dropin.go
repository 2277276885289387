// Package systemd holds kioskpayd's unit, sysusers and tmpfiles files
// (checked by this package's tests with systemd's own tools) and DropIn,
// which writes the part of the unit that depends on the unlock driver.
//
// The packaged unit grants no device but /dev/fb0. A local unlock driver
// needs its device and nothing more, and which device that is depends on
// the configuration, so `kioskpayd unit-dropin -config FILE` prints a
// drop-in for it (/etc/systemd/system/kioskpayd.service.d/unlock.conf).
package systemd

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// DropInPath is where the drop-in is installed.
const DropInPath = "/etc/systemd/system/kioskpayd.service.d/unlock.conf"

// DropIn is what one unlock driver adds to kioskpayd.service.
type DropIn struct {
	// Driver is [unlock] driver: mqtt, gpio, serial or exec.
	Driver string
	// Device is the device node the driver opens (/dev/gpiochip0,
	// /dev/ttyUSB0); "" for none.
	Device string
	// Group is the supplementary group that may open Device ("" none).
	Group string
	// Note explains a missing Group.
	Note string
	// Binary and Config make the ExecStopPost= line (gpio only).
	Binary, Config string
}

// usbTTY matches device nodes of USB serial adapters, which may appear
// after the daemon started and get their minor number at plug time.
var usbTTY = regexp.MustCompile(`^/dev/tty(USB|ACM)[0-9]+$`)

// deviceAllow is the DeviceAllow= value for d.Device. systemd resolves a
// path to its major:minor when the service starts, so a USB adapter that
// is plugged in later (or re-enumerated) would stay denied: those get
// their driver's class (char-ttyUSB, char-ttyACM), every other node its
// path.
func (d DropIn) deviceAllow() string {
	dev := d.Device
	if r, err := filepath.EvalSymlinks(dev); err == nil {
		dev = r
	}
	if m := usbTTY.FindStringSubmatch(dev); m != nil {
		return "char-tty" + m[1] + " rw"
	}
	return d.Device + " rw"
}

// String is the drop-in file.
func (d DropIn) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# kioskpayd.service for [unlock] driver = %q, written by\n", d.Driver)
	fmt.Fprintf(&b, "#   kioskpayd unit-dropin -config %s\n", d.Config)
	fmt.Fprintf(&b, "# Install as %s, then systemctl daemon-reload.\n", DropInPath)
	b.WriteString("[Service]\n")
	switch d.Driver {
	case "gpio":
		b.WriteString("# The GPIO character device with the output (and busy) line.\n")
	case "serial":
		b.WriteString("# The serial port the machine listens on.\n")
	case "exec":
		b.WriteString(`# The program runs inside this unit's sandbox and inherits all of it: User=
# kioskpay, NoNewPrivileges (no sudo, no setuid), an empty capability set,
# ProtectSystem=strict (read-only file system but for /var/lib/kioskpayd and
# /run/kioskpayd), PrivateTmp, DevicePolicy=closed (no device but those
# allowed here), RestrictAddressFamilies (unix and IP only),
# MemoryDenyWriteExecute (no JIT: node, java and PyPy fail; CPython and shell
# work) and the system-call filter. Grant what it needs in another drop-in,
# never by loosening these.
`)
	default:
		b.WriteString("# An MQTT controller starts the machine: nothing to add.\n")
	}
	if d.Device != "" {
		fmt.Fprintf(&b, "DeviceAllow=%s\n", d.deviceAllow())
	}
	switch {
	case d.Group != "":
		fmt.Fprintf(&b, "SupplementaryGroups=%s\n", d.Group)
	case d.Note != "":
		for _, l := range strings.Split(d.Note, "\n") {
			fmt.Fprintf(&b, "# %s\n", l)
		}
	}
	if d.Driver == "gpio" {
		b.WriteString(`# The kernel keeps an output line at its last level when the process holding
# it dies: after every stop, crash or watchdog kill the output is driven to its
# inactive level before anything else (also before a restart).
`)
		fmt.Fprintf(&b, "ExecStopPost=%s unlock-safe -config %s\n", d.Binary, d.Config)
	}
	return b.String()
}

// DeviceGroup returns the group that may open the device node at path:
// its owning group when that group has read-write access and is not root,
// else fallback (gpio, dialout) when such a group exists here. When it
// finds none it says why and what to do in note.
func DeviceGroup(path, fallback string) (group, note string) {
	fi, err := os.Stat(path)
	if err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Gid != 0 && fi.Mode().Perm()&0o060 == 0o060 {
			if g, err := user.LookupGroupId(fmt.Sprint(st.Gid)); err == nil {
				return g.Name, ""
			}
		}
	}
	if _, err := user.LookupGroup(fallback); err == nil {
		return fallback, ""
	}
	why := "is not present now"
	if err == nil {
		why = fmt.Sprintf("has mode %v and no group to grant", fi.Mode().Perm())
	}
	return "", fmt.Sprintf("No SupplementaryGroups=: %s %s and there is no group %q.\n"+
		"Add a udev rule giving the node to a group (e.g. SUBSYSTEM==\"gpio\", GROUP=\"%s\", MODE=\"0660\"),\n"+
		"add kioskpay to it and run unit-dropin again.", path, why, fallback, fallback)
}
