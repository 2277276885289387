package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// need returns the path of tool or skips the test, saying how to get it.
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not installed (apt-get install systemd): %v", tool, err)
	}
	return p
}

// unitRoot builds a throw-away root directory in which systemd-analyze can
// load the unit exactly as packaged: the unit in /etc/systemd/system, a stub
// /usr/bin/kioskpayd (verify checks ExecStart= is executable), and the
// host's own units for the targets it depends on.
func unitRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"kioskpayd", "paygate"} {
		if err := os.WriteFile(filepath.Join(root, "usr/bin", name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		unit, err := os.ReadFile(name + ".service")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc/systemd/system", name+".service"), unit, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(host, "sysinit.target")); err != nil {
		host = "/lib/systemd/system"
	}
	if out, err := exec.Command("cp", "-a", host, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copy host units: %v\n%s", err, out)
	}
	return root
}

// TestUnitVerifies runs systemd-analyze verify. It exits 0 even for unknown
// keys and misspelt values (it only warns), so any output is a failure.
func TestUnitVerifies(t *testing.T) {
	sa := need(t, "systemd-analyze")
	root := unitRoot(t)
	cmd := exec.Command(sa, "verify", "--root="+root, "kioskpayd.service", "paygate.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitExposure keeps the hardening from eroding: systemd's own
// exposure score (0 best, 10 worst) must stay low.
func TestUnitExposure(t *testing.T) {
	sa := need(t, "systemd-analyze")
	root := unitRoot(t)
	for _, unit := range []string{"kioskpayd.service", "paygate.service"} {
		out, err := exec.Command(sa, "security", "--offline=yes", "--no-pager", "--root="+root, unit).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(unit) + `: ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Skipf("this systemd-analyze cannot score offline (%v):\n%s", err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: systemd-analyze security exposure: %.1f", unit, score)
		if score > 2.5 {
			t.Fatalf("%s: exposure %.1f > 2.5:\n%s", unit, score, out)
		}
	}
}

// TestUnitDirectives pins the settings the daemon relies on.
func TestUnitDirectives(t *testing.T) {
	f, err := os.Open("kioskpayd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		got[section+"."+k] = append(got[section+"."+k], v)
	}
	for key, want := range map[string]string{
		"Unit.After":                       "network-online.target time-sync.target",
		"Unit.Wants":                       "network-online.target",
		"Service.Type":                     "notify",
		"Service.WatchdogSec":              "30s",
		"Service.Restart":                  "always",
		"Service.ExecStart":                "/usr/bin/kioskpayd -config /etc/kioskpayd/kioskpayd.toml",
		"Service.User":                     "kioskpay",
		"Service.SupplementaryGroups":      "video",
		"Service.StateDirectory":           "kioskpayd",
		"Service.RuntimeDirectory":         "kioskpayd",
		"Service.NoNewPrivileges":          "yes",
		"Service.ProtectSystem":            "strict",
		"Service.ProtectHome":              "yes",
		"Service.PrivateTmp":               "yes",
		"Service.DevicePolicy":             "closed",
		"Service.DeviceAllow":              "/dev/fb0 rw",
		"Service.RestrictAddressFamilies":  "AF_UNIX AF_INET AF_INET6",
		"Service.LockPersonality":          "yes",
		"Service.ProtectKernelTunables":    "yes",
		"Service.ProtectKernelModules":     "yes",
		"Service.ProtectKernelLogs":        "yes",
		"Service.RestartPreventExitStatus": "2",
		"Install.WantedBy":                 "multi-user.target",
	} {
		if vs := got[key]; len(vs) == 0 || vs[len(vs)-1] != want {
			t.Errorf("%s = %q, want %q", key, vs, want)
		}
	}
	for _, key := range []string{"Unit.StartLimitIntervalSec", "Unit.StartLimitBurst", "Service.RestartSec"} {
		if len(got[key]) == 0 {
			t.Errorf("%s missing", key)
		}
	}
	// PrivateDevices would hide /dev/fb0; ProtectClock would deny the
	// read-only adjtimex the clock check uses.
	for _, key := range []string{"Service.PrivateDevices", "Service.ProtectClock", "Service.DynamicUser"} {
		if len(got[key]) > 0 {
			t.Errorf("%s must not be set: %v", key, got[key])
		}
	}
	if !strings.Contains(strings.Join(got["Service.SystemCallFilter"], " "), "adjtimex") {
		t.Error("SystemCallFilter does not allow adjtimex (clock.sync_check = kernel)")
	}
}

// TestSysusersAndTmpfiles applies both files to an empty root and checks
// the user, its video membership, and the directory owners and modes.
func TestSysusersAndTmpfiles(t *testing.T) {
	sysusers := need(t, "systemd-sysusers")
	tmpfiles := need(t, "systemd-tmpfiles")
	if os.Geteuid() != 0 {
		t.Skip("systemd-tmpfiles needs root to chown in a test root")
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A base system: group video exists, no kioskpay user yet.
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nvideo:x:44:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("kioskpayd.sysusers")
	if out, err := exec.Command(sysusers, "--root="+root, abs).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	m := regexp.MustCompile(`(?m)^kioskpay:x:(\d+):(\d+):[^:]*:/var/lib/kioskpayd:/usr/sbin/nologin$`).FindSubmatch(passwd)
	if m == nil {
		t.Fatalf("no kioskpay system user:\n%s", passwd)
	}
	uid, _ := strconv.Atoi(string(m[1]))
	if uid == 0 || uid >= 1000 {
		t.Fatalf("uid %d is not a system uid", uid)
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !regexp.MustCompile(`(?m)^video:x:44:.*\bkioskpay\b`).Match(group) {
		t.Fatalf("kioskpay not in group video:\n%s", group)
	}

	abs, _ = filepath.Abs("kioskpayd.tmpfiles")
	if out, err := exec.Command(tmpfiles, "--create", "--root="+root, abs).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		path string
		mode os.FileMode
		uid  int
	}{
		{"etc/kioskpayd", 0o750, 0},
		{"var/lib/kioskpayd", 0o700, uid},
	} {
		fi, err := os.Stat(filepath.Join(root, tc.path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tc.mode {
			t.Errorf("%s mode %v, want %v", tc.path, fi.Mode().Perm(), tc.mode)
		}
		if got := statUID(fi); got != tc.uid {
			t.Errorf("%s owner uid %d, want %d", tc.path, got, tc.uid)
		}
	}
}
