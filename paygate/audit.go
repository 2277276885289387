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
// Writes are committed in groups: the first waiting writer writes and
// syncs the lines of every writer queued behind it, which then return
// without an fsync of their own. Alone, a writer commits its own line at
// once; many devices at once share one fsync per group. Each Write returns
// only after its line is on disk.
//
// Rotation: rename the file and send SIGHUP (logrotate: postrotate
// kill -HUP); paygate then opens a new file at the configured path. Lines
// are never rewritten.
type AuditLog struct {
	path string

	// mu guards the queue of writers; cond wakes them when a group is done.
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []*auditWrite
	closed bool

	// fileMu guards f: held while a group is written and synced, and while
	// a rotation swaps the file, so no group lands in a closed file.
	fileMu sync.Mutex
	f      *os.File
}

// auditWrite is one writer in the queue.
type auditWrite struct {
	line []byte
	done bool
	err  error
}

// OpenAudit opens (creating it 0600 if needed) the log at path for
// appending.
func OpenAudit(path string) (*AuditLog, error) {
	a := &AuditLog{path: path}
	a.cond = sync.NewCond(&a.mu)
	if err := a.Reopen(); err != nil {
		return nil, err
	}
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
	w := &auditWrite{line: append(b, '\n')}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return errAuditClosed
	}
	a.queue = append(a.queue, w)
	for !w.done && a.queue[0] != w {
		a.cond.Wait()
	}
	if w.done { // a leader committed it
		a.mu.Unlock()
		return w.err
	}
	// First in the queue: commit everyone queued so far.
	group := a.queue
	var buf []byte
	for _, g := range group {
		buf = append(buf, g.line...)
	}
	a.mu.Unlock()
	err = a.commit(buf)
	a.mu.Lock()
	for _, g := range group {
		g.done, g.err = true, err
	}
	a.queue = a.queue[len(group):]
	a.cond.Broadcast() // the group returns; the next in line leads
	a.mu.Unlock()
	return err
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

// Close refuses later writes and closes the file; call it once the
// writers are done.
func (a *AuditLog) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.fileMu.Lock()
	defer a.fileMu.Unlock()
	return a.f.Close()
}
