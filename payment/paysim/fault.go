package paysim

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// FaultKind names an injected failure (docs/contract.md §7).
type FaultKind string

// Fault kinds. The last three are one provider's own "try again" answers; a
// fault of such a kind only hits calls to that provider.
const (
	Fault5xx       FaultKind = "5xx"
	FaultTimeout   FaultKind = "timeout"
	FaultBadSign   FaultKind = "bad_sign"
	FaultStaleTS   FaultKind = "stale_ts"
	FaultRateLimit FaultKind = "rate_limit"
	// FaultAccepted: WeChat answers HTTP 202 with an empty body, "accepted,
	// not yet processed, repeat with the same parameters"; nothing happens.
	FaultAccepted FaultKind = "202"
	// FaultUnavailable: Alipay answers 20000 isp.unknow-error (the business
	// system is unavailable) before processing anything.
	FaultUnavailable FaultKind = "20000"
	// FaultSystemError: Alipay processes the call and then answers 40004
	// ACQ.SYSTEM_ERROR (cancel with retry_flag Y): the outcome is unknown.
	FaultSystemError FaultKind = "system_error"
)

// faultKinds lists every kind, in the order messages name them, with the
// only provider it applies to ("" = both).
var faultKinds = []struct {
	kind FaultKind
	only payment.ProviderName
}{
	{Fault5xx, ""}, {FaultTimeout, ""}, {FaultBadSign, ""}, {FaultStaleTS, ""}, {FaultRateLimit, ""},
	{FaultAccepted, payment.WxPay}, {FaultUnavailable, payment.Alipay}, {FaultSystemError, payment.Alipay},
}

// FaultKinds lists every fault kind, for usage messages.
func FaultKinds() []FaultKind {
	out := make([]FaultKind, len(faultKinds))
	for i, k := range faultKinds {
		out[i] = k.kind
	}
	return out
}

// Only returns the provider whose own answer k is, or "" when both answer
// it; ok is false for an unknown kind.
func (k FaultKind) Only() (provider payment.ProviderName, ok bool) {
	for _, f := range faultKinds {
		if f.kind == k {
			return f.only, true
		}
	}
	return "", false
}

// describeFaultKinds names the kinds and whose they are:
// "5xx, timeout, …, 202 (wxpay), …".
func describeFaultKinds() string {
	names := make([]string, len(faultKinds))
	for i, f := range faultKinds {
		names[i] = string(f.kind)
		if f.only != "" {
			names[i] += " (" + string(f.only) + ")"
		}
	}
	return strings.Join(names, ", ")
}

// Fault is an injected failure: for Count calls (0 = unlimited), or for a
// Rate share of calls (0 = every call), of API (empty = every API) at
// Provider (empty = both). It is also the body of POST /_sim/fault.
type Fault struct {
	Provider payment.ProviderName `json:"provider,omitempty"`
	API      string               `json:"api,omitempty"`
	Kind     FaultKind            `json:"kind"`
	Rate     float64              `json:"rate,omitempty"`
	Count    int                  `json:"count,omitempty"`
}

// Validate reports the first field of f that makes no sense.
func (f Fault) Validate() error {
	only, ok := f.Kind.Only()
	switch {
	case !ok:
		return fmt.Errorf("kind %q: want one of %s", f.Kind, describeFaultKinds())
	case f.Provider != "" && !knownProvider(f.Provider):
		return fmt.Errorf("provider %q: want wxpay, alipay or empty", f.Provider)
	case only != "" && f.Provider != "" && f.Provider != only:
		return fmt.Errorf("kind %q is a %s answer, not %s's", f.Kind, only, f.Provider)
	case f.Rate < 0 || f.Rate > 1:
		return fmt.Errorf("rate %v: want 0..1", f.Rate)
	case f.Count < 0:
		return fmt.Errorf("count %d: want ≥ 0", f.Count)
	}
	return nil
}

type fault struct {
	Fault
	left int // remaining calls when Count > 0
}

// InjectFault adds a fault. Faults are checked in the order they were added.
func (s *Server) InjectFault(f Fault) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.faults = append(s.faults, &fault{Fault: f, left: f.Count})
	s.mu.Unlock()
	return nil
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = nil
	s.mu.Unlock()
}

// TakeFault returns the fault kind to apply to this call of api at provider,
// or "" for none, and uses up one call of a counted fault. api is the stats
// name ("alipay.trade.query", "wxpay.close"); a fault's API may name it
// without the provider's prefix ("trade.query", "close").
func (s *Server) TakeFault(provider payment.ProviderName, api string) FaultKind {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Provider != "" && f.Provider != provider {
			continue
		}
		if only, _ := f.Kind.Only(); only != "" && only != provider {
			continue
		}
		if f.API != "" && f.API != api && !strings.HasSuffix(api, "."+f.API) {
			continue
		}
		if f.Rate > 0 && rand.Float64() >= f.Rate {
			continue
		}
		if f.Count > 0 {
			f.left--
			if f.left <= 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return f.Kind
	}
	return ""
}

// Hold implements the "timeout" fault: the request hangs until the client
// gives up, the Server closes or TimeoutHold passes, and then the
// connection is dropped without a response (Hold panics with
// http.ErrAbortHandler, which net/http handles).
func (s *Server) Hold(r *http.Request) {
	t := time.NewTimer(s.opts.TimeoutHold)
	defer t.Stop()
	select {
	case <-r.Context().Done():
	case <-s.ctx.Done():
	case <-t.C:
	}
	panic(http.ErrAbortHandler)
}
