package paygate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Record is one audit log line: a decision about one device request or
// one provider notification.
type Record struct {
	Time        time.Time `json:"ts"`
	Replica     string    `json:"replica"`
	Device      string    `json:"device,omitempty"`
	RequestID   string    `json:"request_id,omitempty"`
	Op          string    `json:"op"`
	PID         string    `json:"pid,omitempty"`
	Provider    string    `json:"provider,omitempty"`
	OutTradeNo  string    `json:"out_trade_no,omitempty"`
	OutRefundNo string    `json:"out_refund_no,omitempty"`
	Amount      int64     `json:"amount,omitempty"`
	// Decision is "allowed" (the provider was called and answered),
	// "refused" (a rule or the provider said no; Code names which) or
	// "unknown" (the provider call's outcome is unknown).
	Decision string `json:"decision"`
	Code     string `json:"code,omitempty"`
	Msg      string `json:"msg,omitempty"`
	TookMS   int64  `json:"took_ms"`
}

// Decisions.
const (
	Allowed = "allowed"
	Refused = "refused"
	Unknown = "unknown"
)

// AuditLog is the append-only audit log: JSON lines, each written and
// fsynced before the device gets its reply, so no decision a device acted
// on is missing after a crash. paygate keeps no other state.
//
// Writes are committed in groups by one goroutine: while an fsync runs,
// the lines that arrive meanwhile wait and go to disk together with the
// next one, so a replica serving many devices at once pays one fsync per
// group instead of one per request, and each Write still returns only
// after its line is on disk.
//
// Rotation: rename the file and send SIGHUP (logrotate: postrotate
// kill -HUP); paygate then opens a new file at the configured path. Lines
// are never rewritten.
type AuditLog struct {
	path string

	// mu guards the group being gathered.
	mu      sync.Mutex
	pending []byte
	waiters []chan error
	closed  bool
	wake    chan struct{} // a group is waiting (capacity 1)
	stopped chan struct{} // the committing goroutine has ended

	// fileMu guards f: held while a group is written and synced, and while
	// a rotation swaps the file, so no group lands in a closed file.
	fileMu sync.Mutex
	f      *os.File
}

// OpenAudit opens (creating it 0600 if needed) the log at path for
// appending.
func OpenAudit(path string) (*AuditLog, error) {
	a := &AuditLog{path: path, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	if err := a.Reopen(); err != nil {
		return nil, err
	}
	go a.run()
	return a, nil
}

// Reopen closes the current file and opens the configured path again,
// after the old file was renamed by a rotation. A group being written
// finishes in the old file first.
func (a *AuditLog) Reopen() error {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	a.fileMu.Lock()
	old := a.f
	a.f = f
	a.fileMu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// errAuditClosed answers a Write after Close.
var errAuditClosed = errors.New("audit log: closed")

// Write appends one record and returns once it is synced to disk.
func (a *AuditLog) Write(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return errAuditClosed
	}
	a.pending = append(append(a.pending, b...), '\n')
	a.waiters = append(a.waiters, done)
	// Under mu, so Close cannot close wake in between.
	select {
	case a.wake <- struct{}{}:
	default: // a wake-up is pending: its group will include this line
	}
	a.mu.Unlock()
	return <-done
}

// run commits groups until Close.
func (a *AuditLog) run() {
	defer close(a.stopped)
	for range a.wake {
		a.mu.Lock()
		group, waiters := a.pending, a.waiters
		a.pending, a.waiters = nil, nil
		a.mu.Unlock()
		if len(waiters) == 0 {
			continue
		}
		err := a.commit(group)
		for _, w := range waiters {
			w <- err
		}
	}
}

// commit writes one group of lines and syncs it.
func (a *AuditLog) commit(group []byte) error {
	a.fileMu.Lock()
	defer a.fileMu.Unlock()
	if _, err := a.f.Write(group); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Close commits what is waiting, refuses later writes and closes the file.
func (a *AuditLog) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	close(a.wake)
	<-a.stopped
	a.fileMu.Lock()
	defer a.fileMu.Unlock()
	return a.f.Close()
}
