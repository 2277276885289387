package proof

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
)

// Targeted races the crash harness found or aims at, each a few seconds
// against the real daemon. KIOSKPAY_PROOF=1 runs them.
func TestScenarios(t *testing.T) {
	if os.Getenv("KIOSKPAY_PROOF") == "" {
		t.Skip("set KIOSKPAY_PROOF=1 to run the subprocess scenarios")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t, ctx, testrig.SimOptions{RefundDelay: 200 * time.Millisecond}, map[string]any{
		"payment.poll":       "2s",
		"unlock.ack_timeout": "4s",
	})
	for _, p := range []string{"wxpay", "alipay", "any"} {
		t.Run("cancel right after an undetected payment/"+p, func(t *testing.T) {
			// The customer pays; before the next poll sees it, the
			// controller cancels. The close must find the payment: the
			// order ends paid (delivered) or refunded, never cancelled
			// with the money kept.
			o := &Order{OutTradeNo: newOTN(), Provider: p, Total: 1234, Scenario: "cancel-race", Ack: AckOK}
			if r, ok := waitReply(ctx, w.create(o), 10*time.Second); !ok || r.Code != 0 {
				t.Fatalf("create: %+v", r)
			}
			prov := payment.WxPay
			if p == "alipay" {
				prov = payment.Alipay
			}
			if !w.pay(o.OutTradeNo, prov, 0) {
				t.Fatal("sim refused the payment")
			}
			w.command(o.OutTradeNo, "pay/cancel", map[string]any{})
			if vs := w.settle(o.OutTradeNo, time.Now().Add(20*time.Second)); len(vs) > 0 {
				v, _ := w.daemonView(o.OutTradeNo)
				t.Errorf("daemon state %s; violations: %v", v.State, vs)
			}
		})
	}

	t.Run("kill between provider create and its commit, pay, cancel", func(t *testing.T) {
		// The customer pays the instant the provider has the order, the
		// daemon dies before it committed the create's outcome, and the
		// controller cancels as soon as the order shows as pending again.
		for i := 0; i < envInt("KIOSKPAY_PROOF_REPEAT", 10); i++ {
			o := &Order{OutTradeNo: newOTN(), Provider: []string{"wxpay", "alipay", "any"}[i%3], Total: 1234, Scenario: "kill-create-pay-cancel", Ack: AckOK}
			w.create(o)
			for deadline := time.Now().Add(10 * time.Second); len(w.legs(o.OutTradeNo)) == 0; {
				if time.Now().After(deadline) {
					t.Fatal("provider never saw the create")
				}
				time.Sleep(time.Millisecond)
			}
			w.pay(o.OutTradeNo, w.legs(o.OutTradeNo)[0], 0)
			time.Sleep(time.Duration(i%4) * time.Millisecond)
			if err := w.d.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := w.d.Start(); err != nil {
				t.Fatal(err)
			}
			w.waitState(o.OutTradeNo, "pending", 3*time.Second)
			w.command(o.OutTradeNo, "pay/cancel", map[string]any{})
			if vs := w.settle(o.OutTradeNo, time.Now().Add(20*time.Second)); len(vs) > 0 {
				v, _ := w.daemonView(o.OutTradeNo)
				t.Errorf("%s (%s): daemon state %s; violations: %v", o.OutTradeNo, o.Provider, v.State, vs)
			}
		}
	})
}
