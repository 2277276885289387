package paysim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/kioskpay/kioskpay/payment"
)

// The /_sim/ hooks (docs/contract.md §7): JSON in, {"ok":true} or
// {"error":"…"} out. 400 means the request itself is wrong, 409 that the
// simulator's state does not allow it.

type scanHook struct {
	Provider   payment.ProviderName `json:"provider"`
	OutTradeNo string               `json:"out_trade_no"`
}

type payHook struct {
	Provider   payment.ProviderName `json:"provider"`
	OutTradeNo string               `json:"out_trade_no"`
	Payment
}

type refundHook struct {
	Provider    payment.ProviderName `json:"provider"`
	OutRefundNo string               `json:"out_refund_no"`
}

type refundFailHook struct {
	refundHook
	Status RefundStatus `json:"status"`
}

func (s *Server) handleHooks() {
	s.mux.HandleFunc("POST /_sim/scan", hook(func(in scanHook) (int, error) {
		switch {
		case in.OutTradeNo == "":
			return http.StatusBadRequest, errors.New("out_trade_no is required")
		case in.Provider != "" && !knownProvider(in.Provider):
			return http.StatusBadRequest, fmt.Errorf("provider %q: want wxpay, alipay or none (every provider that has the order)", in.Provider)
		}
		return http.StatusConflict, s.ScanAt(in.Provider, in.OutTradeNo)
	}))
	s.mux.HandleFunc("POST /_sim/pay", hook(func(in payHook) (int, error) {
		if in.OutTradeNo == "" || !knownProvider(in.Provider) {
			return http.StatusBadRequest, errors.New("want provider (wxpay|alipay) and out_trade_no")
		}
		// What needs no order is a 400; PayWith checks the rest (409).
		if err := in.Payment.Validate(); err != nil {
			return http.StatusBadRequest, err
		}
		return http.StatusConflict, s.PayWith(in.Provider, in.OutTradeNo, in.Payment)
	}))
	s.mux.HandleFunc("POST /_sim/refund-complete", hook(func(in refundHook) (int, error) {
		return http.StatusConflict, s.RefundComplete(in.Provider, in.OutRefundNo)
	}))
	s.mux.HandleFunc("POST /_sim/refund-fail", hook(func(in refundFailHook) (int, error) {
		if in.OutRefundNo == "" || (in.Status != RefundAbnormal && in.Status != RefundClosed) {
			return http.StatusBadRequest, errors.New("want out_refund_no and status (ABNORMAL|CLOSED)")
		}
		return http.StatusConflict, s.RefundFail(in.Provider, in.OutRefundNo, in.Status)
	}))
	s.mux.HandleFunc("POST /_sim/fault", hook(func(f Fault) (int, error) {
		return http.StatusBadRequest, s.InjectFault(f)
	}))
	s.mux.HandleFunc("DELETE /_sim/fault", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	s.mux.HandleFunc("GET /_sim/stats", func(w http.ResponseWriter, r *http.Request) { writeHookJSON(w, http.StatusOK, s.Stats()) })
	s.mux.HandleFunc("GET /_sim/orders", func(w http.ResponseWriter, r *http.Request) { writeHookJSON(w, http.StatusOK, s.Orders()) })
}

// hook serves a POST hook: it decodes the body into In, unknown fields
// refused, and runs do, whose status is the answer's when it fails.
func hook[In any](do func(In) (status int, err error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		d := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		d.DisallowUnknownFields()
		if err := d.Decode(&in); err != nil {
			writeHookJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("bad JSON body: %v", err)})
			return
		}
		if status, err := do(in); err != nil {
			writeHookJSON(w, status, map[string]any{"error": err.Error()})
			return
		}
		writeHookJSON(w, http.StatusOK, map[string]any{"ok": true})
	}
}

func writeHookJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
