package deploy

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebPackage runs deploy/build.sh for amd64 and checks the binaries and
// the .deb: static binaries stamped with the version, and every file the
// package promises, with the right modes.
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every command and a package (~1 min): skipped with -short")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	dist := t.TempDir()
	cmd := exec.Command("bash", "build.sh")
	cmd.Env = append(os.Environ(), "ARCHES=amd64", "DIST="+dist, "VERSION=v9.8.7")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	t.Logf("build.sh:\n%s", out)

	for _, name := range []string{"kioskpayd", "kioskctl", "notifyrelay", "paysim"} {
		bin := filepath.Join(dist, "amd64", name)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (has PT_INTERP)", name)
			}
		}
		f.Close()
	}
	for bin, args := range map[string][]string{"kioskpayd": {"-version"}, "kioskctl": {"version"}} {
		v, err := exec.Command(filepath.Join(dist, "amd64", bin), args...).CombinedOutput()
		if err != nil || !strings.Contains(string(v), "9.8.7") {
			t.Errorf("%s %v: %v %q, want the version 9.8.7", bin, args, err, v)
		}
	}

	deb := filepath.Join(dist, "kioskpay_9.8.7_amd64.deb")
	info, err := exec.Command("dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends").CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -f: %v\n%s", err, info)
	}
	for _, want := range []string{"Package: kioskpay", "Version: 9.8.7", "Architecture: amd64", "Depends: systemd"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("control lacks %q:\n%s", want, info)
		}
	}
	list, err := exec.Command("dpkg-deb", "-c", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, list)
	}
	modes := map[string]string{}
	for _, line := range strings.Split(string(list), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			modes[strings.TrimPrefix(f[len(f)-1], ".")] = f[0]
		}
	}
	for path, mode := range map[string]string{
		"/usr/bin/kioskpayd":                           "-rwxr-xr-x",
		"/usr/bin/kioskctl":                            "-rwxr-xr-x",
		"/lib/systemd/system/kioskpayd.service":        "-rw-r--r--",
		"/usr/lib/sysusers.d/kioskpayd.conf":           "-rw-r--r--",
		"/usr/lib/tmpfiles.d/kioskpayd.conf":           "-rw-r--r--",
		"/usr/share/kioskpayd/kioskpayd.toml.example":  "-rw-r--r--",
		"/usr/share/kioskpayd/provision.sh":            "-rwxr-xr-x",
		"/usr/share/kioskpayd/mosquitto/kioskpay.conf": "-rw-r--r--",
		"/usr/share/kioskpayd/mosquitto/kioskpay.acl":  "-rw-r--r--",
		"/usr/share/doc/kioskpay/README.md":            "-rw-r--r--",
	} {
		if got, ok := modes[path]; !ok {
			t.Errorf("package lacks %s", path)
		} else if got != mode {
			t.Errorf("%s: mode %s, want %s", path, got, mode)
		}
	}
	// No live config in the package: a placeholder config would only make
	// the service fail before provisioning.
	if _, ok := modes["/etc/kioskpayd/kioskpayd.toml"]; ok {
		t.Error("package ships /etc/kioskpayd/kioskpayd.toml")
	}
	scripts := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-e", deb, scripts).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if _, err := os.Stat(filepath.Join(scripts, s)); err != nil {
			t.Errorf("maintainer script %s missing", s)
		}
	}
}
