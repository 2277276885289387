package paysim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// Options configure a Server. The zero value is usable apart from Keys.
type Options struct {
	Keys *Keys
	// Logger receives one debug line per API call and notification attempt;
	// nil discards.
	Logger *slog.Logger
	// Realism tunes the realistic behaviours; nil means DefaultRealism().
	Realism *Realism
	// NotifyRetry is the delay before each notification attempt after the
	// first (default DefaultNotifyRetry).
	NotifyRetry []time.Duration
	// TimeoutHold is how long a "timeout" fault holds a request before
	// dropping the connection (default DefaultTimeoutHold; the client gives
	// up first).
	TimeoutHold time.Duration
	// HTTPClient sends notifications (default: DefaultNotifyTimeout).
	HTTPClient *http.Client
	// Now is the business clock: when orders are created, expire, are paid
	// and refunded. The timestamps that requests and signatures carry always
	// use the wall clock, because the SDKs sign with it. nil = time.Now;
	// tests move it to expire orders.
	Now func() time.Time
}

// Defaults of Options.
const (
	DefaultTimeoutHold   = 30 * time.Second
	DefaultNotifyTimeout = 5 * time.Second
)

// DefaultNotifyRetry is the compressed retry schedule: the providers retry
// over a day; this takes about two minutes so tests see retries.
var DefaultNotifyRetry = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second}

// Validate reports what makes o unusable.
func (o Options) Validate() error {
	if o.Keys == nil {
		return errors.New("paysim: Options.Keys is required")
	}
	if o.Realism != nil {
		return o.Realism.Validate()
	}
	return nil
}

// Provider is one simulated payment service: its wire API and its orders'
// state machine. wxsim and alisim are the two; Register adds one to a
// Server, which serves its API next to the /_sim/ hooks and lends it the
// shared machinery (faults, notification delivery, timers, the clock).
type Provider interface {
	// ServeHTTP serves the provider's wire API.
	http.Handler
	Name() payment.ProviderName
	// Pattern is where the wire API is served, as an http.ServeMux pattern.
	Pattern() string
	// Scan is the buyer scanning the order's QR code; an error wrapping
	// ErrNoOrder says the provider has no such order.
	Scan(outTradeNo string) error
	// Pay is the buyer paying the order on the terms p (not yet resolved
	// against the order's total) and the payment notification.
	Pay(outTradeNo string, p Payment) error
	RefundComplete(outRefundNo string) error
	RefundFail(outRefundNo string, status RefundStatus) error
	// Orders lists the provider's orders as /_sim/orders shows them.
	Orders() []OrderInfo
}

// Server is the simulator core. Its methods are safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	keys   *Keys
	now    func() time.Time
	mux    *http.ServeMux
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	providers map[payment.ProviderName]Provider
	stats     map[string]int
	faults    []*fault
	realism   Realism
	closed    bool
	timers    map[*time.Timer]struct{}
	// unreachable holds the notification hosts already reported as not
	// answering, so their retries are logged at debug level only.
	unreachable map[string]bool
}

// New returns a simulator for opts.Keys that serves the /_sim/ hooks; its
// providers are added with Register (wxsim.Register, alisim.Register).
func New(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.NotifyRetry == nil {
		opts.NotifyRetry = DefaultNotifyRetry
	}
	if opts.TimeoutHold == 0 {
		opts.TimeoutHold = DefaultTimeoutHold
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: DefaultNotifyTimeout}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	realism := DefaultRealism()
	if opts.Realism != nil {
		realism = *opts.Realism
	}
	s := &Server{
		opts: opts, log: opts.Logger, keys: opts.Keys, now: opts.Now, mux: http.NewServeMux(),
		providers: map[payment.ProviderName]Provider{}, stats: map[string]int{},
		realism: realism, timers: map[*time.Timer]struct{}{}, unreachable: map[string]bool{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.handleHooks()
	return s, nil
}

// Register adds p: its API is served at p.Pattern() and the hooks reach its
// orders. Like http.ServeMux.Handle, it panics when p's name or pattern is
// taken already.
func (s *Server) Register(p Provider) {
	s.mu.Lock()
	_, dup := s.providers[p.Name()]
	if !dup {
		s.providers[p.Name()] = p
	}
	s.mu.Unlock()
	if dup {
		panic(fmt.Sprintf("paysim: provider %s registered twice", p.Name()))
	}
	s.mux.Handle(p.Pattern(), p)
}

// provider returns the registered provider of that name.
func (s *Server) provider(name payment.ProviderName) (Provider, error) {
	s.mu.Lock()
	p, ok := s.providers[name]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("unknown provider %q", name)
	}
	return p, nil
}

// registered lists the providers by name, so that answers that combine
// them do not depend on the order of registration.
func (s *Server) registered() []Provider {
	s.mu.Lock()
	out := make([]Provider, 0, len(s.providers))
	for _, p := range s.providers {
		out = append(out, p)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// knownProvider reports whether name is a provider of the hooks' contract
// (docs/contract.md §7), registered or not.
func knownProvider(name payment.ProviderName) bool {
	return name == payment.WxPay || name == payment.Alipay
}

// Keys returns the simulator's key material.
func (s *Server) Keys() *Keys { return s.keys }

// Logger is where providers log their calls (Options.Logger).
func (s *Server) Logger() *slog.Logger { return s.log }

// Now reads the business clock (Options.Now).
func (s *Server) Now() time.Time { return s.now() }

// ServeHTTP serves the providers' APIs and the /_sim/ hooks.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close stops notification deliveries in flight and pending timers (refund
// completions, trade expiries) and waits for the deliveries.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for t := range s.timers {
		t.Stop()
	}
	s.timers = nil
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Realism returns the current realistic behaviours.
func (s *Server) Realism() Realism {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.realism
}

// SetRealism changes the realistic behaviours from now on; refunds already
// scheduled to complete keep their time.
func (s *Server) SetRealism(r Realism) error {
	if err := r.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.realism = r
	s.mu.Unlock()
	return nil
}

// After runs f in d unless the Server is closed first; stop cancels it.
func (s *Server) After(d time.Duration, f func()) (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return func() {}
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.mu.Lock()
		closed := s.closed
		delete(s.timers, t)
		s.mu.Unlock()
		if !closed {
			f()
		}
	})
	s.timers[t] = struct{}{}
	return func() {
		t.Stop()
		s.mu.Lock()
		delete(s.timers, t)
		s.mu.Unlock()
	}
}

