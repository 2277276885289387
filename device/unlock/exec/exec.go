// Package exec is the unlock driver that runs a program once per paid
// order: the [unlock.exec] table of docs/contract.md §2.6.
//
//	[unlock.exec]
//	command = ["/usr/local/bin/start-service", "--bay", "2"]  # argv, no shell
//	timeout = "60s"
//
// The program gets a clean environment: PATH and the order's fields,
// KIOSKPAY_OUT_TRADE_NO, KIOSKPAY_TYPE, KIOSKPAY_TOTAL_FEE (fen),
// KIOSKPAY_PROVIDER and KIOSKPAY_CUSTOM (JSON, "{}" when absent); nothing
// of the daemon's own environment leaks into it. Exit 0 within the timeout
// means delivered; a non-zero exit, a failure to start or a signal means not
// delivered; at the timeout the program's whole process group is killed
// and the order is not delivered. Children the program leaves running after
// it exits 0 are not waited for (a start script may launch the service in
// the background); their output is no longer read after WaitDelay.
//
// An exec action cannot be measured or repeated: Resume runs it only when
// the last Progress says it never started, and otherwise returns
// unlock.ErrNotResumable so that the order goes to a human.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/device/unlock"
)

// Mode is the only mode of this driver, as written in Progress.Mode.
const Mode = "program"

// Defaults for [unlock.exec].
const (
	DefaultTimeout = 60 * time.Second
	// DefaultPath is the program's PATH.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// WaitDelay bounds how long output pipes held open by children are
	// read after the program itself exited.
	WaitDelay = time.Second
	// MaxTimeout keeps a typo from holding an order for a day.
	MaxTimeout = time.Hour
	// outputTail is how much of the program's output is kept for the log.
	outputTail = 2048
)

// Environment variable names, as docs/contract.md §2.6 gives them.
const (
	EnvOutTradeNo = "KIOSKPAY_OUT_TRADE_NO"
	EnvType       = "KIOSKPAY_TYPE"
	EnvTotalFee   = "KIOSKPAY_TOTAL_FEE"
	EnvProvider   = "KIOSKPAY_PROVIDER"
	EnvCustom     = "KIOSKPAY_CUSTOM"
)

// Config is the [unlock.exec] table.
type Config struct {
	// Command is the program and its arguments; no shell is involved.
	Command []string `toml:"command"`
	// Timeout bounds one run.
	Timeout time.Duration `toml:"timeout"`
}

// DefaultConfig returns the defaults; Command has none and must be set.
func DefaultConfig() Config { return Config{Timeout: DefaultTimeout} }

// Validate names the offending key in every problem.
func (c Config) Validate() error {
	var errs []error
	switch {
	case len(c.Command) == 0 || c.Command[0] == "":
		errs = append(errs, errors.New("unlock.exec.command: must name a program, e.g. [\"/usr/local/bin/start-service\"]"))
	case !filepath.IsAbs(c.Command[0]):
		errs = append(errs, fmt.Errorf("unlock.exec.command: the program must be an absolute path (no PATH lookup), got %q", c.Command[0]))
	}
	if c.Timeout < time.Second || c.Timeout > MaxTimeout {
		errs = append(errs, fmt.Errorf("unlock.exec.timeout: must be from 1s to %s, got %s", MaxTimeout, c.Timeout))
	}
	return errors.Join(errs...)
}

// Driver runs the configured program.
type Driver struct {
	unlock.Once
	cfg Config
	log *slog.Logger
	mu  sync.Mutex // one program at a time
}

var _ unlock.Driver = (*Driver)(nil)

// New validates cfg.
func New(cfg Config, log *slog.Logger) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, log: log.With("driver", unlock.DriverExec)}
	d.Once = unlock.NewOnce(unlock.DriverExec, Mode, d.run)
	return d, nil
}

// Env returns the program's environment for o.
func Env(o unlock.Order) []string {
	custom := string(o.Custom)
	if custom == "" {
		custom = "{}"
	}
	return []string{
		"PATH=" + DefaultPath,
		EnvOutTradeNo + "=" + o.OutTradeNo,
		EnvType + "=" + o.Type,
		EnvTotalFee + "=" + strconv.FormatInt(o.TotalFee, 10),
		EnvProvider + "=" + o.Provider,
		EnvCustom + "=" + custom,
	}
}

