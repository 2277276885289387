package paysim

import (
	"fmt"
	"net/http"

	"github.com/kioskpay/kioskpay/payment"
)

// wxpaySim simulates the WeChat Pay APIv3. (Stub: being written.)
type wxpaySim struct{ s *Server }

func newWxpaySim(s *Server) *wxpaySim { return &wxpaySim{s: s} }

func (a *wxpaySim) serveAPI(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "not implemented", http.StatusNotImplemented)
}
func (a *wxpaySim) pay(outTradeNo string, amount payment.Fen) error {
	return fmt.Errorf("not implemented")
}
func (a *wxpaySim) refundComplete(outRefundNo string) error { return fmt.Errorf("not implemented") }
func (a *wxpaySim) orders() []OrderInfo                     { return nil }
