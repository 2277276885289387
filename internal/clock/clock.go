// Package clock decides whether the system clock can be trusted (docs/contract.md §4.5).
//
// A kiosk without a battery-backed RTC boots with a clock that is wrong by
// days or years until NTP fixes it, and a wrong clock breaks provider
// signatures (both check timestamps) and order expiry. With sync_check =
// "kernel" the clock is trusted only while the kernel reports it
// synchronised (adjtimex without STA_UNSYNC), and never while it reads
// earlier than the binary was built, which no correct clock can.
package clock

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/kioskpay/kioskpay/config"
)

// buildTime may be set at link time:
//
//	go build -ldflags "-X github.com/kioskpay/kioskpay/internal/clock.buildTime=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
var buildTime string

// releaseFloor is the fallback when neither -ldflags nor the VCS stamp gives
// a build time (go run, go test, builds outside git). Move it forward at
// each release; any date before the real build is safe, just less strict.
const releaseFloor = "2026-11-01T00:00:00Z"

// BuildTime is the time the binary was built: the -ldflags value, else the
// commit time Go stamps into VCS builds, else releaseFloor.
func BuildTime() time.Time {
	if t, err := time.Parse(time.RFC3339, buildTime); err == nil {
		return t
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
					return t
				}
			}
		}
	}
	t, _ := time.Parse(time.RFC3339, releaseFloor)
	return t
}

// Probe reports whether the kernel considers the clock synchronised.
type Probe func() (synced bool, err error)

// Checker answers "is the clock trustworthy now?".
type Checker struct {
	// Probe asks the kernel; nil trusts the kernel (mode none).
	Probe Probe
	// Now reads the clock (default time.Now).
	Now func() time.Time
	// NotBefore is the earliest time a correct clock can show: the build
	// time. Zero disables the check.
	NotBefore time.Time
}

// New returns the checker for a clock.sync_check mode.
func New(mode config.SyncCheck) (*Checker, error) {
	switch mode {
	case config.SyncKernel:
		return &Checker{Probe: KernelProbe, Now: time.Now, NotBefore: BuildTime()}, nil
	case config.SyncNone:
		return &Checker{Now: time.Now}, nil
	}
	return nil, fmt.Errorf("clock.sync_check %q: want kernel or none", mode)
}

// ErrBeforeBuild is returned (wrapped) when the clock reads earlier than the
// binary's build time.
var ErrBeforeBuild = errors.New("clock reads earlier than the build time")

// Synced reports whether the clock can be trusted. With mode none it is
// always true. The error explains a false answer when there is more to say
// (the probe failed, or the clock is before the build time).
func (c *Checker) Synced() (bool, error) {
	if c.Probe == nil {
		return true, nil
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	if t := now(); !c.NotBefore.IsZero() && t.Before(c.NotBefore) {
		return false, fmt.Errorf("%w: now %s, built %s", ErrBeforeBuild, t.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339))
	}
	ok, err := c.Probe()
	if err != nil {
		return false, fmt.Errorf("clock sync check: %w", err)
	}
	return ok, nil
}

// Func adapts the checker to the engine's func() (bool, error).
func (c *Checker) Func() func() (bool, error) { return c.Synced }
