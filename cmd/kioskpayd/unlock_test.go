package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withUnlock appends an [unlock] driver section to e's config.
func (e *env) withUnlock(t *testing.T, section string) {
	t.Helper()
	f, err := os.OpenFile(e.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + section); err != nil {
		t.Fatal(err)
	}
}

func TestUnitDropIn(t *testing.T) {
	e := newEnv(t)
	e.withUnlock(t, "[unlock]\ndriver = \"gpio\"\n[unlock.gpio]\nchip = \"gpiochip3\"\noutput = 4\n[unlock.gpio.relay.durations]\nmassage_15 = \"15m\"\n")
	code, out := runCmd(t, "unit-dropin", "-config", e.path)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"[Service]\n", "DeviceAllow=/dev/gpiochip3 rw\n", "ExecStopPost=/usr/bin/kioskpayd unlock-safe -config " + e.path + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("drop-in lacks %q:\n%s", want, out)
		}
	}
}

func TestUnlockSafe(t *testing.T) {
	e := newEnv(t)
	if code, out := runCmd(t, "unlock-safe", "-config", e.path); code != 0 || !strings.Contains(out, "no outputs") {
		t.Fatalf("mqtt: exit %d %q", code, out)
	}
	// A broken key elsewhere does not keep the outputs from going safe;
	// a missing chip is an error.
	e.withUnlock(t, "[unlock]\ndriver = \"gpio\"\n[unlock.gpio]\nchip = \"/nonexistent/gpiochip9\"\noutput = 4\n[unlock.gpio.relay.durations]\nmassage_15 = \"15m\"\n")
	code, errOut := runCmd(t, "unlock-safe", "-config", e.path)
	if code != exitFatal || !strings.Contains(errOut, "unlock.gpio.output") {
		t.Fatalf("missing chip: exit %d %q", code, errOut)
	}
	bad := newEnv(t)
	bad.withUnlock(t, "[unlock]\ndriver = \"gpio\"\n")
	if code, errOut := runCmd(t, "unlock-safe", "-config", bad.path); code != exitBadConfig || !strings.Contains(errOut, "unlock.gpio.relay.durations") {
		t.Fatalf("bad config: exit %d %q", code, errOut)
	}
}

func TestDoctorUnlock(t *testing.T) {
	e := newEnv(t)
	prog := filepath.Join(t.TempDir(), "start")
	e.withUnlock(t, "[unlock]\ndriver = \"exec\"\n[unlock.exec]\ncommand = [\""+prog+"\"]\n")
	_, out := doctor(t, e)
	if l := lineFor(out, "unlock.exec.command"); !strings.HasPrefix(l, "FAIL") {
		t.Fatalf("missing program: %q", l)
	}
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out := doctor(t, e)
	if l := lineFor(out, "unlock.exec.command"); code != 0 || !strings.HasPrefix(l, "ok") {
		t.Fatalf("exit %d, line %q", code, l)
	}
}
