package testrig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/alisim"
	"github.com/kioskpay/kioskpay/payment/paysim/wxsim"
)

// Sim is a paysim served over real HTTP on a loopback port, so a daemon in
// another process reaches it exactly as it would reach the providers. It
// lives in the test's process: killing the daemon never touches the
// provider's state, which is the point.
type Sim struct {
	*paysim.Server
	// URL is the simulator's base URL, http://127.0.0.1:<port>.
	URL  string
	Keys *paysim.Keys
	// Wx is the WeChat Pay side, for notifications a test builds by hand
	// (forged, replayed).
	Wx *wxsim.Sim

	srv *http.Server
	ln  net.Listener
}

// SimOptions tune a Sim.
type SimOptions struct {
	// TimeoutHold is how long a "timeout" fault holds a request (default 30s).
	TimeoutHold time.Duration
	// RefundDelay, when positive, is about how long a WeChat refund stays
	// PROCESSING before it succeeds by itself (between half and twice it),
	// as at the real provider; 0 keeps paysim's default of 1–10 s.
	RefundDelay time.Duration
	// NotifyRetry is the notification retry schedule (default paysim's).
	NotifyRetry []time.Duration
	// Realism, when set, adjusts paysim's realistic defaults.
	Realism func(*paysim.Realism)
}

// StartSim serves a simulator for keys on a free loopback port. It behaves
// as the real services do (paysim's defaults), including the answers the
// money rule is about: Alipay query amounts of "0.00" and WeChat refunds
// that must name the provider's order total.
func StartSim(keys *paysim.Keys, opts SimOptions) (*Sim, error) {
	r := paysim.DefaultRealism()
	if opts.RefundDelay > 0 {
		r.WxRefundMin, r.WxRefundMax = opts.RefundDelay/2, 2*opts.RefundDelay
	}
	if opts.Realism != nil {
		opts.Realism(&r)
	}
	server, err := paysim.New(paysim.Options{Keys: keys, TimeoutHold: opts.TimeoutHold, Realism: &r, NotifyRetry: opts.NotifyRetry})
	if err != nil {
		return nil, err
	}
	wx := wxsim.Register(server)
	alisim.Register(server)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		server.Close()
		return nil, fmt.Errorf("start sim: %w", err)
	}
	s := &Sim{
		Server: server, Keys: keys, Wx: wx, URL: "http://" + ln.Addr().String(), ln: ln,
		srv: &http.Server{Handler: server, ReadHeaderTimeout: 10 * time.Second},
	}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the simulator.
func (s *Sim) Close() {
	s.Server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// Legs returns the simulator's orders for outTradeNo, one per provider.
func (s *Sim) Legs(outTradeNo string) []paysim.OrderInfo {
	var out []paysim.OrderInfo
	for _, o := range s.Orders() {
		if o.OutTradeNo == outTradeNo {
			out = append(out, o)
		}
	}
	return out
}

// WaitOrder polls the simulator until provider p's order outTradeNo
// satisfies cond, or ctx ends. With completeRefunds, WeChat refunds still
// PROCESSING are completed on the way, as the real provider does after a
// while.
func (s *Sim) WaitOrder(ctx context.Context, p payment.ProviderName, outTradeNo string, completeRefunds bool, cond func(paysim.OrderInfo) bool) (paysim.OrderInfo, error) {
	// The simulator is driven by another process's requests: poll it.
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		o, _ := s.Order(p, outTradeNo)
		if completeRefunds {
			for _, r := range o.Refunds {
				if r.Status == "PROCESSING" {
					_ = s.RefundComplete(p, r.OutRefundNo)
				}
			}
		}
		if cond(o) {
			return o, nil
		}
		select {
		case <-ctx.Done():
			return o, fmt.Errorf("paysim %s %s: %w (last seen %+v)", p, outTradeNo, ctx.Err(), o)
		case <-tick.C:
		}
	}
}

// Has reports whether provider p has an order outTradeNo.
func (s *Sim) Has(p payment.ProviderName, outTradeNo string) bool {
	_, ok := s.Order(p, outTradeNo)
	return ok
}

// DaemonFiles writes the merchant key files into dir (once per Sim is
// enough) and returns the complete daemon config paysim writes (docs/contract.md §7),
// as TOML text, pointing at this simulator.
func (s *Sim) DaemonFiles(dir string) ([]byte, error) {
	path, err := s.Keys.WriteDaemonFiles(dir, s.URL)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// WriteConfig writes base (a daemon config in TOML) to path with the dotted
// keys of overrides replaced, e.g. {"mqtt.url": "tcp://…",
// "display.outputs": []string{}}. A nil value deletes the key.
func WriteConfig(path string, base []byte, overrides map[string]any) error {
	var m map[string]any
	if _, err := toml.Decode(string(base), &m); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	for k, v := range overrides {
		parts := strings.Split(k, ".")
		cur := m
		for _, p := range parts[:len(parts)-1] {
			next, ok := cur[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[p] = next
			}
			cur = next
		}
		if v == nil {
			delete(cur, parts[len(parts)-1])
		} else {
			cur[parts[len(parts)-1]] = v
		}
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(m); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// EditConfig replaces text in the file at path, each old string (which
// must be there) by its new one, in pairs. It is for configs WriteConfig
// cannot express: a test of what the daemon says about a broken file.
func EditConfig(path string, pairs ...string) error {
	if len(pairs)%2 != 0 {
		return errors.New("edit config: old and new strings come in pairs")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("edit config: %w", err)
	}
	for i := 0; i < len(pairs); i += 2 {
		if !bytes.Contains(b, []byte(pairs[i])) {
			return fmt.Errorf("edit config: %s has no %q", path, pairs[i])
		}
		b = bytes.Replace(b, []byte(pairs[i]), []byte(pairs[i+1]), 1)
	}
	return os.WriteFile(path, b, 0o600)
}
