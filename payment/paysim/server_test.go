package paysim

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

func TestRealismValidate(t *testing.T) {
	k, _ := wxTestKeys(t)
	for _, tc := range []struct {
		name string
		f    func(*Realism)
		want string // "" = valid
	}{
		{"defaults", func(*Realism) {}, ""},
		{"never", func(r *Realism) { r.WxRefundMax = Never }, ""},
		{"immediate", func(r *Realism) { r.WxRefundMin, r.WxRefundMax = 0, 0 }, ""},
		{"negative min", func(r *Realism) { r.WxRefundMin = -time.Second }, "WxRefundMin"},
		{"max below min", func(r *Realism) { r.WxRefundMin, r.WxRefundMax = 2*time.Second, time.Second }, "WxRefundMax"},
		{"negative window", func(r *Realism) { r.AlipayRefundWindow = -time.Hour }, "AlipayRefundWindow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := realism(tc.f)
			_, err := New(Options{Keys: k, Realism: r})
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("New: %v, want an error naming %q", err, tc.want)
			}
			s, _ := New(Options{Keys: k})
			defer s.Close()
			if err := s.SetRealism(*r); (err == nil) != (tc.want == "") {
				t.Fatalf("SetRealism: %v", err)
			}
			if tc.want == "" && s.Realism() != *r {
				t.Fatalf("Realism() = %+v after SetRealism(%+v)", s.Realism(), *r)
			}
		})
	}
	if d := DefaultRealism(); d.WxRefundMin != time.Second || d.WxRefundMax != 10*time.Second || d.AlipayRefundWindow != 365*24*time.Hour ||
		!d.AlipayZeroQueryAmounts || !d.WxStrictRefundTotal {
		t.Fatalf("DefaultRealism() = %+v", d)
	}
}

// logSink records log lines and reports the one that ends a delivery.
type logSink struct {
	mu      sync.Mutex
	records []slog.Record
	givenUp chan struct{}
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logSink) WithGroup(string) slog.Handler            { return l }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.records = append(l.records, r)
	l.mu.Unlock()
	if r.Message == "notification given up" {
		l.givenUp <- struct{}{}
	}
	return nil
}

// Quiet by default (issue 14): API calls log at debug level, and a
// notification URL that never answers is reported once at info level, its
// retries at debug level.
func TestQuietLogs(t *testing.T) {
	k, _ := wxTestKeys(t)
	logs := &logSink{givenUp: make(chan struct{}, 4)}
	s, srv := wxTestServer(t, Options{Logger: slog.New(logs), NotifyRetry: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}})
	sdk := newWxSDK(t, k, srv)
	const dead = "http://127.0.0.1:1/notify/sim-1/wxpay" // nothing listens on port 1
	for _, no := range []string{"LOGS_1", "LOGS_2"} {
		sdk.prepay(t, no, 100, dead)
		if err := s.Pay(payment.WxPay, no, 0); err != nil {
			t.Fatal(err)
		}
		<-logs.givenUp
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	var info []string
	failures := 0
	for _, r := range logs.records {
		if strings.HasPrefix(r.Message, "notification not delivered") {
			failures++
		}
		if r.Level >= slog.LevelInfo {
			info = append(info, r.Message)
		}
	}
	if failures != 8 || len(info) != 1 || !strings.HasPrefix(info[0], "notification not delivered") {
		t.Fatalf("%d failed attempts logged, %d at info or above (%q): want 8 and exactly one", failures, len(info), info)
	}
}
