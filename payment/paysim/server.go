package paysim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
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
	// first. The providers retry over a day; the default compresses that to
	// about two minutes so tests see retries.
	NotifyRetry []time.Duration
	// TimeoutHold is how long a "timeout" fault holds a request before
	// dropping the connection (default 30s; the client gives up first).
	TimeoutHold time.Duration
	// HTTPClient sends notifications (default: 5 s timeout).
	HTTPClient *http.Client
}

// DefaultNotifyRetry is the compressed retry schedule.
var DefaultNotifyRetry = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second}

// Server is the simulator. Its methods are safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	keys   *Keys
	mux    *http.ServeMux
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	stats   map[string]int
	faults  []*fault
	realism Realism
	closed  bool
	timers  map[*time.Timer]struct{}
	// unreachable holds the notification hosts already reported as not
	// answering, so their retries are logged at debug level only.
	unreachable map[string]bool

	alipay *alipaySim
	wxpay  *wxpaySim
}

// New returns a simulator for opts.Keys.
func New(opts Options) (*Server, error) {
	if opts.Keys == nil {
		return nil, errors.New("paysim: Options.Keys is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.NotifyRetry == nil {
		opts.NotifyRetry = DefaultNotifyRetry
	}
	if opts.TimeoutHold == 0 {
		opts.TimeoutHold = 30 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	realism := DefaultRealism()
	if opts.Realism != nil {
		realism = *opts.Realism
	}
	if err := realism.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts, log: opts.Logger, keys: opts.Keys, mux: http.NewServeMux(), stats: map[string]int{},
		realism: realism, timers: map[*time.Timer]struct{}{}, unreachable: map[string]bool{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.alipay = newAlipaySim(s)
	s.wxpay = newWxpaySim(s)
	s.mux.HandleFunc("POST /gateway.do", s.alipay.serveGateway)
	s.mux.Handle("/v3/", http.HandlerFunc(s.wxpay.serveAPI))
	s.mux.HandleFunc("POST /_sim/scan", s.hookScan)
	s.mux.HandleFunc("POST /_sim/pay", s.hookPay)
	s.mux.HandleFunc("POST /_sim/refund-complete", s.hookRefundComplete)
	s.mux.HandleFunc("POST /_sim/refund-fail", s.hookRefundFail)
	s.mux.HandleFunc("POST /_sim/fault", s.hookFault)
	s.mux.HandleFunc("DELETE /_sim/fault", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	s.mux.HandleFunc("GET /_sim/stats", func(w http.ResponseWriter, r *http.Request) { writeHookJSON(w, http.StatusOK, s.Stats()) })
	s.mux.HandleFunc("GET /_sim/orders", func(w http.ResponseWriter, r *http.Request) { writeHookJSON(w, http.StatusOK, s.Orders()) })
	return s, nil
}

// Keys returns the simulator's key material.
func (s *Server) Keys() *Keys { return s.keys }

// ServeHTTP serves the provider APIs and the /_sim/ hooks.
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

// after runs f in d unless the Server is closed first.
func (s *Server) after(d time.Duration, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
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
}

// Scan simulates the buyer scanning the QR code, at every provider that has
// outTradeNo: an Alipay trade now exists (WAIT_BUYER_PAY), a WeChat order is
// USERPAYING (the buyer is entering the password).
func (s *Server) Scan(outTradeNo string) error { return s.ScanAt("", outTradeNo) }

// ScanAt is Scan at one provider ("" = every provider that has the order).
func (s *Server) ScanAt(provider payment.ProviderName, outTradeNo string) error {
	switch provider {
	case payment.Alipay:
		return s.alipay.scan(outTradeNo)
	case payment.WxPay:
		return s.wxpay.scan(outTradeNo)
	case "":
	default:
		return fmt.Errorf("unknown provider %q", provider)
	}
	errAli, errWx := s.alipay.scan(outTradeNo), s.wxpay.scan(outTradeNo)
	switch {
	case errors.Is(errAli, errNoOrder) && errors.Is(errWx, errNoOrder):
		return fmt.Errorf("order %s: %w at either provider", outTradeNo, errNoOrder)
	case errAli != nil && !errors.Is(errAli, errNoOrder):
		return errAli
	case errWx != nil && !errors.Is(errWx, errNoOrder):
		return errWx
	}
	return nil
}

// errNoOrder: the provider has no order of that out_trade_no.
var errNoOrder = errors.New("no such order")

// Pay simulates the buyer paying an order whose total at the provider is
// amount (0 = the order's) and sends the payment notification. For Alipay
// an unscanned order is scanned first.
func (s *Server) Pay(provider payment.ProviderName, outTradeNo string, amount payment.Fen) error {
	return s.PayWith(provider, outTradeNo, Payment{Amount: amount})
}

// PayWith is Pay with a discount.
func (s *Server) PayWith(provider payment.ProviderName, outTradeNo string, p Payment) error {
	switch provider {
	case payment.Alipay:
		return s.alipay.pay(outTradeNo, p)
	case payment.WxPay:
		return s.wxpay.pay(outTradeNo, p)
	}
	return fmt.Errorf("unknown provider %q", provider)
}

// RefundComplete makes a processing refund succeed at once (WeChat; Alipay
// refunds settle synchronously and only need to exist). Completing a refund
// that already succeeded is a no-op; an ABNORMAL WeChat refund can still be
// completed (the merchant resolved it).
func (s *Server) RefundComplete(provider payment.ProviderName, outRefundNo string) error {
	switch provider {
	case payment.Alipay:
		return s.alipay.refundComplete(outRefundNo)
	case payment.WxPay:
		return s.wxpay.settleRefund(outRefundNo, wxRefundSuccess)
	}
	return fmt.Errorf("unknown provider %q", provider)
}

// Refund statuses RefundFail accepts (WeChat's own names).
const (
	RefundAbnormal = "ABNORMAL" // the buyer's account cannot receive it
	RefundClosed   = "CLOSED"   // the refund was closed; the money stays with the merchant
)

// RefundFail ends a processing WeChat refund in status RefundAbnormal or
// RefundClosed and sends REFUND.ABNORMAL or REFUND.CLOSED. Alipay has no
// such states: its refunds settle synchronously.
func (s *Server) RefundFail(provider payment.ProviderName, outRefundNo, status string) error {
	if status != RefundAbnormal && status != RefundClosed {
		return fmt.Errorf("status %q: want ABNORMAL or CLOSED", status)
	}
	switch provider {
	case payment.WxPay:
		return s.wxpay.settleRefund(outRefundNo, status)
	case payment.Alipay:
		return errors.New("alipay refunds settle synchronously; ABNORMAL and CLOSED are WeChat refund states")
	}
	return fmt.Errorf("unknown provider %q", provider)
}

// OrderInfo is one simulated order as /_sim/orders reports it.
type OrderInfo struct {
	Provider      payment.ProviderName `json:"provider"`
	OutTradeNo    string               `json:"out_trade_no"`
	State         string               `json:"state"`    // the provider's own name: NOTPAY, TRADE_SUCCESS, PRECREATED…
	Total         payment.Fen          `json:"total"`    // the order total the provider holds
	Paid          payment.Fen          `json:"paid"`     // what the buyer paid (payer_total, buyer_pay_amount)
	Received      payment.Fen          `json:"received"` // what the merchant receives (settlement_total, receipt_amount)
	Discount      payment.Fen          `json:"discount,omitempty"`
	DiscountBy    string               `json:"discount_by,omitempty"`
	Refunded      payment.Fen          `json:"refunded"`
	TransactionID string               `json:"transaction_id,omitempty"`
	NotifyURL     string               `json:"notify_url,omitempty"`
	Refunds       []RefundInfo         `json:"refunds,omitempty"`
	CreatedAt     time.Time            `json:"created_at"`
}

// RefundInfo is one refund of an order.
type RefundInfo struct {
	OutRefundNo string      `json:"out_refund_no"`
	Amount      payment.Fen `json:"amount"`
	Status      string      `json:"status"` // SUCCESS, PROCESSING, ABNORMAL, CLOSED
}

// Orders lists every order of both providers, oldest first.
func (s *Server) Orders() []OrderInfo {
	all := append(s.alipay.orders(), s.wxpay.orders()...)
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

func (s *Server) count(api string) {
	s.mu.Lock()
	s.stats[api]++
	s.mu.Unlock()
}

// Fault kinds (docs/contract.md §7). The last three are one provider's own "try again"
// answers; a fault of such a kind only hits calls to that provider.
const (
	Fault5xx       = "5xx"
	FaultTimeout   = "timeout"
	FaultBadSign   = "bad_sign"
	FaultStaleTS   = "stale_ts"
	FaultRateLimit = "rate_limit"
	// FaultAccepted: WeChat answers HTTP 202 with an empty body, "accepted,
	// not yet processed, repeat with the same parameters"; nothing happens.
	FaultAccepted = "202"
	// FaultUnavailable: Alipay answers 20000 isp.unknow-error (the business
	// system is unavailable) before processing anything.
	FaultUnavailable = "20000"
	// FaultSystemError: Alipay processes the call and then answers 40004
	// ACQ.SYSTEM_ERROR (cancel with retry_flag Y): the outcome is unknown.
	FaultSystemError = "system_error"
)

// faultKinds maps every kind to the only provider it applies to ("" = both).
var faultKinds = map[string]payment.ProviderName{
	Fault5xx: "", FaultTimeout: "", FaultBadSign: "", FaultStaleTS: "", FaultRateLimit: "",
	FaultAccepted: payment.WxPay, FaultUnavailable: payment.Alipay, FaultSystemError: payment.Alipay,
}

// FaultKinds lists the fault kinds, for usage messages.
const FaultKinds = "5xx, timeout, bad_sign, stale_ts, rate_limit, 202 (wxpay), 20000 (alipay), system_error (alipay)"

// Fault is an injected failure: for Count calls (0 = unlimited), or for a
// Rate share of calls (0 = every call), of API (empty = every API) at
// Provider (empty = both).
type Fault struct {
	Provider payment.ProviderName `json:"provider,omitempty"`
	API      string               `json:"api,omitempty"`
	Kind     string               `json:"kind"`
	Rate     float64              `json:"rate,omitempty"`
	Count    int                  `json:"count,omitempty"`
}

type fault struct {
	Fault
	left int // remaining calls when Count > 0
}

// InjectFault adds a fault. Faults are checked in the order they were added.
func (s *Server) InjectFault(f Fault) error {
	only, ok := faultKinds[f.Kind]
	if !ok {
		return fmt.Errorf("kind %q: want one of %s", f.Kind, FaultKinds)
	}
	if f.Provider != "" && f.Provider != payment.Alipay && f.Provider != payment.WxPay {
		return fmt.Errorf("provider %q: want wxpay, alipay or empty", f.Provider)
	}
	if only != "" && f.Provider != "" && f.Provider != only {
		return fmt.Errorf("kind %q is a %s answer, not %s's", f.Kind, only, f.Provider)
	}
	if f.Rate < 0 || f.Rate > 1 {
		return fmt.Errorf("rate %v: want 0..1", f.Rate)
	}
	if f.Count < 0 {
		return fmt.Errorf("count %d: want ≥ 0", f.Count)
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

// takeFault returns the fault kind to apply to this call of api at provider,
// or "" for none. api is the stats name ("alipay.trade.query", "wxpay.close").
func (s *Server) takeFault(provider payment.ProviderName, api string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Provider != "" && f.Provider != provider {
			continue
		}
		if only := faultKinds[f.Kind]; only != "" && only != provider {
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

// holdTimeout implements the "timeout" fault: the request hangs until the
// client gives up or TimeoutHold passes, and then the connection is dropped
// without a response.
func (s *Server) holdTimeout(r *http.Request) {
	t := time.NewTimer(s.opts.TimeoutHold)
	defer t.Stop()
	select {
	case <-r.Context().Done():
	case <-s.ctx.Done():
	case <-t.C:
	}
	panic(http.ErrAbortHandler)
}

// deliver POSTs a notification to url until accepted(resp, body) reports
// success or the retry schedule runs out. build is called for every attempt
// so each carries a fresh timestamp and signature, as the providers do.
func (s *Server) deliver(kind, url string, build func() (*http.Request, error), accepted func(*http.Response, []byte) bool) {
	if url == "" {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		for attempt := 0; attempt <= len(s.opts.NotifyRetry); attempt++ {
			if attempt > 0 {
				t := time.NewTimer(s.opts.NotifyRetry[attempt-1])
				select {
				case <-s.ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			req, err := build()
			if err != nil {
				s.log.Error("build notification", "kind", kind, "err", err)
				return
			}
			resp, err := s.opts.HTTPClient.Do(req.WithContext(s.ctx))
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				s.notDelivered(req.URL.Host, "notification not delivered", "kind", kind, "attempt", attempt+1, "err", err)
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if accepted(resp, body) {
				s.log.Debug("notification delivered", "kind", kind, "attempt", attempt+1)
				return
			}
			s.notDelivered(req.URL.Host, "notification refused", "kind", kind, "attempt", attempt+1, "status", resp.StatusCode)
		}
		s.log.Debug("notification given up", "kind", kind, "attempts", len(s.opts.NotifyRetry)+1)
	}()
}

// notDelivered logs a failed notification attempt: at info level the first
// time host fails, with a note that its retries are quiet; at debug level
// after that, so an unreachable placeholder URL does not flood the log.
func (s *Server) notDelivered(host, msg string, args ...any) {
	s.mu.Lock()
	first := !s.unreachable[host]
	s.unreachable[host] = true
	s.mu.Unlock()
	if first {
		s.log.Info(msg+"; further failures to this host are logged at debug level", append(args, "host", host)...)
		return
	}
	s.log.Debug(msg, append(args, "host", host)...)
}

func writeHookJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hookError(w http.ResponseWriter, status int, format string, args ...any) {
	writeHookJSON(w, status, map[string]any{"error": fmt.Sprintf(format, args...)})
}

func decodeHook(w http.ResponseWriter, r *http.Request, v any) bool {
	d := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		hookError(w, http.StatusBadRequest, "bad JSON body: %v", err)
		return false
	}
	return true
}

func (s *Server) hookScan(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Provider   payment.ProviderName `json:"provider"`
		OutTradeNo string               `json:"out_trade_no"`
	}
	if !decodeHook(w, r, &in) {
		return
	}
	if in.OutTradeNo == "" {
		hookError(w, http.StatusBadRequest, "out_trade_no is required")
		return
	}
	if in.Provider != "" && in.Provider != payment.Alipay && in.Provider != payment.WxPay {
		hookError(w, http.StatusBadRequest, "provider %q: want wxpay, alipay or none (every provider that has the order)", in.Provider)
		return
	}
	if err := s.ScanAt(in.Provider, in.OutTradeNo); err != nil {
		hookError(w, http.StatusConflict, "%v", err)
		return
	}
	writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) hookPay(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Provider   payment.ProviderName `json:"provider"`
		OutTradeNo string               `json:"out_trade_no"`
		Payment
	}
	if !decodeHook(w, r, &in) {
		return
	}
	if in.OutTradeNo == "" || (in.Provider != payment.Alipay && in.Provider != payment.WxPay) {
		hookError(w, http.StatusBadRequest, "want provider (wxpay|alipay) and out_trade_no")
		return
	}
	// What needs no order is a 400; PayWith checks the rest (409).
	if err := in.Payment.check(); err != nil {
		hookError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err := s.PayWith(in.Provider, in.OutTradeNo, in.Payment); err != nil {
		hookError(w, http.StatusConflict, "%v", err)
		return
	}
	writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) hookRefundComplete(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Provider    payment.ProviderName `json:"provider"`
		OutRefundNo string               `json:"out_refund_no"`
	}
	if !decodeHook(w, r, &in) {
		return
	}
	if err := s.RefundComplete(in.Provider, in.OutRefundNo); err != nil {
		hookError(w, http.StatusConflict, "%v", err)
		return
	}
	writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) hookRefundFail(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Provider    payment.ProviderName `json:"provider"`
		OutRefundNo string               `json:"out_refund_no"`
		Status      string               `json:"status"`
	}
	if !decodeHook(w, r, &in) {
		return
	}
	if in.OutRefundNo == "" || (in.Status != RefundAbnormal && in.Status != RefundClosed) {
		hookError(w, http.StatusBadRequest, "want out_refund_no and status (ABNORMAL|CLOSED)")
		return
	}
	if err := s.RefundFail(in.Provider, in.OutRefundNo, in.Status); err != nil {
		hookError(w, http.StatusConflict, "%v", err)
		return
	}
	writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) hookFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if !decodeHook(w, r, &f) {
		return
	}
	if err := s.InjectFault(f); err != nil {
		hookError(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
}
