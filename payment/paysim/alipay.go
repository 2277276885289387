package paysim

import (
	"fmt"
	"net/http"

	"github.com/kioskpay/kioskpay/payment"
)

// alipaySim simulates the Alipay OpenAPI gateway. (Stub: being written.)
type alipaySim struct{ s *Server }

func newAlipaySim(s *Server) *alipaySim { return &alipaySim{s: s} }

func (a *alipaySim) serveGateway(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "not implemented", http.StatusNotImplemented)
}
func (a *alipaySim) scan(outTradeNo string) error { return fmt.Errorf("not implemented") }
func (a *alipaySim) pay(outTradeNo string, amount payment.Fen) error {
	return fmt.Errorf("not implemented")
}
func (a *alipaySim) refundComplete(outRefundNo string) error { return fmt.Errorf("not implemented") }
func (a *alipaySim) orders() []OrderInfo                     { return nil }
