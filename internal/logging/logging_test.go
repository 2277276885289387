package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDurationsAreStrings(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, slog.LevelInfo).Info("mqtt connect failed; retrying", "retry_in", time.Second, "took", 1500*time.Millisecond, "attempt", 3)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %v\n%s", err, buf.String())
	}
	if rec["retry_in"] != "1s" || rec["took"] != "1.5s" || rec["attempt"] != float64(3) {
		t.Fatalf("record %s", buf.String())
	}
	buf.Reset()
	slog.New(slog.NewTextHandler(&buf, Options(slog.LevelInfo))).Info("x", "retry_in", 2*time.Minute)
	if !strings.Contains(buf.String(), "retry_in=2m0s") {
		t.Fatalf("text record %s", buf.String())
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "INFO+2", "verbose", "warning"} {
		if _, err := ParseLevel(bad); err == nil || !strings.Contains(err.Error(), "want debug, info, warn or error") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
