package proof

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
)

// Unit is what a Supervisor takes from a systemd unit file: the watchdog,
// the restart policy and the environment.
type Unit struct {
	WatchdogSec     time.Duration
	RestartSec      time.Duration
	TimeoutAbortSec time.Duration
	// PreventExit are the exit codes after which systemd does not restart
	// (RestartPreventExitStatus=).
	PreventExit []int
	Env         []string
}

// ReadUnit reads the [Service] settings a Supervisor follows from a unit
// file (systemd/kioskpayd.service).
func ReadUnit(path string) (Unit, error) {
	f, err := os.Open(path)
	if err != nil {
		return Unit{}, err
	}
	defer f.Close()
	u := Unit{RestartSec: 100 * time.Millisecond, TimeoutAbortSec: 90 * time.Second}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		switch key {
		case "WatchdogSec", "RestartSec", "TimeoutStopSec", "TimeoutAbortSec":
			d, err := time.ParseDuration(val)
			if err != nil {
				return u, fmt.Errorf("%s: %s=%s: %w", path, key, val, err)
			}
			switch key {
			case "WatchdogSec":
				u.WatchdogSec = d
			case "RestartSec":
				u.RestartSec = d
			default: // TimeoutAbortSec= defaults to TimeoutStopSec=
				u.TimeoutAbortSec = d
			}
		case "RestartPreventExitStatus":
			for _, f := range strings.Fields(val) {
				n, err := strconv.Atoi(f)
				if err != nil {
					return u, fmt.Errorf("%s: %s=%s: only numeric exit codes are supported here", path, key, val)
				}
				u.PreventExit = append(u.PreventExit, n)
			}
		case "Environment":
			u.Env = append(u.Env, strings.Fields(val)...)
		}
	}
	return u, sc.Err()
}

// ShippedUnit reads the repository's systemd/kioskpayd.service.
func ShippedUnit() (Unit, error) {
	root, err := moduleRootFromWD()
	if err != nil {
		return Unit{}, err
	}
	return ReadUnit(filepath.Join(root, "systemd", "kioskpayd.service"))
}

func moduleRootFromWD() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}

// Supervisor plays systemd for one daemon under Type=notify, WatchdogSec=
// and Restart=always: it gives the daemon a notification socket and
// WATCHDOG_USEC, and when no WATCHDOG=1 arrives within the watchdog
// interval it aborts the process the way systemd does (SIGABRT, SIGCONT,
// SIGKILL after TimeoutAbortSec) and starts it again after RestartSec,
// unless the exit code is one RestartPreventExitStatus= names: then the
// daemon stays down, as a device would.
type Supervisor struct {
	Unit Unit
	d    *testrig.Daemon
	conn *net.UnixConn
	sock string

	mu        sync.Mutex
	lastPing  time.Time
	watchdogs int      // watchdog timeouts
	exits     []string // how each aborted run ended
	down      bool     // not restarted (RestartPreventExitStatus)
	stop      chan struct{}
	done      chan struct{}
}

// NewSupervisor opens the notification socket in dir. Env returns what
// the daemon's environment needs; call Watch once it has started.
func NewSupervisor(dir string, u Unit) (*Supervisor, error) {
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return &Supervisor{Unit: u, conn: conn, sock: sock, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Env is the daemon's environment under this supervisor: NOTIFY_SOCKET,
// WATCHDOG_USEC and the unit's Environment= lines.
func (s *Supervisor) Env() []string {
	env := append([]string{"NOTIFY_SOCKET=" + s.sock}, s.Unit.Env...)
	if s.Unit.WatchdogSec > 0 {
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(s.Unit.WatchdogSec.Microseconds(), 10))
	}
	return env
}

// Watch supervises d (already started with Env) until Close.
func (s *Supervisor) Watch(d *testrig.Daemon) {
	s.d = d
	s.mu.Lock()
	s.lastPing = time.Now()
	s.mu.Unlock()
	go s.read()
	go s.run()
}

func (s *Supervisor) read() {
	buf := make([]byte, 4096)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "WATCHDOG=1" || line == "READY=1" {
				s.mu.Lock()
				s.lastPing = time.Now()
				s.mu.Unlock()
			}
		}
	}
}

func (s *Supervisor) run() {
	defer close(s.done)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		late := s.Unit.WatchdogSec > 0 && time.Since(s.lastPing) > s.Unit.WatchdogSec && !s.down
		s.mu.Unlock()
		if !late || !s.d.Running() {
			continue
		}
		st, err := s.d.Abort(s.Unit.TimeoutAbortSec)
		exit := "unknown"
		code := -1
		if err == nil && st != nil {
			exit = st.String()
			if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Exited() {
				code = ws.ExitStatus()
			}
		}
		s.mu.Lock()
		s.watchdogs++
		s.exits = append(s.exits, exit)
		for _, c := range s.Unit.PreventExit {
			s.down = s.down || code == c
		}
		down := s.down
		s.mu.Unlock()
		if down {
			continue
		}
		select {
		case <-s.stop:
			return
		case <-time.After(s.Unit.RestartSec):
		}
		s.mu.Lock()
		s.lastPing = time.Now() // the watchdog starts with the new run
		s.mu.Unlock()
		_ = s.d.Start()
	}
}

// Watchdogs is how many times the watchdog fired; Exits how each aborted
// run ended; Down whether the restart policy left the daemon down.
func (s *Supervisor) Watchdogs() (n int, exits []string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watchdogs, append([]string(nil), s.exits...), s.down
}

// Close stops supervising (the daemon keeps running).
func (s *Supervisor) Close() {
	close(s.stop)
	if s.d != nil {
		<-s.done
	}
	s.conn.Close()
}
