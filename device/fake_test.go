package device

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/kioskpay/kioskpay/payment"
)

// fakeProvider is an in-memory payment.Provider the tests control exactly:
// payments, faults, and the race where a payment lands between the final
// query and the close.
type fakeProvider struct {
	name   payment.ProviderName
	secret []byte

	mu      sync.Mutex
	orders  map[string]*fakeOrder
	refunds map[string]*fakeRefund
	faults  map[string][]error // op → errors returned by the next calls
	calls   map[string]int
	// payOnClose pays the order (its total) just before Close runs: the
	// "paid between query and close" race.
	payOnClose map[string]bool
	// refundOnClose makes Close refund a paid order (Alipay cancel
	// action=refund) instead of reporting it paid.
	refundOnClose bool
	// refundsProcess leaves refunds processing until completeRefunds.
	refundsProcess bool
	// refundsEnd, when set, is the state a refund reaches instead of
	// success (RefundAbnormal, RefundClosed).
	refundsEnd payment.RefundState
	// createGate, when set, holds Create until it is closed or the
	// caller's context ends (a crash mid-create).
	createGate chan struct{}
}

type fakeOrder struct {
	total   payment.Fen
	subject string
	state   payment.State
	amount  payment.Amounts // set when paid
	scanned bool
	txid    string
	closed  bool
}

type fakeRefund struct {
	otn    string
	amount payment.Fen
	state  payment.RefundState
}

func newFake(name payment.ProviderName) *fakeProvider {
	return &fakeProvider{
		name: name, secret: []byte("notify-secret-" + string(name)),
		orders: map[string]*fakeOrder{}, refunds: map[string]*fakeRefund{},
		faults: map[string][]error{}, calls: map[string]int{}, payOnClose: map[string]bool{},
	}
}

var errFakeNetwork = errors.New("fake: connection reset")

func (f *fakeProvider) take(op string) error {
	f.calls[op]++
	q := f.faults[op]
	if len(q) == 0 {
		return nil
	}
	f.faults[op] = q[1:]
	return q[0]
}

func (f *fakeProvider) fault(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op] = append(f.faults[op], errs...)
}

func (f *fakeProvider) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeProvider) Name() payment.ProviderName { return f.name }