// run commits the start, runs the program and waits for it.
func (d *Driver) run(ctx context.Context, o unlock.Order, p unlock.Progress, report unlock.Reporter) (unlock.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	log := d.log.With("out_trade_no", o.OutTradeNo, "type", o.Type, "program", d.cfg.Command[0])

	p.Started = true
	if err := report(p); err != nil {
		p.Started = false
		return unlock.Result{Progress: p}, fmt.Errorf("unlock exec: commit start: %w", err)
	}

	cmd := osexec.Command(d.cfg.Command[0], d.cfg.Command[1:]...)
	cmd.Env = Env(o)
	cmd.Dir = "/"
	// Its own process group, so a timeout kills what it forked too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &tailBuffer{max: outputTail}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = WaitDelay

	start := time.Now()
	if err := cmd.Start(); err != nil {
		// Nothing ran: this is a definite "not delivered".
		log.Error("program did not start", "err", err)
		return unlock.Result{Outcome: unlock.NotDelivered, Reason: "program did not start: " + err.Error(), Progress: p}, nil
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	timer := time.NewTimer(d.cfg.Timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		took := time.Since(start).Round(time.Millisecond)
		var exitErr *osexec.ExitError
		switch {
		case err == nil || errors.Is(err, osexec.ErrWaitDelay):
			// ErrWaitDelay: exit 0, but a child still held the output open.
			log.Info("program delivered", "took", took)
			return unlock.Result{Outcome: unlock.Delivered, Progress: p}, nil
		case errors.As(err, &exitErr):
			reason := exitReason(exitErr)
			log.Warn("program failed: not delivered", "took", took, "status", reason, "output", out.String())
			return unlock.Result{Outcome: unlock.NotDelivered, Reason: "program " + reason, Progress: p}, nil
		default:
			log.Error("program wait failed", "err", err)
			return unlock.Result{Outcome: unlock.NotDelivered, Reason: "program: " + err.Error(), Progress: p}, nil
		}
	case <-timer.C:
		killGroup(pgid)
		<-done
		log.Warn("program timed out and was killed: not delivered", "timeout", d.cfg.Timeout, "output", out.String())
		return unlock.Result{Outcome: unlock.NotDelivered,
			Reason: fmt.Sprintf("program timed out after %s and was killed", d.cfg.Timeout), Progress: p}, nil
	case <-ctx.Done():
		// The daemon is stopping: the program may have started the service,
		// so the outcome stays open (Resume refuses; a human decides).
		killGroup(pgid)
		<-done
		log.Warn("program killed: daemon stopping", "after", time.Since(start).Round(time.Millisecond))
		return unlock.Result{Progress: p}, ctx.Err()
	}
}

func exitReason(e *osexec.ExitError) string {
	if ws, ok := e.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(e.ExitCode())
}

// killGroup kills the program and everything in its process group.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.b, []byte("?")))
}

// Doctor checks that the program exists and can be executed by this
// process.
func Doctor(cfg Config) []unlock.Check {
	name := "unlock.exec.command"
	if err := cfg.Validate(); err != nil {
		return []unlock.Check{{Name: name, Status: unlock.Fail, Detail: err.Error()}}
	}
	prog := cfg.Command[0]
	fi, err := os.Stat(prog)
	switch {
	case err != nil:
		return []unlock.Check{{Name: name, Status: unlock.Fail, Detail: err.Error()}}
	case fi.IsDir() || fi.Mode()&0o111 == 0:
		return []unlock.Check{{Name: name, Status: unlock.Fail, Detail: prog + " is not an executable file"}}
	}
	if err := syscall.Access(prog, 1 /* X_OK */); err != nil {
		return []unlock.Check{{Name: name, Status: unlock.Fail, Detail: prog + ": not executable by this user: " + err.Error()}}
	}
	return []unlock.Check{{Name: name, Status: unlock.OK, Detail: fmt.Sprintf("%s (timeout %s)", prog, cfg.Timeout)}}
}
