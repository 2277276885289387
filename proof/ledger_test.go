package proof

import (
	"testing"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// The checker is what the crash harness and the soak trust: it must flag
// every broken invariant and nothing else.
func TestCheck(t *testing.T) {
	const otn = "order_000001"
	leg := func(p payment.ProviderName, state string, paid, refunded int64, refunds ...paysim.RefundStatus) paysim.OrderInfo {
		l := paysim.OrderInfo{Provider: p, OutTradeNo: otn, State: state, Total: 1000, Paid: payment.Fen(paid), Refunded: payment.Fen(refunded)}
		for _, st := range refunds {
			l.Refunds = append(l.Refunds, paysim.RefundInfo{OutRefundNo: "r", Amount: 1000, Status: st})
		}
		return l
	}
	total := func(l paysim.OrderInfo, t int64) paysim.OrderInfo { l.Total = payment.Fen(t); return l }
	discounted := func(l paysim.OrderInfo, d int64) paysim.OrderInfo { l.Discount = payment.Fen(d); return l }
	order := func(mod func(o *Order)) Order {
		l := NewLedger()
		o := &Order{OutTradeNo: otn, Total: 1000, Ack: AckOK, CreateOK: true}
		l.Add(o)
		l.Update(otn, func(o *Order) { mod(o) })
		got, _ := l.Get(otn)
		return got
	}
	paidOnce := func(o *Order) {
		o.Payments = []Payment{{Provider: "wxpay", Amount: 1000}}
		o.Results = []testrig.Result{{Result: contract.Result{OutTradeNo: otn, Status: "paid", TotalFee: 1000, Seq: 7}}}
		o.PaidSeqs[7] = true
	}
	delivered := func(o *Order) { paidOnce(o); o.Unlocked[7] = true }
	noReplies := func(string) int { return 0 }
	oneReply := func(string) int { return 1 }

	tests := []struct {
		name    string
		o       Order
		legs    []paysim.OrderInfo
		d       DaemonView
		replies func(string) int
		final   bool
		want    []string
	}{
		{"delivered", order(delivered), []paysim.OrderInfo{leg("wxpay", "SUCCESS", 1000, 0)}, DaemonView{true, "delivered"}, oneReply, true, nil},
		{"refunded after failed ack", order(func(o *Order) { paidOnce(o); o.Ack = AckFail }),
			[]paysim.OrderInfo{leg("wxpay", "REFUND", 1000, 1000, "SUCCESS")}, DaemonView{true, "refunded"}, oneReply, true, nil},
		{"cancelled unpaid", order(func(o *Order) {}), []paysim.OrderInfo{leg("wxpay", "CLOSED", 0, 0)}, DaemonView{true, "cancelled"}, oneReply, true, nil},
		{"money kept without delivery", order(func(o *Order) { o.Payments = []Payment{{Provider: "wxpay", Amount: 1000}} }),
			[]paysim.OrderInfo{leg("wxpay", "SUCCESS", 1000, 0)}, DaemonView{true, "cancelled"}, oneReply, true, []string{VKeptNoDelivery}},
		{"second payment kept", order(func(o *Order) {
			delivered(o)
			o.Payments = append(o.Payments, Payment{Provider: "alipay", Amount: 1000})
		}), []paysim.OrderInfo{leg("wxpay", "SUCCESS", 1000, 0), leg("alipay", "TRADE_SUCCESS", 1000, 0)}, DaemonView{true, "delivered"}, oneReply, true, []string{VKeptNoDelivery}},
		{"unlocked twice", order(func(o *Order) { delivered(o); o.PaidSeqs[9], o.Unlocked[9] = true, true }),
			[]paysim.OrderInfo{leg("wxpay", "SUCCESS", 1000, 0)}, DaemonView{true, "delivered"}, oneReply, false, []string{VUnlockedTwice}},
		{"two paid outcomes, one acted on", order(func(o *Order) { delivered(o); o.PaidSeqs[9] = true }),
			[]paysim.OrderInfo{leg("wxpay", "SUCCESS", 1000, 0)}, DaemonView{true, "delivered"}, oneReply, false, []string{VUnlockedTwice}},
		{"false paid", order(func(o *Order) {
			o.Results = []testrig.Result{{Result: contract.Result{OutTradeNo: otn, Status: "paid", TotalFee: 1000, Seq: 1}}}
		}), []paysim.OrderInfo{leg("wxpay", "NOTPAY", 0, 0)}, DaemonView{}, oneReply, false, []string{VFalsePaid}},
		{"other provider total paid out", order(func(o *Order) {
			o.WrongAmount = true
			o.Results = []testrig.Result{{Result: contract.Result{OutTradeNo: otn, Status: "paid", TotalFee: 1000, Seq: 1}}}
		}), []paysim.OrderInfo{total(leg("wxpay", "SUCCESS", 999, 0), 999)}, DaemonView{}, oneReply, false, []string{VFalsePaid}},
		{"other provider total refunded in full", order(func(o *Order) {
			o.WrongAmount = true
			o.Payments = []Payment{{Provider: "wxpay", Amount: 1001}}
		}), []paysim.OrderInfo{total(leg("wxpay", "REFUND", 1001, 1001, "SUCCESS"), 1001)}, DaemonView{true, "refunded"}, oneReply, true, nil},
		// The money rule: a coupon lowers what the buyer paid, not the
		// order total at the provider, which is what is delivered and
		// refunded.
		{"discounted payment delivered", order(delivered), []paysim.OrderInfo{discounted(leg("wxpay", "SUCCESS", 850, 0), 150)},
			DaemonView{true, "delivered"}, oneReply, true, nil},
		{"coupon paid in full delivered", order(delivered), []paysim.OrderInfo{discounted(leg("wxpay", "SUCCESS", 0, 0), 1000)},
			DaemonView{true, "delivered"}, oneReply, true, nil},
		{"discounted payment refunded at the order total", order(func(o *Order) { paidOnce(o); o.Ack = AckFail }),
			[]paysim.OrderInfo{discounted(leg("wxpay", "REFUND", 850, 1000, "SUCCESS"), 150)}, DaemonView{true, "refunded"}, oneReply, true, nil},
		{"discounted payment kept without delivery", order(func(o *Order) { o.Payments = []Payment{{Provider: "alipay", Amount: 1000, Discount: 150}} }),
			[]paysim.OrderInfo{discounted(leg("alipay", "TRADE_SUCCESS", 850, 0), 150)}, DaemonView{true, "cancelled"}, oneReply, true, []string{VKeptNoDelivery}},
		{"refund twice", order(func(o *Order) { paidOnce(o); o.Ack = AckFail }),
			[]paysim.OrderInfo{leg("wxpay", "REFUND", 1000, 1000, "SUCCESS", "PROCESSING")}, DaemonView{}, oneReply, false, []string{VRefundTwice}},
		{"operator refund is not a double refund", order(func(o *Order) { delivered(o); o.OperatorRefund = 1000 }),
			[]paysim.OrderInfo{leg("wxpay", "REFUND", 1000, 1000, "SUCCESS")}, DaemonView{true, "refunded"}, oneReply, true, nil},
		{"pending forgotten", order(func(o *Order) {}), []paysim.OrderInfo{leg("wxpay", "NOTPAY", 0, 0)}, DaemonView{true, "pending"}, oneReply, true, []string{VPendingLost}},
		{"leg left payable", order(func(o *Order) {}), []paysim.OrderInfo{leg("alipay", "WAIT_BUYER_PAY", 0, 0)}, DaemonView{true, "cancelled"}, oneReply, true, []string{VPendingLost}},
		{"paid without outcome", order(paidOnce), []paysim.OrderInfo{leg("wxpay", "SUCCESS", 1000, 0)}, DaemonView{true, "paid"}, oneReply, true, []string{VKeptNoDelivery, VPaidNoOutcome}},
		{"delivered then refunded", order(delivered), []paysim.OrderInfo{leg("wxpay", "REFUND", 1000, 1000, "SUCCESS")}, DaemonView{true, "refunded"}, oneReply, true, []string{VDeliveredLoss}},
		{"order lost", order(func(o *Order) {}), nil, DaemonView{}, oneReply, true, []string{VOrderLost}},
		{"no reply", order(func(o *Order) { o.Requests["r-1"] = "pay/create"; o.CreateOK = false }), nil, DaemonView{}, noReplies, true, []string{VNoReply}},
		{"not final: liveness waits", order(paidOnce), []paysim.OrderInfo{leg("wxpay", "SUCCESS", 1000, 0)}, DaemonView{true, "paid"}, noReplies, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs := Check(tc.o, tc.legs, tc.d, tc.replies, tc.final)
			var got []string
			for _, v := range vs {
				got = append(got, v.Kind)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v (%v)", got, tc.want, vs)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v (%v)", got, tc.want, vs)
				}
			}
		})
	}
}

