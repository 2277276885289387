package clock

import (
	"errors"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
)

func TestChecker(t *testing.T) {
	built := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	after := built.Add(24 * time.Hour)
	before := time.Date(1970, 1, 1, 0, 0, 10, 0, time.UTC)
	probe := func(synced bool, err error) Probe { return func() (bool, error) { return synced, err } }
	tests := []struct {
		name       string
		c          Checker
		want       bool
		wantErr    error
		wantAnyErr bool
	}{
		{"kernel synced", Checker{Probe: probe(true, nil), Now: func() time.Time { return after }, NotBefore: built}, true, nil, false},
		{"kernel unsynced", Checker{Probe: probe(false, nil), Now: func() time.Time { return after }, NotBefore: built}, false, nil, false},
		{"before build time although kernel says synced", Checker{Probe: probe(true, nil), Now: func() time.Time { return before }, NotBefore: built}, false, ErrBeforeBuild, true},
		{"probe fails", Checker{Probe: probe(true, errors.New("EPERM")), Now: func() time.Time { return after }, NotBefore: built}, false, nil, true},
		{"none trusts even 1970", Checker{Now: func() time.Time { return before }, NotBefore: built}, true, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.Synced()
			if got != tt.want {
				t.Errorf("Synced = %v, want %v (err %v)", got, tt.want, err)
			}
			if (err != nil) != tt.wantAnyErr {
				t.Errorf("err = %v, want error: %v", err, tt.wantAnyErr)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNew(t *testing.T) {
	k, err := New(config.SyncKernel)
	if err != nil || k.Probe == nil || k.NotBefore.IsZero() {
		t.Fatalf("New(kernel) = %+v, %v", k, err)
	}
	n, err := New(config.SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := n.Func()(); !ok || err != nil {
		t.Errorf("none: %v %v", ok, err)
	}
	if _, err := New("ntp"); err == nil {
		t.Error("New(ntp) succeeded")
	}
}

func TestBuildTime(t *testing.T) {
	old := buildTime
	defer func() { buildTime = old }()
	buildTime = "2027-03-04T05:06:07Z"
	if got := BuildTime(); !got.Equal(time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Errorf("BuildTime with ldflags = %v", got)
	}
	buildTime = ""
	if got := BuildTime(); got.IsZero() || got.Year() < 2026 {
		t.Errorf("fallback BuildTime = %v", got)
	}
}

// The real kernel is asked read-only; in a container it may say either,
// but it must answer.
func TestKernelProbeAnswers(t *testing.T) {
	if _, err := KernelProbe(); err != nil {
		t.Skipf("adjtimex unavailable here: %v", err)
	}
}
