package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// dropIns are one drop-in per driver, as kioskpayd unit-dropin writes them.
var dropIns = []DropIn{
	{Driver: "mqtt", Binary: "/usr/bin/kioskpayd", Config: "/etc/kioskpayd/kioskpayd.toml"},
	{Driver: "gpio", Device: "/dev/gpiochip0", Group: "gpio", Binary: "/usr/bin/kioskpayd", Config: "/etc/kioskpayd/kioskpayd.toml"},
	{Driver: "serial", Device: "/dev/ttyUSB0", Group: "dialout", Binary: "/usr/bin/kioskpayd", Config: "/etc/kioskpayd/kioskpayd.toml"},
	{Driver: "serial", Device: "/dev/ttyAMA0", Note: "No SupplementaryGroups=: no group.", Binary: "/usr/bin/kioskpayd", Config: "/etc/kioskpayd/kioskpayd.toml"},
	{Driver: "exec", Binary: "/usr/bin/kioskpayd", Config: "/etc/kioskpayd/kioskpayd.toml"},
}

// withDropIn installs d into a unit root as systemd would find it.
func withDropIn(t *testing.T, root string, d DropIn) {
	t.Helper()
	dir := filepath.Join(root, "etc/systemd/system/kioskpayd.service.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unlock.conf"), []byte(d.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDropInsVerify: the unit with each driver's drop-in passes
// systemd-analyze verify without a word, and the drop-ins do not raise the
// exposure score above the unit's bound.
func TestDropInsVerify(t *testing.T) {
	sa := need(t, "systemd-analyze")
	for _, d := range dropIns {
		t.Run(d.Driver+strings.ReplaceAll(d.Device, "/", "_"), func(t *testing.T) {
			root := unitRoot(t)
			withDropIn(t, root, d)
			cmd := exec.Command(sa, "verify", "--root="+root, "kioskpayd.service")
			cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "SYSTEMD_LOG_COLOR=0")
			if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("systemd-analyze verify with\n%s\n: %v\n%s", d, err, out)
			}
			out, _ := exec.Command(sa, "security", "--offline=yes", "--no-pager", "--root="+root, "kioskpayd.service").CombinedOutput()
			if m := regexp.MustCompile(`Overall exposure level for kioskpayd.service: ([0-9.]+)`).FindSubmatch(out); m != nil {
				if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 2.5 {
					t.Fatalf("exposure %.1f > 2.5 with\n%s", score, d)
				}
			}
		})
	}
}

// TestDropInContents: each driver gets its device, its group and, for
// gpio only, the safe-level step; nothing else.
func TestDropInContents(t *testing.T) {
	for _, tc := range []struct {
		d          DropIn
		want, nope []string
	}{
		{dropIns[0], nil, []string{"DeviceAllow=", "SupplementaryGroups=", "ExecStopPost="}},
		{dropIns[1], []string{"DeviceAllow=/dev/gpiochip0 rw\n", "SupplementaryGroups=gpio\n",
			"ExecStopPost=/usr/bin/kioskpayd unlock-safe -config /etc/kioskpayd/kioskpayd.toml\n"}, nil},
		{dropIns[2], []string{"DeviceAllow=char-ttyUSB rw\n", "SupplementaryGroups=dialout\n"}, []string{"ExecStopPost="}},
		{dropIns[3], []string{"DeviceAllow=/dev/ttyAMA0 rw\n", "# No SupplementaryGroups=: no group.\n"}, []string{"\nSupplementaryGroups=", "ExecStopPost="}},
		{dropIns[4], []string{"MemoryDenyWriteExecute", "NoNewPrivileges"}, []string{"DeviceAllow=", "\nSupplementaryGroups=", "ExecStopPost="}},
	} {
		s := tc.d.String()
		for _, w := range tc.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s drop-in lacks %q:\n%s", tc.d.Driver, w, s)
			}
		}
		for _, n := range tc.nope {
			if strings.Contains(s, n) {
				t.Errorf("%s drop-in has %q:\n%s", tc.d.Driver, n, s)
			}
		}
	}
}

// TestDeviceGroup: the node's own group when it grants read-write, else
// the conventional group if it exists, else a note.
func TestDeviceGroup(t *testing.T) {
	if g, note := DeviceGroup("/nonexistent/tty", "no-such-group-kioskpay"); g != "" || !strings.Contains(note, "is not present") {
		t.Fatalf("missing node: %q %q", g, note)
	}
	if _, err := os.Stat("/dev/tty"); err == nil {
		// /dev/tty is root:tty 0666 on Debian: group tty, read-write.
		if g, _ := DeviceGroup("/dev/tty", "dialout"); g == "" {
			t.Fatal("no group for /dev/tty")
		}
	}
}
