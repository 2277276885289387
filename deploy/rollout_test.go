package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// rolloutEnv puts stub ssh, scp and kioskctl on PATH. They log every call
// to calls.log; ssh fails the health check on hosts listed in FAIL_HOSTS,
// kioskctl fails for devices in FAIL_DEVICES.
func rolloutEnv(t *testing.T) (dir string, env []string) {
	t.Helper()
	dir = t.TempDir()
	log := filepath.Join(dir, "calls.log")
	stubs := map[string]string{
		"ssh": `#!/bin/bash
host=$1; shift
echo "ssh $host $*" >>"$LOG"
if [[ "$*" == *is-active* ]] && [[ " $FAIL_HOSTS " == *" $host "* ]]; then exit 3; fi
exit 0
`,
		"scp": `#!/bin/bash
echo "scp $*" >>"$LOG"
`,
		"kioskctl": `#!/bin/bash
echo "kioskctl $*" >>"$LOG"
dev=$3
[[ " $FAIL_DEVICES " == *" $dev "* ]] && exit 1
exit 0
`,
	}
	for name, body := range stubs {
		writeFile(t, filepath.Join(dir, "bin", name), body, 0o755)
	}
	writeFile(t, filepath.Join(dir, "kioskpay_1.1.0_arm64.deb"), "new", 0o644)
	writeFile(t, filepath.Join(dir, "kioskpay_1.0.0_arm64.deb"), "old", 0o644)
	writeFile(t, filepath.Join(dir, "hosts"), "# fleet\nh1.example.com chair-1\nh2 chair-2\nh3\n\nh4 chair-4\nh5 chair-5\n", 0o644)
	env = append(os.Environ(), "PATH="+filepath.Join(dir, "bin")+":"+os.Getenv("PATH"), "LOG="+log)
	return dir, env
}

func runRollout(t *testing.T, dir string, env []string, extra ...string) (string, []string, error) {
	t.Helper()
	args := append([]string{"rollout.sh", "--deb", filepath.Join(dir, "kioskpay_1.1.0_arm64.deb"), "--version", "1.1.0",
		"--rollback-deb", filepath.Join(dir, "kioskpay_1.0.0_arm64.deb"), "--hosts", filepath.Join(dir, "hosts"),
		"--batch", "2", "--health-timeout", "0"}, extra...)
	cmd := exec.Command("bash", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	calls, _ := os.ReadFile(filepath.Join(dir, "calls.log"))
	return string(out), strings.Split(strings.TrimSpace(string(calls)), "\n"), err
}

// installs returns the hosts that got pkg installed, in call order.
func installs(calls []string, pkg string) []string {
	var hosts []string
	for _, c := range calls {
		if strings.HasPrefix(c, "ssh ") && strings.Contains(c, "dpkg -i '/tmp/"+pkg+"'") {
			hosts = append(hosts, strings.Fields(c)[1])
		}
	}
	return hosts
}

func TestRolloutAllHealthy(t *testing.T) {
	dir, env := rolloutEnv(t)
	out, calls, err := runRollout(t, dir, env)
	if err != nil {
		t.Fatalf("rollout: %v\n%s", err, out)
	}
	if got := installs(calls, "kioskpay_1.1.0_arm64.deb"); len(got) != 5 {
		t.Fatalf("installed on %v, want all 5", got)
	}
	// Canary first, then batches of 2.
	for _, want := range []string{"batch 1: h1.example.com\n", "batch 2: h2 h3\n", "batch 3: h4 h5\n", "all 5 devices run 1.1.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Device ids from the hosts file (or the short host name) and the
	// version reach the MQTT health check.
	joined := strings.Join(calls, "\n")
	for _, want := range []string{"kioskctl status -device chair-1 -want-version 1.1.0", "kioskctl status -device h3 -want-version 1.1.0"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no %q in calls:\n%s", want, joined)
		}
	}
	if got := installs(calls, "kioskpay_1.0.0_arm64.deb"); len(got) != 0 {
		t.Errorf("rolled back %v on a healthy rollout", got)
	}
}

func TestRolloutStopsAndRollsBackBatch(t *testing.T) {
	for _, tc := range []struct{ name, envVar string }{
		{"unit not active", "FAIL_HOSTS=h4"},
		{"device not reporting the new version", "FAIL_DEVICES=chair-4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, env := rolloutEnv(t)
			out, calls, err := runRollout(t, dir, append(env, tc.envVar))
			if err == nil {
				t.Fatalf("rollout succeeded with a failing device:\n%s", out)
			}
			upgraded := installs(calls, "kioskpay_1.1.0_arm64.deb")
			if len(upgraded) != 5 {
				t.Fatalf("upgraded %v", upgraded)
			}
			rolled := installs(calls, "kioskpay_1.0.0_arm64.deb")
			if strings.Join(rolled, " ") != "h4 h5" {
				t.Fatalf("rolled back %v, want the failed batch h4 h5", rolled)
			}
			// The store goes back to the old schema before the old
			// package is installed.
			for _, h := range rolled {
				down, inst := -1, -1
				for i, c := range calls {
					switch {
					case strings.HasPrefix(c, "ssh "+h+" ") && strings.Contains(c, "compact -config /etc/kioskpayd/kioskpayd.toml -schema 1"):
						down = i
					case strings.HasPrefix(c, "ssh "+h+" ") && strings.Contains(c, "dpkg -i '/tmp/kioskpay_1.0.0_arm64.deb'"):
						inst = i
					}
				}
				if down < 0 || down > inst {
					t.Errorf("%s: store not written back to schema 1 before the rollback (calls %d, %d)", h, down, inst)
				}
			}
			for _, want := range []string{"batch 3 FAILED: h4 (health)", "stopped after 3 of 5"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestRolloutCanaryFailureTouchesNothingElse(t *testing.T) {
	dir, env := rolloutEnv(t)
	out, calls, err := runRollout(t, dir, append(env, "FAIL_HOSTS=h1.example.com"))
	if err == nil {
		t.Fatalf("succeeded:\n%s", out)
	}
	if got := installs(calls, "kioskpay_1.1.0_arm64.deb"); strings.Join(got, " ") != "h1.example.com" {
		t.Fatalf("upgraded %v, want only the canary", got)
	}
	if got := installs(calls, "kioskpay_1.0.0_arm64.deb"); strings.Join(got, " ") != "h1.example.com" {
		t.Fatalf("rolled back %v", got)
	}
	if !strings.Contains(out, "not touched: h2 h3 h4 h5") {
		t.Errorf("output:\n%s", out)
	}
}

func TestRolloutDryRunAndUsage(t *testing.T) {
	dir, env := rolloutEnv(t)
	out, calls, err := runRollout(t, dir, env, "--dry-run")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if len(calls) != 1 || calls[0] != "" {
		t.Fatalf("dry run made calls: %v", calls)
	}
	if !strings.Contains(out, "+ scp") || !strings.Contains(out, "dpkg -i") {
		t.Fatalf("dry run output:\n%s", out)
	}
	cmd := exec.Command("bash", "rollout.sh", "--version", "1")
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "--deb FILE is required") {
		t.Fatalf("missing --deb: %v %s", err, b)
	}
}
