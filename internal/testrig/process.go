package testrig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvDaemonBin names a prebuilt kioskpayd to use instead of building one.
const EnvDaemonBin = "KIOSKPAY_DAEMON_BIN"

// ModuleRoot returns the directory of the kioskpay module (go env GOMOD).
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("module root: not inside the kioskpay module")
	}
	return filepath.Dir(mod), nil
}

// Build compiles the main package pkg (e.g. "./cmd/kioskpayd") of the
// module into the binary out. env is added to the environment (e.g.
// GOARCH=arm64).
func Build(ctx context.Context, pkg, out string, env ...string) error {
	return goBuild(ctx, out, []string{pkg}, env)
}

// BuildAll compiles several main packages of the module into dir, each
// binary named after its package's directory, in one go build: a suite
// that runs many programs loads the module once.
func BuildAll(ctx context.Context, dir string, pkgs []string, env ...string) error {
	// A trailing separator makes go build write every binary into dir.
	return goBuild(ctx, filepath.Clean(dir)+string(filepath.Separator), pkgs, env)
}

func goBuild(ctx context.Context, out string, pkgs, env []string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-trimpath", "-o", out}, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, b)
	}
	return nil
}

// DaemonBinary returns $KIOSKPAY_DAEMON_BIN, or builds kioskpayd into dir.
func DaemonBinary(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv(EnvDaemonBin); p != "" {
		return p, nil
	}
	out := filepath.Join(dir, "kioskpayd")
	if err := Build(ctx, "./cmd/kioskpayd", out, "CGO_ENABLED=0"); err != nil {
		return "", err
	}
	return out, nil
}

// Daemon is one subprocess under test (kioskpayd, paygate, notifyrelay),
// restartable: each Start runs the same binary with the same arguments,
// appending to the same log.
type Daemon struct {
	Bin    string
	Config string
	// Args are the command-line arguments; NewDaemon sets "-config" Config.
	Args []string
	Log  string // stderr and stdout of every run
	// Env is added to the environment of every run (e.g. the daemon's
	// test switches).
	Env []string
	// Stdin, when set, is every run's standard input (nil: none). Stdout,
	// when set, receives every run's standard output instead of Log: for a
	// program that prints for people on stdout and logs on stderr.
	Stdin  io.Reader
	Stdout io.Writer

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	state   *os.ProcessState
	killed  bool
	starts  int
	crashes []string // unexpected exits
	from    int64    // the log's size when the current run started
}

// NewDaemon describes a daemon; it does not start it.
func NewDaemon(bin, config, log string) *Daemon {
	return &Daemon{Bin: bin, Config: config, Args: []string{"-config", config}, Log: log}
}

// Start runs the daemon.
func (d *Daemon) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return errors.New("daemon already running")
	}
	out, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	fmt.Fprintf(out, "=== start %d at %s\n", d.starts+1, time.Now().Format(time.RFC3339Nano))
	if fi, err := out.Stat(); err == nil {
		d.from = fi.Size()
	}
	cmd := exec.Command(d.Bin, d.Args...)
	cmd.Env = append(os.Environ(), d.Env...)
	cmd.Stdout, cmd.Stderr = out, out
	if d.Stdout != nil {
		cmd.Stdout = d.Stdout
	}
	cmd.Stdin = d.Stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start daemon: %w", err)
	}
	d.starts++
	d.cmd, d.killed = cmd, false
	done := make(chan struct{})
	d.done = done
	go func() {
		err := cmd.Wait()
		out.Close()
		d.mu.Lock()
		defer d.mu.Unlock()
		d.state = cmd.ProcessState
		if !d.killed {
			d.crashes = append(d.crashes, fmt.Sprintf("run %d exited on its own: %v", d.starts, err))
		}
		if d.cmd == cmd {
			d.cmd = nil
		}
		close(done)
	}()
	return nil
}

// StartReady starts the process and waits until the log of this run
// contains ready (e.g. `"kioskpayd ready"`), the process exits, or ctx
// ends.
func (d *Daemon) StartReady(ctx context.Context, ready string) error {
	if err := d.Start(); err != nil {
		return err
	}
	return d.WaitLog(ctx, ready)
}

// WaitLog waits until the log of the current run contains s. It fails when
// the run ends first or ctx ends, quoting the run's log.
func (d *Daemon) WaitLog(ctx context.Context, s string) error {
	d.mu.Lock()
	from, done := d.from, d.done
	d.mu.Unlock()
	// The log is a file another process writes: there is nothing to wait
	// on but its contents, so look every few milliseconds.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		run := d.RunLog(from)
		if strings.Contains(run, s) {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before %q:\n%s", filepath.Base(d.Bin), s, d.RunLog(from))
		case <-ctx.Done():
			return fmt.Errorf("%s: no %q: %w\n%s", filepath.Base(d.Bin), s, ctx.Err(), run)
		case <-tick.C:
		}
	}
}

