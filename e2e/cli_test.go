package e2e

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEveryProgramHelpAndVersion runs each built program as a person
// would: -h prints a one-line description, the usage and the exit codes
// on stdout and exits 0; -version prints "<name> <version>" on stdout and
// exits 0; a stray word is refused on stderr with exit 2 before anything
// starts.
func TestEveryProgramHelpAndVersion(t *testing.T) {
	run := func(name string, args ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(binDir, name), args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return stdout.String(), stderr.String(), code
	}
	for _, tc := range []struct {
		name  string
		help  []string // the -h command line
		stray []string // a command line with a stray word
	}{
		{"kioskpayd", []string{"-h"}, []string{"run"}},
		{"kioskpayd", []string{"doctor", "-h"}, []string{"doctor", "-config", "x.toml", "now"}},
		{"kioskctl", []string{"-h"}, []string{"status", "all"}},
		{"kioskctl", []string{"pay", "-h"}, []string{"pay", "now"}},
		{"notifyrelay", []string{"-h"}, []string{"serve"}},
		{"paysim", []string{"-h"}, []string{"-keys", "x", "serve"}},
		{"kioskbench", []string{"-h"}, []string{"help"}},
		{"fleetsim", []string{"-h"}, []string{"start"}},
		{"paygate", []string{"-h"}, []string{"-config", "x.toml", "serve"}},
	} {
		t.Run(strings.Join(append([]string{tc.name}, tc.help...), " "), func(t *testing.T) {
			out, errs, code := run(tc.name, tc.help...)
			first, _, _ := strings.Cut(out, "\n")
			if code != 0 || errs != "" {
				t.Errorf("-h: exit %d, stderr %q", code, errs)
			}
			if first == "" || strings.HasPrefix(strings.ToLower(first), "usage") {
				t.Errorf("-h does not start with a description: %q", first)
			}
			if !strings.Contains(out, "Usage") || !strings.Contains(out, "Exit codes:") {
				t.Errorf("-h lacks the usage or the exit codes:\n%s", out)
			}
			out, errs, code = run(tc.name, tc.stray...)
			if code != 2 || out != "" || errs == "" {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 with the reason on stderr", tc.stray, code, out, errs)
			}
		})
	}
	for _, name := range []string{"kioskpayd", "kioskctl", "notifyrelay", "paysim", "kioskbench", "fleetsim", "paygate"} {
		out, errs, code := run(name, "-version")
		if code != 0 || errs != "" || !regexp.MustCompile(`^`+name+` \S+\n$`).MatchString(out) {
			t.Errorf("%s -version: exit %d, stdout %q, stderr %q", name, code, out, errs)
		}
	}
}
