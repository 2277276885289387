package testrig

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Mosquitto is a private Mosquitto broker on a loopback port, with
// persistence on, so sessions and queued QoS 1 messages survive a restart
// the way they do on a production broker.
type Mosquitto struct {
	// URL is tcp://127.0.0.1:<port>.
	URL  string
	Port int

	dir, bin, conf string
	cmd            *exec.Cmd
	out            *os.File
}

// StartMosquitto starts a broker on a free port with its config,
// persistence file and log in dir; extra lines are appended to the config
// (e.g. "set_tcp_nodelay true").
func StartMosquitto(ctx context.Context, dir string, extra ...string) (*Mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			return nil, fmt.Errorf("start mosquitto: %w", err)
		}
		bin = "/usr/sbin/mosquitto"
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 1
max_queued_messages 100000
max_inflight_messages 100
log_dest file %s
log_type error
log_type warning
`, port, dir, filepath.Join(dir, "mosquitto.log"))
	if os.Geteuid() == 0 {
		// Run as root, Mosquitto would otherwise switch to its own user,
		// which cannot write into a test's temporary directory.
		conf += "user root\n"
	}
	for _, l := range extra {
		conf += l + "\n"
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	m := &Mosquitto{URL: "tcp://127.0.0.1:" + strconv.Itoa(port), Port: port, dir: dir, bin: bin, conf: path}
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Start starts the broker again after Stop, on the same port and with the
// same persistence file: a broker outage a test ends when it chooses.
func (m *Mosquitto) Start(ctx context.Context) error {
	out, err := os.OpenFile(filepath.Join(m.dir, "mosquitto.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start mosquitto: %w", err)
	}
	m.cmd, m.out = cmd, out
	if err := WaitTCP(ctx, "127.0.0.1:"+strconv.Itoa(m.Port), 10*time.Second); err != nil {
		m.Stop()
		return fmt.Errorf("start mosquitto: %w", err)
	}
	return nil
}

// Restart stops the broker gracefully (it writes its persistence file) and
// starts it again on the same port.
func (m *Mosquitto) Restart(ctx context.Context) error {
	if err := m.Stop(); err != nil {
		return err
	}
	return m.Start(ctx)
}

// Stop terminates the broker and waits for it.
func (m *Mosquitto) Stop() error {
	if m.cmd == nil || m.cmd.Process == nil {
		return nil
	}
	defer m.out.Close()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
	m.cmd.Process = nil
	return nil
}

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr returns a loopback address, 127.0.0.1:<port>, with a port
// nobody listens on right now.
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