// Scan simulates the buyer scanning the QR code, at every provider that has
// outTradeNo: an Alipay trade now exists (WAIT_BUYER_PAY), a WeChat order is
// USERPAYING (the buyer is entering the password).
func (s *Server) Scan(outTradeNo string) error { return s.ScanAt("", outTradeNo) }

// ScanAt is Scan at one provider ("" = every provider that has the order).
func (s *Server) ScanAt(provider payment.ProviderName, outTradeNo string) error {
	if provider != "" {
		p, err := s.provider(provider)
		if err != nil {
			return err
		}
		return p.Scan(outTradeNo)
	}
	// Every provider scans; the first error other than ErrNoOrder wins.
	var firstErr error
	found := false
	for _, p := range s.registered() {
		if err := p.Scan(outTradeNo); !errors.Is(err, ErrNoOrder) {
			found = true
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if !found {
		return fmt.Errorf("order %s: %w at either provider", outTradeNo, ErrNoOrder)
	}
	return firstErr
}

// Pay simulates the buyer paying an order whose total at the provider is
// amount (0 = the order's) and sends the payment notification. For Alipay
// an unscanned order is scanned first.
func (s *Server) Pay(provider payment.ProviderName, outTradeNo string, amount payment.Fen) error {
	return s.PayWith(provider, outTradeNo, Payment{Amount: amount})
}

// PayWith is Pay with a discount.
func (s *Server) PayWith(provider payment.ProviderName, outTradeNo string, p Payment) error {
	pr, err := s.provider(provider)
	if err != nil {
		return err
	}
	return pr.Pay(outTradeNo, p)
}

// RefundComplete makes a processing refund succeed at once (WeChat; Alipay
// refunds settle synchronously and only need to exist). Completing a refund
// that already succeeded is a no-op; an ABNORMAL WeChat refund can still be
// completed (the merchant resolved it).
func (s *Server) RefundComplete(provider payment.ProviderName, outRefundNo string) error {
	p, err := s.provider(provider)
	if err != nil {
		return err
	}
	return p.RefundComplete(outRefundNo)
}

// RefundFail ends a processing WeChat refund in status RefundAbnormal or
// RefundClosed and sends REFUND.ABNORMAL or REFUND.CLOSED. Alipay has no
// such states: its refunds settle synchronously.
func (s *Server) RefundFail(provider payment.ProviderName, outRefundNo string, status RefundStatus) error {
	if status != RefundAbnormal && status != RefundClosed {
		return fmt.Errorf("status %q: want ABNORMAL or CLOSED", status)
	}
	p, err := s.provider(provider)
	if err != nil {
		return err
	}
	return p.RefundFail(outRefundNo, status)
}

// Orders lists every order of every provider, oldest first.
func (s *Server) Orders() []OrderInfo {
	all := []OrderInfo{} // /_sim/orders answers [] when there are none
	for _, p := range s.registered() {
		all = append(all, p.Orders()...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].CreatedAt.Before(all[j].CreatedAt) })
	return all
}

// Order returns one order, if the provider has it.
func (s *Server) Order(provider payment.ProviderName, outTradeNo string) (OrderInfo, bool) {
	for _, o := range s.Orders() {
		if o.Provider == provider && o.OutTradeNo == outTradeNo {
			return o, true
		}
	}
	return OrderInfo{}, false
}

// Stats returns the number of calls per API, e.g. "alipay.trade.query" or
// "wxpay.query".
func (s *Server) Stats() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.stats))
	for k, v := range s.stats {
		out[k] = v
	}
	return out
}

// Count records one call of api for Stats.
func (s *Server) Count(api string) {
	s.mu.Lock()
	s.stats[api]++
	s.mu.Unlock()
}
