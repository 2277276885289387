// Package qemuvm boots a Debian arm64 kernel under qemu-system-aarch64 (TCG,
// no KVM needed) with a one-file initramfs, so that tests can run a Go test
// binary against a real kernel's devices and watch the emulated hardware
// from outside through qemu's trace events.
//
// The machine is qemu's "virt" board. Its PL061 GPIO controller (eight
// lines at 0x09030000) appears in the guest as /dev/gpiochip0 through the
// kernel's gpio-pl061 driver; line 3 is wired to qemu's power button, so a
// QMP "system_powerdown" holds that input high for 100 ms: a real input
// edge the host can cause. The Debian cloud-arm64 kernel has no gpio-keys
// driver, so nothing in the guest claims line 3.
//
// Nothing here is committed from a kernel: `go run ./internal/qemuvm/fetchkernel`
// downloads the kernel package with apt and extracts its image to Kernel's
// default path.
package qemuvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// QEMU is the emulator binary (Debian package qemu-system-arm).
const QEMU = "qemu-system-aarch64"

// KernelEnv overrides the kernel image's path.
const KernelEnv = "KIOSKPAY_QEMU_KERNEL"

// DefaultKernelPath is where fetchkernel puts the kernel image:
// <user cache dir>/kioskpay/qemu/vmlinuz-arm64.
func DefaultKernelPath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "kioskpay", "qemu", "vmlinuz-arm64"), nil
}

// Kernel returns the kernel image to boot, or an error that says how to get
// one.
func Kernel() (string, error) {
	path := os.Getenv(KernelEnv)
	if path == "" {
		p, err := DefaultKernelPath()
		if err != nil {
			return "", err
		}
		path = p
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no arm64 kernel image at %s (run `go run ./internal/qemuvm/fetchkernel`, or set %s): %w", path, KernelEnv, err)
	}
	return path, nil
}

// Available reports why a VM cannot be booted here, or nil.
func Available() error {
	if _, err := exec.LookPath(QEMU); err != nil {
		return fmt.Errorf("%s not found (apt-get install qemu-system-arm): %w", QEMU, err)
	}
	_, err := Kernel()
	return err
}

// WriteInitramfs writes an uncompressed initramfs (cpio "newc") holding
// executables at its root, by name; one must be "init".
func WriteInitramfs(w io.Writer, files map[string][]byte) error {
	if _, ok := files["init"]; !ok {
		return errors.New("initramfs without init")
	}
	var buf bytes.Buffer
	entry := func(ino int, name string, mode uint32, data []byte) {
		// newc header: magic and 13 eight-digit hex fields.
		fmt.Fprintf(&buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		buf.WriteString(name)
		buf.WriteByte(0)
		pad4(&buf)
		buf.Write(data)
		pad4(&buf)
	}
	for i, name := range slices.Sorted(maps.Keys(files)) {
		entry(i+1, name, 0o100755, files[name])
	}
	entry(len(files)+1, "TRAILER!!!", 0, nil)
	_, err := w.Write(buf.Bytes())
	return err
}

func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// Options describe one boot.
type Options struct {
	Kernel string
	Initrd string
	// Append is added to the kernel command line after the console and
	// init settings: KEY=value words become /init's environment, words
	// after "--" its arguments.
	Append string
	// Trace is a qemu trace-event pattern such as "pl061_*"; events go to
	// Dir/trace.log with host wall-clock timestamps.
	Trace string
	// Dir holds the console log, the trace and the QMP socket.
	Dir string
	// Memory in MiB (default 256).
	Memory int
}

// VM is a running qemu.
type VM struct {
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	Console string // path of the guest's serial console output
	Trace   string // path of the trace log
	qmp     string
}

// Start boots the VM. The guest powers itself off when /init is done; ctx
// bounds the whole run.
func Start(ctx context.Context, o Options) (*VM, error) {
	if o.Memory == 0 {
		o.Memory = 256
	}
	vm := &VM{
		done:    make(chan struct{}),
		Console: filepath.Join(o.Dir, "console.log"),
		Trace:   filepath.Join(o.Dir, "trace.log"),
		qmp:     filepath.Join(o.Dir, "qmp.sock"),
	}
	console, err := os.Create(vm.Console)
	if err != nil {
		return nil, err
	}
	args := []string{
		"-machine", "virt", "-cpu", "cortex-a57", "-m", strconv.Itoa(o.Memory),
		"-nographic", "-nic", "none", "-no-reboot",
		"-msg", "timestamp=on",
		"-kernel", o.Kernel, "-initrd", o.Initrd,
		"-append", "console=ttyAMA0 rdinit=/init panic=-1 " + o.Append,
		"-qmp", "unix:" + vm.qmp + ",server=on,wait=off",
	}
	if o.Trace != "" {
		args = append(args, "-trace", "enable="+o.Trace+",file="+vm.Trace)
	}
	vm.cmd = exec.CommandContext(ctx, QEMU, args...)
	vm.cmd.Stdout = console
	vm.cmd.Stderr = console
	vm.cmd.Stdin = nil
	if err := vm.cmd.Start(); err != nil {
		console.Close()
		return nil, err
	}
	go func() {
		vm.err = vm.cmd.Wait()
		console.Close()
		close(vm.done)
	}()
	return vm, nil
}

// Done is closed when qemu has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Wait waits for qemu to exit.
func (vm *VM) Wait() error {
	<-vm.done
	return vm.err
}

// QMP runs one QMP command (such as "system_powerdown") and returns its
// "return" value.
func (vm *VM) QMP(ctx context.Context, command string) (json.RawMessage, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", vm.qmp)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	r := bufio.NewReader(c)
	// The greeting, then capabilities negotiation, then the command.
	if _, err := r.ReadBytes('\n'); err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(c, "{\"execute\":%q}\n", cmd); err != nil {
			return nil, err
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return nil, fmt.Errorf("qmp %s: %w", cmd, err)
			}
			var m struct {
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Desc string `json:"desc"`
				} `json:"error"`
			}
			if err := json.Unmarshal(line, &m); err != nil {
				return nil, fmt.Errorf("qmp %s: %w", cmd, err)
			}
			if m.Error != nil {
				return nil, fmt.Errorf("qmp %s: %s", cmd, m.Error.Desc)
			}
			if m.Return != nil {
				if cmd == command {
					return m.Return, nil
				}
				break
			}
			// An asynchronous event: keep reading.
		}
	}
	return nil, errors.New("unreachable")
}