// RunLog returns the log from byte offset from on ("" when unreadable).
func (d *Daemon) RunLog(from int64) string {
	b, err := os.ReadFile(d.Log)
	if err != nil || int64(len(b)) < from {
		return ""
	}
	return string(b[from:])
}

// LogText returns the whole log, every run.
func (d *Daemon) LogText() string { return d.RunLog(0) }

// PID is the running daemon's process id, 0 when it is not running.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Running reports whether the process is alive.
func (d *Daemon) Running() bool { return d.PID() != 0 }

// Starts is how often the daemon was started.
func (d *Daemon) Starts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.starts
}

// Crashes lists runs that ended without Kill or Stop.
func (d *Daemon) Crashes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.crashes...)
}

// Kill sends SIGKILL (a power cut, as far as the process can tell) and
// waits until it is gone.
func (d *Daemon) Kill() error { return d.signal(syscall.SIGKILL, 10*time.Second) }

// Abort does what systemd does when the watchdog fires: SIGABRT (the
// default WatchdogSignal=) followed by SIGCONT, so that a stopped process
// receives it, and SIGKILL after timeout (TimeoutAbortSec=). It returns how
// the process ended.
func (d *Daemon) Abort(timeout time.Duration) (*os.ProcessState, error) {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	if cmd == nil {
		d.mu.Unlock()
		return nil, errors.New("daemon not running")
	}
	d.killed = true
	d.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGABRT)
	_ = cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state, nil
}

// Freeze stops the process (SIGSTOP), as an overloaded board, a long GC or
// an I/O stall does; Thaw lets it go on (SIGCONT).
func (d *Daemon) Freeze() error { return d.send(syscall.SIGSTOP) }

// Thaw continues a frozen process.
func (d *Daemon) Thaw() error { return d.send(syscall.SIGCONT) }

// send delivers sig without waiting for anything.
func (d *Daemon) send(sig syscall.Signal) error {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil {
		return errors.New("daemon not running")
	}
	return cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits up to timeout; it returns the exit code.
func (d *Daemon) Stop(timeout time.Duration) (int, error) {
	return d.Signal(syscall.SIGTERM, timeout)
}

// Signal sends sig, an end the test expects (not a crash), and waits up to
// timeout for the process to exit; it returns the exit code (-1 when the
// signal killed it).
func (d *Daemon) Signal(sig syscall.Signal, timeout time.Duration) (int, error) {
	if err := d.signal(sig, timeout); err != nil {
		return -1, err
	}
	return d.exitCode(), nil
}

// Wait waits until the current run ends by itself, or ctx ends, and
// returns its exit code. Such an end is also listed in Crashes.
func (d *Daemon) Wait(ctx context.Context) (int, error) {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	if done == nil {
		return -1, errors.New("daemon never started")
	}
	select {
	case <-done:
		return d.exitCode(), nil
	case <-ctx.Done():
		return -1, fmt.Errorf("%s still running: %w", filepath.Base(d.Bin), ctx.Err())
	}
}

func (d *Daemon) exitCode() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == nil {
		return -1
	}
	return d.state.ExitCode()
}

func (d *Daemon) signal(sig syscall.Signal, timeout time.Duration) error {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	if cmd == nil {
		d.mu.Unlock()
		return nil
	}
	d.killed = true
	d.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("daemon did not exit within %s of %v", timeout, sig)
	}
}

// Memory returns the resident set size now and its peak (VmHWM), in bytes.
func Memory(pid int) (rss, peak int64, err error) {
	st, err := procStatus(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return st["VmRSS"] << 10, st["VmHWM"] << 10, nil
}

// MemoryBreakdown splits the resident set into anonymous memory (heap,
// stacks: what the process itself holds) and file-backed pages (the
// binary's text and the mmapped bbolt file, which the kernel can drop and
// share), in bytes.
func MemoryBreakdown(pid int) (anon, file int64, err error) {
	st, err := procStatus(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return st["RssAnon"] << 10, (st["RssFile"] + st["RssShmem"]) << 10, nil
}

// ContextSwitches sums the voluntary and involuntary context switches of
// every thread of pid: each is one time a thread went to sleep or was
// preempted, so the rate while idle counts wake-ups.
func ContextSwitches(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		st, err := procStatus(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		total += st["voluntary_ctxt_switches"] + st["nonvoluntary_ctxt_switches"]
	}
	return total, nil
}

// procStatus reads a /proc status file: the number each "Name: N [kB]" line
// starts with, by name (kB not converted). Lines without a number are left
// out.
func procStatus(path string) (map[string]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			st[name] = n
		}
	}
	return st, nil
}
