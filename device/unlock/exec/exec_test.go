package exec

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/device/unlock"
)

var order = unlock.Order{
	OutTradeNo: "chair001_0001", Type: "massage_15", TotalFee: 1000, Provider: "wxpay",
	Custom: []byte(`{"seat":3,"note":"a b"}`),
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// script writes an executable shell script; the driver runs it directly
// (its #! line), never through a shell of its own.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, cfg Config, ctx context.Context) (unlock.Result, []unlock.Progress, error) {
	t.Helper()
	d, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.Plan(order)
	if err != nil {
		t.Fatal(err)
	}
	var reports []unlock.Progress
	res, err := d.Run(ctx, order, p, func(p unlock.Progress) error { reports = append(reports, p); return nil })
	return res, reports, err
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       unlock.Outcome
		reason     string
	}{
		{"exit 0", "exit 0", unlock.Delivered, ""},
		{"exit 1", "exit 1", unlock.NotDelivered, "program exit status 1"},
		{"exit 42", "echo jammed >&2; exit 42", unlock.NotDelivered, "program exit status 42"},
		{"signal", "kill -TERM $$", unlock.NotDelivered, "program killed by signal terminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, reports, err := run(t, Config{Command: []string{script(t, tc.body)}, Timeout: 10 * time.Second}, context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != tc.want || res.Reason != tc.reason {
				t.Errorf("got %s %q, want %s %q", res.Outcome, res.Reason, tc.want, tc.reason)
			}
			// The start is committed before the program runs, once.
			if len(reports) != 1 || !reports[0].Started {
				t.Errorf("reports %+v, want one with started", reports)
			}
		})
	}
}

func TestArgvNoShell(t *testing.T) {
	prog := script(t, `for a in "$@"; do printf '%s\n' "$a"; done > "$0.args"`)
	args := []string{"two words", "$HOME", "; rm -rf /", "*"}
	res, _, err := run(t, Config{Command: append([]string{prog}, args...), Timeout: 10 * time.Second}, context.Background())
	if err != nil || res.Outcome != unlock.Delivered {
		t.Fatalf("%v %+v", err, res)
	}
	b, err := os.ReadFile(prog + ".args")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); strings.Join(got, "|") != strings.Join(args, "|") {
		t.Errorf("program saw %q, want %q verbatim", got, args)
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("KIOSKPAY_SECRET_TEST", "must-not-leak")
	prog := script(t, `env > "$0.env"`)
	res, _, err := run(t, Config{Command: []string{prog}, Timeout: 10 * time.Second}, context.Background())
	if err != nil || res.Outcome != unlock.Delivered {
		t.Fatalf("%v %+v", err, res)
	}
	b, err := os.ReadFile(prog + ".env")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	want := map[string]string{
		"KIOSKPAY_OUT_TRADE_NO": "chair001_0001",
		"KIOSKPAY_TYPE":         "massage_15",
		"KIOSKPAY_TOTAL_FEE":    "1000",
		"KIOSKPAY_PROVIDER":     "wxpay",
		"KIOSKPAY_CUSTOM":       `{"seat":3,"note":"a b"}`,
		"PATH":                  DefaultPath,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["KIOSKPAY_SECRET_TEST"]; ok {
		t.Error("the daemon's environment leaked into the program")
	}
}

func TestCustomAbsent(t *testing.T) {
	o := order
	o.Custom = nil
	for _, kv := range Env(o) {
		if kv == EnvCustom+"={}" {
			return
		}
	}
	t.Errorf("Env without custom = %q, want %s={}", Env(o), EnvCustom)
}

// gone reports whether pid has exited (gone, or a zombie waiting for a
// parent that is not us).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond) // polling another process's state
	}
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	// The program forks a child that would outlive it, then hangs.
	prog := script(t, `sleep 300 & echo $! > "$0.child"; echo $$ > "$0.pid"; wait`)
	start := time.Now()
	res, _, err := run(t, Config{Command: []string{prog}, Timeout: time.Second}, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != unlock.NotDelivered || !strings.Contains(res.Reason, "timed out after 1s") {
		t.Errorf("got %s %q, want not delivered on timeout", res.Outcome, res.Reason)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s for a 1s timeout", took)
	}
	waitGone(t, readPID(t, prog+".pid"))
	waitGone(t, readPID(t, prog+".child"))
}