func (f *fakeProvider) Create(ctx context.Context, o payment.Order) (payment.Created, error) {
	f.mu.Lock()
	gate := f.createGate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return payment.Created{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.take("create"); err != nil {
		return payment.Created{}, err
	}
	if ex, ok := f.orders[o.OutTradeNo]; ok {
		if ex.total != o.Total || ex.subject != o.Subject {
			return payment.Created{}, &payment.RejectedError{Provider: f.name, Op: "create", Code: "CONTEXT_INCONSISTENT"}
		}
		if ex.closed {
			return payment.Created{}, &payment.RejectedError{Provider: f.name, Op: "create", Code: "TRADE_HAS_CLOSE"}
		}
	} else {
		st := payment.StateWaiting
		if f.name == payment.Alipay {
			st = payment.StateNotCreated
		}
		f.orders[o.OutTradeNo] = &fakeOrder{total: o.Total, subject: o.Subject, state: st}
	}
	return payment.Created{CodeURL: fmt.Sprintf("fake://%s/%s", f.name, o.OutTradeNo)}, nil
}

func (f *fakeProvider) status(o *fakeOrder) payment.Status {
	st := payment.Status{State: o.state, Scanned: o.scanned || f.name == payment.WxPay, TransactionID: o.txid}
	if o.state.WasPaid() {
		st.Amount = o.amount
	}
	return st
}

func (f *fakeProvider) Query(ctx context.Context, otn string) (payment.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.take("query"); err != nil {
		return payment.Status{}, err
	}
	o, ok := f.orders[otn]
	if !ok {
		return payment.Status{State: payment.StateNotCreated}, nil
	}
	return f.status(o), nil
}

func (f *fakeProvider) Close(ctx context.Context, otn string) (payment.Closed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.take("close"); err != nil {
		return payment.Closed{}, err
	}
	o, ok := f.orders[otn]
	if !ok {
		return payment.Closed{}, &payment.RejectedError{Provider: f.name, Op: "close", Code: "ORDER_NOT_EXIST"}
	}
	if f.payOnClose[otn] && o.state != payment.StatePaid {
		f.payLocked(o, otn, payment.Amounts{Total: o.total})
	}
	if o.state == payment.StatePaid {
		if f.refundOnClose {
			o.state = payment.StateClosed
			o.closed = true
			return payment.Closed{Refunded: true}, nil
		}
		return payment.Closed{Paid: true}, nil
	}
	o.state = payment.StateClosed
	o.closed = true
	return payment.Closed{}, nil
}

func (f *fakeProvider) Refund(ctx context.Context, r payment.RefundRequest) (payment.RefundStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.take("refund"); err != nil {
		return payment.RefundStatus{}, err
	}
	if err := r.CheckAmount(f.name); err != nil {
		return payment.RefundStatus{}, err
	}
	if ex, ok := f.refunds[r.OutRefundNo]; ok {
		return payment.RefundStatus{State: ex.state, RefundID: "rf-" + r.OutRefundNo, Amount: ex.amount}, nil
	}
	o, ok := f.orders[r.OutTradeNo]
	if !ok || !o.state.WasPaid() {
		return payment.RefundStatus{}, &payment.RejectedError{Provider: f.name, Op: "refund", Code: "TRADE_NOT_PAID"}
	}
	// Like WeChat, the total must be the provider's, and no refund may
	// take more than is left.
	left := o.amount.Total
	for _, x := range f.refunds {
		if x.otn == r.OutTradeNo && x.state != payment.RefundClosed {
			left -= x.amount
		}
	}
	if r.Total != o.amount.Total || r.Refund > left {
		return payment.RefundStatus{}, &payment.RejectedError{Provider: f.name, Op: "refund", Code: "INVALID_REQUEST",
			Message: fmt.Sprintf("refund %d of total %d, %d left (order total %d)", r.Refund, r.Total, left, o.amount.Total)}
	}
	st := payment.RefundSuccess
	switch {
	case f.refundsProcess:
		st = payment.RefundProcessing
	case f.refundsEnd != 0:
		st = f.refundsEnd
	}
	f.refunds[r.OutRefundNo] = &fakeRefund{otn: r.OutTradeNo, amount: r.Refund, state: st}
	o.state = payment.StateRefunded
	return payment.RefundStatus{State: st, RefundID: "rf-" + r.OutRefundNo, Amount: r.Refund}, nil
}

func (f *fakeProvider) QueryRefund(ctx context.Context, otn, outRefundNo string) (payment.RefundStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.take("query_refund"); err != nil {
		return payment.RefundStatus{}, err
	}
	r, ok := f.refunds[outRefundNo]
	if !ok {
		return payment.RefundStatus{State: payment.RefundNotFound}, nil
	}
	return payment.RefundStatus{State: r.state, RefundID: "rf-" + outRefundNo, Amount: r.amount}, nil
}

type fakeNotifyBody struct {
	OutTradeNo  string `json:"out_trade_no"`
	Paid        bool   `json:"paid"`
	OutRefundNo string `json:"out_refund_no,omitempty"` // a refund notification
}

func (f *fakeProvider) sign(body []byte) string {
	m := hmac.New(sha256.New, f.secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func (f *fakeProvider) ParseNotify(ctx context.Context, h http.Header, body []byte) (payment.Notification, error) {
	if !hmac.Equal([]byte(h.Get("X-Fake-Sig")), []byte(f.sign(body))) {
		return payment.Notification{}, errors.New("fake: bad notification signature")
	}
	var b fakeNotifyBody
	if err := json.Unmarshal(body, &b); err != nil {
		return payment.Notification{}, err
	}
	if b.OutRefundNo != "" {
		return payment.Notification{Kind: payment.NotifyRefund, OutTradeNo: b.OutTradeNo, OutRefundNo: b.OutRefundNo}, nil
	}
	return payment.Notification{Kind: payment.NotifyPayment, OutTradeNo: b.OutTradeNo, State: payment.StatePaid}, nil
}

// notifyPayload builds a P/pay/notify envelope, signed with the provider's
// secret unless forged.
func (f *fakeProvider) notifyPayload(otn string, forged bool) []byte {
	return f.envelope(fakeNotifyBody{OutTradeNo: otn, Paid: true}, forged)
}

// refundNotifyPayload builds a P/pay/notify envelope for a refund.
func (f *fakeProvider) refundNotifyPayload(otn, outRefundNo string) []byte {
	return f.envelope(fakeNotifyBody{OutTradeNo: otn, OutRefundNo: outRefundNo}, false)
}

func (f *fakeProvider) envelope(b fakeNotifyBody, forged bool) []byte {
	body, _ := json.Marshal(b)
	sig := f.sign(body)
	if forged {
		sig = f.sign([]byte("something else"))
	}
	env, _ := json.Marshal(map[string]any{"provider": f.name, "headers": map[string]string{"X-Fake-Sig": sig}, "body": string(body)})
	return env
}

func (f *fakeProvider) payLocked(o *fakeOrder, otn string, amount payment.Amounts) {
	o.state = payment.StatePaid
	o.amount = amount
	o.scanned = true
	o.txid = "tx-" + string(f.name) + "-" + otn
}

// pay makes the buyer pay an order whose total at the provider is total
// (0 = the order's own total; another value is a provider-side order with
// another total, such as an out_trade_no collision).
func (f *fakeProvider) pay(otn string, total payment.Fen) error {
	return f.payAmounts(otn, payment.Amounts{Total: total})
}

// payAmounts pays with the amounts the provider will report (a zero Total
// is the order's own total).
func (f *fakeProvider) payAmounts(otn string, a payment.Amounts) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[otn]
	if !ok {
		return fmt.Errorf("fake: no order %s", otn)
	}
	if a.Total == 0 {
		a.Total = o.total
	}
	// The fake, like lax providers, lets a closed order be paid late.
	f.payLocked(o, otn, a)
	return nil
}

func (f *fakeProvider) scan(otn string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o, ok := f.orders[otn]; ok {
		o.scanned = true
		if o.state == payment.StateNotCreated {
			o.state = payment.StateWaiting
		}
	}
}

func (f *fakeProvider) completeRefunds() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.refunds {
		if r.state == payment.RefundProcessing {
			r.state = payment.RefundSuccess
		}
	}
}

func (f *fakeProvider) refundTotal(otn string) (payment.Fen, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sum payment.Fen
	n := 0
	for _, r := range f.refunds {
		if r.otn == otn {
			sum += r.amount
			n++
		}
	}
	return sum, n
}

func (f *fakeProvider) state(otn string) payment.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o, ok := f.orders[otn]; ok {
		return o.state
	}
	return payment.StateUnknown
}