// Event is one trace event.
type Event struct {
	At   time.Time
	Name string
	Args string
}

var eventRe = regexp.MustCompile(`^\d+@(\d+)\.(\d{6}):(\w+) (.*)$`)

// ParseTrace reads qemu's log-backend trace lines ("pid@sec.usec:name args").
// Other lines are skipped.
func ParseTrace(r io.Reader) ([]Event, error) {
	var events []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := eventRe.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt(m[2], 10, 64)
		events = append(events, Event{At: time.Unix(sec, usec*1000), Name: m[3], Args: strings.TrimSpace(m[4])})
	}
	return events, sc.Err()
}

// GuestGoEnv is the environment that cross-compiles a Go binary for the
// guest: static, linux/arm64.
var GuestGoEnv = []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"}

// CompileTest cross-compiles the test binary of package pkg (such as ".")
// for the guest into out.
func CompileTest(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", out, pkg)
	cmd.Env = append(os.Environ(), GuestGoEnv...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cross-compile the guest: %w\n%s", err, b)
	}
	return nil
}

// Initramfs writes dir/initrd.cpio holding the binaries at paths, by their
// name in the guest's root ("init" is the one the kernel runs), and
// returns its path.
func Initramfs(dir string, paths map[string]string) (string, error) {
	files := map[string][]byte{}
	for name, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		files[name] = b
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		return "", err
	}
	if err := WriteInitramfs(f, files); err != nil {
		f.Close()
		return "", err
	}
	return initrd, f.Close()
}

// IsInit reports whether this process is the guest's /init.
func IsInit() bool { return os.Getpid() == 1 }

// HostKernel is the start of a host-side test: it skips inside the guest
// (IsInit), under -short (long says what the test does instead), and
// without qemu or the kernel; otherwise it returns the kernel's path.
func HostKernel(t testing.TB, long string) string {
	t.Helper()
	if IsInit() {
		t.Skip("inside the guest")
	}
	if testing.Short() {
		t.Skip(long + "; run without -short")
	}
	if err := Available(); err != nil {
		t.Skip(err)
	}
	kernel, _ := Kernel()
	return kernel
}

// Events parses the trace qemu wrote (see Options.Trace).
func (vm *VM) Events() ([]Event, error) {
	f, err := os.Open(vm.Trace)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseTrace(f)
}
