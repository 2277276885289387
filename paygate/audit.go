package paygate

import (
	"encoding/json"
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
// Rotation: rename the file and send SIGHUP (logrotate: postrotate
// kill -HUP); paygate then opens a new file at the configured path. Lines
// are never rewritten.
type AuditLog struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

// OpenAudit opens (creating it 0600 if needed) the log at path for
// appending.
func OpenAudit(path string) (*AuditLog, error) {
	a := &AuditLog{path: path}
	if err := a.Reopen(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reopen closes the current file and opens the configured path again,
// after the old file was renamed by a rotation.
func (a *AuditLog) Reopen() error {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	a.mu.Lock()
	old := a.f
	a.f = f
	a.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// Write appends one record and syncs it to disk.
func (a *AuditLog) Write(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.f.Write(b); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Close closes the file.
func (a *AuditLog) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Close()
}
