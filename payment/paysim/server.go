// Package paysim simulates the Alipay OpenAPI gateway and WeChat Pay APIv3
// closely enough that the official SDKs cannot tell the difference: requests
// are signature-checked and rejected with the real error codes, responses are
// signed the way each SDK verifies them, and orders follow the providers'
// state machines. It also sends signed notifications and offers /_sim/ hooks
// to pay, scan, complete refunds and inject faults.
//
// A Server is an http.Handler, so tests run it under httptest.NewServer and
// cmd/paysim serves it on a port.
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
	// Logger receives one line per API call; nil discards.
	Logger *slog.Logger
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

	mu     sync.Mutex
	stats  map[string]int
	faults []*fault

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
	s := &Server{opts: opts, log: opts.Logger, keys: opts.Keys, mux: http.NewServeMux(), stats: map[string]int{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.alipay = newAlipaySim(s)
	s.wxpay = newWxpaySim(s)
	s.mux.HandleFunc("POST /gateway.do", s.alipay.serveGateway)
	s.mux.Handle("/v3/", http.HandlerFunc(s.wxpay.serveAPI))
	s.mux.HandleFunc("POST /_sim/scan", s.hookScan)
	s.mux.HandleFunc("POST /_sim/pay", s.hookPay)
	s.mux.HandleFunc("POST /_sim/refund-complete", s.hookRefundComplete)
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

// Close stops notification deliveries in flight and waits for them.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// Scan simulates an Alipay buyer scanning the QR code: the trade now exists
// in WAIT_BUYER_PAY.
func (s *Server) Scan(outTradeNo string) error { return s.alipay.scan(outTradeNo) }

// Pay simulates the buyer paying amount (0 = the order's amount) and sends
// the payment notification. For Alipay an unscanned order is scanned first.
func (s *Server) Pay(provider payment.ProviderName, outTradeNo string, amount payment.Fen) error {
	switch provider {
	case payment.Alipay:
		return s.alipay.pay(outTradeNo, amount)
	case payment.WxPay:
		return s.wxpay.pay(outTradeNo, amount)
	}
	return fmt.Errorf("unknown provider %q", provider)
}

// RefundComplete makes a processing refund succeed.
func (s *Server) RefundComplete(provider payment.ProviderName, outRefundNo string) error {
	switch provider {
	case payment.Alipay:
		return s.alipay.refundComplete(outRefundNo)
	case payment.WxPay:
		return s.wxpay.refundComplete(outRefundNo)
	}
	return fmt.Errorf("unknown provider %q", provider)
}

// OrderInfo is one simulated order as /_sim/orders reports it.
type OrderInfo struct {
	Provider      payment.ProviderName `json:"provider"`
	OutTradeNo    string               `json:"out_trade_no"`
	State         string               `json:"state"` // the provider's own name: NOTPAY, TRADE_SUCCESS, PRECREATED…
	Total         payment.Fen          `json:"total"`
	Paid          payment.Fen          `json:"paid"`
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
	Status      string      `json:"status"` // SUCCESS, PROCESSING, CLOSED
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

// Fault kinds (SPEC §6).
const (
	Fault5xx       = "5xx"
	FaultTimeout   = "timeout"
	FaultBadSign   = "bad_sign"
	FaultStaleTS   = "stale_ts"
	FaultRateLimit = "rate_limit"
)

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
	switch f.Kind {
	case Fault5xx, FaultTimeout, FaultBadSign, FaultStaleTS, FaultRateLimit:
	default:
		return fmt.Errorf("kind %q: want one of 5xx, timeout, bad_sign, stale_ts, rate_limit", f.Kind)
	}
	if f.Provider != "" && f.Provider != payment.Alipay && f.Provider != payment.WxPay {
		return fmt.Errorf("provider %q: want wxpay, alipay or empty", f.Provider)
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
	s.wg.Add(1)
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
				s.log.Info("notification not delivered", "kind", kind, "attempt", attempt+1, "err", err)
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if accepted(resp, body) {
				s.log.Info("notification delivered", "kind", kind, "attempt", attempt+1)
				return
			}
			s.log.Info("notification refused", "kind", kind, "attempt", attempt+1, "status", resp.StatusCode)
		}
	}()
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
		OutTradeNo string `json:"out_trade_no"`
	}
	if !decodeHook(w, r, &in) {
		return
	}
	if in.OutTradeNo == "" {
		hookError(w, http.StatusBadRequest, "out_trade_no is required")
		return
	}
	if err := s.Scan(in.OutTradeNo); err != nil {
		hookError(w, http.StatusConflict, "%v", err)
		return
	}
	writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) hookPay(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Provider   payment.ProviderName `json:"provider"`
		OutTradeNo string               `json:"out_trade_no"`
		Amount     payment.Fen          `json:"amount"`
	}
	if !decodeHook(w, r, &in) {
		return
	}
	if in.OutTradeNo == "" || (in.Provider != payment.Alipay && in.Provider != payment.WxPay) {
		hookError(w, http.StatusBadRequest, "want provider (wxpay|alipay) and out_trade_no")
		return
	}
	if in.Amount < 0 {
		hookError(w, http.StatusBadRequest, "amount must be positive fen")
		return
	}
	if err := s.Pay(in.Provider, in.OutTradeNo, in.Amount); err != nil {
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