func TestBackgroundChildAfterExit0(t *testing.T) {
	// A start script that launches the service in the background and exits
	// 0 is delivered; the child keeps stdout open, which must not hold the
	// order for the whole timeout.
	prog := script(t, `sleep 30 & echo $! > "$0.child"; exit 0`)
	start := time.Now()
	res, _, err := run(t, Config{Command: []string{prog}, Timeout: 20 * time.Second}, context.Background())
	if err != nil || res.Outcome != unlock.Delivered {
		t.Fatalf("%v %+v, want delivered", err, res)
	}
	if took := time.Since(start); took > WaitDelay+3*time.Second {
		t.Errorf("took %s; the background child held the order", took)
	}
	child := readPID(t, prog+".child")
	if gone(child) {
		t.Error("the background child was killed after a successful exit")
	}
	syscall.Kill(child, syscall.SIGKILL)
}

func TestStartFailure(t *testing.T) {
	res, reports, err := run(t, Config{Command: []string{"/nonexistent/prog"}, Timeout: time.Second}, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != unlock.NotDelivered || !strings.Contains(res.Reason, "did not start") {
		t.Errorf("got %+v", res)
	}
	if len(reports) != 1 {
		t.Errorf("reports %d, want the start committed before trying", len(reports))
	}
}

func TestStopLeavesOutcomeOpen(t *testing.T) {
	prog := script(t, `echo $$ > "$0.pid"; exec sleep 300`)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	var res unlock.Result
	go func() {
		var err error
		res, _, err = run(t, Config{Command: []string{prog}, Timeout: time.Minute}, ctx)
		errc <- err
	}()
	// The pid file appears once the program runs.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(prog + ".pid"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("program never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) || res.Outcome != 0 || !res.Progress.Started {
		t.Fatalf("err %v result %+v, want context.Canceled, no outcome, started", err, res)
	}
	waitGone(t, readPID(t, prog+".pid"))

	// After the restart the engine resumes it: refused, a human decides.
	d, _ := New(Config{Command: []string{prog}, Timeout: time.Minute}, quiet())
	if _, err := d.Resume(context.Background(), order, res.Progress, func(unlock.Progress) error { return nil }); !errors.Is(err, unlock.ErrNotResumable) {
		t.Errorf("Resume of a started program: %v, want ErrNotResumable", err)
	}
}

func TestResumeNeverStarted(t *testing.T) {
	prog := script(t, `exit 0`)
	d, _ := New(Config{Command: []string{prog}, Timeout: 10 * time.Second}, quiet())
	plan, _ := d.Plan(order)
	res, err := d.Resume(context.Background(), order, plan, func(unlock.Progress) error { return nil })
	if err != nil || res.Outcome != unlock.Delivered {
		t.Errorf("Resume of a never-started plan: %v %+v, want it run and delivered", err, res)
	}
	if _, err := d.Resume(context.Background(), order, unlock.Progress{Driver: "gpio", Mode: "relay"}, nil); !errors.Is(err, unlock.ErrProgress) {
		t.Errorf("Resume of a gpio progress: %v, want ErrProgress", err)
	}
}

func TestReporterFailureRunsNothing(t *testing.T) {
	prog := script(t, `touch "$0.ran"`)
	d, _ := New(Config{Command: []string{prog}, Timeout: 10 * time.Second}, quiet())
	plan, _ := d.Plan(order)
	boom := errors.New("store full")
	res, err := d.Run(context.Background(), order, plan, func(unlock.Progress) error { return boom })
	if !errors.Is(err, boom) || res.Progress.Started {
		t.Errorf("err %v progress %+v, want the store error and not started", err, res.Progress)
	}
	if _, err := os.Stat(prog + ".ran"); err == nil {
		t.Error("the program ran although its start was not committed")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Timeout: time.Second}, "unlock.exec.command"},
		{Config{Command: []string{"start-service"}, Timeout: time.Second}, "unlock.exec.command: the program must be an absolute path"},
		{Config{Command: []string{"/bin/true"}}, "unlock.exec.timeout"},
		{Config{Command: []string{"/bin/true"}, Timeout: 2 * time.Hour}, "unlock.exec.timeout"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	c := DefaultConfig()
	c.Command = []string{"/bin/true"}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults with a command: %v", err)
	}
}

func TestDoctor(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "data")
	os.WriteFile(notExec, []byte("x"), 0o644)
	for _, tc := range []struct {
		prog string
		want unlock.Status
	}{
		{script(t, "exit 0"), unlock.OK},
		{filepath.Join(dir, "missing"), unlock.Fail},
		{notExec, unlock.Fail},
		{dir, unlock.Fail},
	} {
		got := Doctor(Config{Command: []string{tc.prog}, Timeout: time.Second})
		if len(got) != 1 || got[0].Status != tc.want || got[0].Name != "unlock.exec.command" {
			t.Errorf("Doctor(%s) = %+v, want %s", tc.prog, got, tc.want)
		}
	}
}