func TestLedgerDedupesPaidResults(t *testing.T) {
	l := NewLedger()
	l.Add(&Order{OutTradeNo: "order_000002", Total: 500, Ack: AckOK})
	r := testrig.Result{Result: contract.Result{OutTradeNo: "order_000002", Status: "paid", TotalFee: 500, Seq: 3}}
	if d := l.OnResult(r); !d.Unlock || !d.OK || !d.Ack {
		t.Fatalf("first paid result: %+v, want an unlock and ack ok", d)
	}
	if d := l.OnResult(r); d.Unlock || !d.OK || !d.Ack {
		t.Fatalf("re-sent paid result: %+v, want ack ok without a second unlock", d)
	}
	r.Seq = 4
	if d := l.OnResult(r); d.Unlock {
		t.Fatalf("second paid outcome unlocked again: %+v", d)
	}
	o, _ := l.Get("order_000002")
	if len(o.Unlocked) != 2 || len(o.PaidSeqs) != 2 {
		t.Fatalf("booked %d unlocks, %d paid seqs; want 2 and 2 so Check reports it", len(o.Unlocked), len(o.PaidSeqs))
	}
	if d := l.OnResult(testrig.Result{Result: contract.Result{OutTradeNo: "nobody_s_order", Status: "paid"}}); d.Unlock {
		t.Fatal("unknown order unlocked")
	}
	if len(l.UnknownResults()) != 1 {
		t.Fatal("unknown result not booked")
	}
}
