package proof

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// AckPolicy is what the controller does with a paid result.
type AckPolicy string

// Ack policies: deliver and ack ok, fail the delivery (ack ok=false, refund
// expected), or never answer (refund after unlock.ack_timeout expected).
const (
	AckOK    AckPolicy = "ok"
	AckFail  AckPolicy = "fail"
	AckNever AckPolicy = "never"
)

// Order is everything the controller and the customer did and saw for one
// out_trade_no.
type Order struct {
	OutTradeNo string
	Device     string
	Provider   string // requested: wxpay, alipay, any
	Total      int64
	Scenario   string
	Ack        AckPolicy
	CreatedAt  time.Time
	// ExpireSeconds is the create's data.expire_seconds (0: the daemon's
	// payment.expire).
	ExpireSeconds int

	// Requests maps each request_id sent for this order to its command
	// suffix; every one must get a reply.
	Requests map[string]string
	// CreateOK is set once a create reply with code 0 arrived.
	CreateOK bool
	// Payments the customer made that the simulator accepted.
	Payments []Payment
	// OperatorRefund is the refund_fee of an operator refund the daemon
	// accepted (code 0).
	OperatorRefund int64
	// Results seen, in arrival order; PaidSeqs are the seqs of distinct
	// paid outcomes, Unlocked those the controller acted upon.
	Results  []testrig.Result
	PaidSeqs map[uint64]bool
	Unlocked map[uint64]bool
	// WrongAmount: the provider holds an order of another total (the
	// customer paid a colliding order); the order must never unlock.
	WrongAmount bool
}

// Payment is one successful /_sim/pay: Amount is the order total the
// provider recorded, Discount what a coupon took off the buyer's share.
type Payment struct {
	Provider string
	Amount   int64
	Discount int64
	At       time.Time
}

// Ledger is the test controller's book of orders. It is safe for
// concurrent use.
type Ledger struct {
	mu     sync.Mutex
	orders map[string]*Order
	keys   []string
	// Unknown lists results for out_trade_nos the ledger never created.
	unknown []testrig.Result
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{orders: map[string]*Order{}} }

// Add records a new order before its create is published.
func (l *Ledger) Add(o *Order) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o.Requests == nil {
		o.Requests = map[string]string{}
	}
	o.PaidSeqs, o.Unlocked = map[uint64]bool{}, map[uint64]bool{}
	if o.CreatedAt.IsZero() {
		o.CreatedAt = time.Now()
	}
	l.orders[o.OutTradeNo] = o
	l.keys = append(l.keys, o.OutTradeNo)
}

// Update runs fn on order otn under the ledger's lock; false if unknown.
func (l *Ledger) Update(otn string, fn func(o *Order)) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.orders[otn]
	if o == nil {
		return false
	}
	fn(o)
	return true
}

// Get returns a copy of order otn.
func (l *Ledger) Get(otn string) (Order, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.orders[otn]
	if o == nil {
		return Order{}, false
	}
	return o.clone(), true
}

func (o *Order) clone() Order {
	c := *o
	c.Requests = map[string]string{}
	for k, v := range o.Requests {
		c.Requests[k] = v
	}
	c.Payments = append([]Payment(nil), o.Payments...)
	c.Results = append([]testrig.Result(nil), o.Results...)
	c.PaidSeqs, c.Unlocked = map[uint64]bool{}, map[uint64]bool{}
	for k := range o.PaidSeqs {
		c.PaidSeqs[k] = true
	}
	for k := range o.Unlocked {
		c.Unlocked[k] = true
	}
	return c
}

// Orders returns copies of every order, in creation order.
func (l *Ledger) Orders() []Order {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Order, 0, len(l.keys))
	for _, k := range l.keys {
		out = append(out, l.orders[k].clone())
	}
	return out
}

// Decision is what the controller does with one result.
type Decision struct {
	Ack    bool // publish an ack at all
	OK     bool
	Reason string
	// Unlock: this result starts the service now (a paid outcome seen for
	// the first time, with policy ok).
	Unlock bool
}

// OnResult books a result and decides the controller's answer, the way a
// controller that dedupes by out_trade_no does (docs/contract.md §4): a paid result
// re-sent with the same seq gets the same answer and no second unlock; a
// paid outcome with a new seq is booked (Check reports it) but never
// unlocks a second time.
func (l *Ledger) OnResult(r testrig.Result) Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.orders[r.OutTradeNo]
	if o == nil {
		l.unknown = append(l.unknown, r)
		return Decision{Ack: true, OK: false, Reason: "unknown order"}
	}
	o.Results = append(o.Results, r)
	if r.Status != "paid" {
		// Not an unlock: the ack only stops re-publication. ok=false so it
		// can never be mistaken for a delivery.
		return Decision{Ack: true, OK: false, Reason: "received " + string(r.Status)}
	}
	first := !o.PaidSeqs[r.Seq]
	o.PaidSeqs[r.Seq] = true
	switch o.Ack {
	case AckNever:
		return Decision{}
	case AckFail:
		return Decision{Ack: true, OK: false, Reason: "service failed"}
	}
	if first && len(o.Unlocked) == 0 {
		o.Unlocked[r.Seq] = true
		return Decision{Ack: true, OK: true, Unlock: true}
	}
	if first {
		// A second, different paid outcome for an order already
		// delivered: a deduping controller does not unlock again, but it
		// is booked as a distinct outcome acted upon, which Check reports.
		o.Unlocked[r.Seq] = true
	}
	return Decision{Ack: true, OK: true}
}

// Violation is one broken invariant.
type Violation struct {
	Kind       string
	OutTradeNo string
	Detail     string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %s: %s", v.Kind, v.OutTradeNo, v.Detail)
}

// Violation kinds.
const (
	VUnlockedTwice   = "unlocked_twice"     // two distinct paid outcomes acted upon
	VFalsePaid       = "false_paid"         // paid result without a matching payment at the provider
	VKeptNoDelivery  = "kept_no_delivery"   // money kept for a service not delivered
	VDeliveredLoss   = "delivered_refunded" // delivered, yet the payment went back
	VRefundTwice     = "refund_twice"       // more refunds at the provider than payments to return
	VPendingLost     = "pending_forgotten"  // not settled after its deadline, or a leg left payable
	VPaidNoOutcome   = "paid_no_outcome"    // paid but neither delivered nor refunded
	VOrderLost       = "order_lost"         // the daemon no longer knows an order it confirmed
	VNoReply         = "no_reply"           // a command never got its reply
	VUnknownResult   = "unknown_result"     // a result for an order nobody created
	VDaemonCrashed   = "daemon_crashed"     // the daemon exited on its own
	VResultMalformed = "result_malformed"   // a result that disagrees with the order
)

// DaemonView is the daemon's own answer to a query for an order.
type DaemonView struct {
	Found bool
	State string
}

// Live reports whether a daemon state still has work to do (docs/contract.md §4).
func Live(state string) bool {
	switch state {
	case "creating", "pending", "closing", "paid", "refunding":
		return true
	}
	return false
}

// openAtProvider: provider states in which the customer can still pay.
func openAtProvider(state string) bool {
	switch state {
	case "NOTPAY", "WAIT_BUYER_PAY", "PRECREATED", "USERPAYING":
		return true
	}
	return false
}

// Check evaluates every invariant of one order, given the simulator's legs
// and the daemon's view. final means the order is past its deadline and
// everything must have settled; before that only the safety invariants
// (which no later event can repair) are checked.
func Check(o Order, legs []paysim.OrderInfo, d DaemonView, replies func(id string) int, final bool) []Violation {
	var vs []Violation
	add := func(kind, format string, args ...any) {
		vs = append(vs, Violation{Kind: kind, OutTradeNo: o.OutTradeNo, Detail: fmt.Sprintf(format, args...)})
	}
	// The money rule: a leg counts by the order total the provider holds
	// for it, whatever coupons took off the buyer's share (refunds are in
	// the same units); only a paid leg whose total is the order's may
	// unlock.
	var paid, refunded int64
	exact := false
	refundsOn := map[string]int{}
	for _, l := range legs {
		if l.Paid+l.Discount > 0 {
			paid += int64(l.Total)
			if int64(l.Total) == o.Total {
				exact = true
			}
		}
		refunded += int64(l.Refunded)
		for _, r := range l.Refunds {
			if r.Status != "CLOSED" {
				refundsOn[string(l.Provider)]++
			}
		}
	}
	kept := paid - refunded

	// Safety: these can never be repaired later.
	if len(o.Unlocked) > 1 {
		add(VUnlockedTwice, "%d distinct paid outcomes acted upon (seqs %v)", len(o.Unlocked), keys(o.Unlocked))
	} else if len(o.PaidSeqs) > 1 {
		add(VUnlockedTwice, "%d distinct paid outcomes published (seqs %v)", len(o.PaidSeqs), keys(o.PaidSeqs))
	}
	for _, r := range o.Results {
		if r.Status == "paid" && (!exact || o.WrongAmount) {
			add(VFalsePaid, "paid result seq %d, but the provider holds paid orders totalling %d for an order of %d", r.Seq, paid, o.Total)
			break
		}
		if int64(r.TotalFee) != o.Total {
			add(VResultMalformed, "result seq %d carries total_fee %d, order is %d", r.Seq, r.TotalFee, o.Total)
			break
		}
	}
	for _, l := range legs {
		allowed := 0
		for _, p := range o.Payments {
			if p.Provider == string(l.Provider) {
				allowed = 1 // one return per paid leg …
			}
		}
		if o.OperatorRefund > 0 {
			allowed++ // … plus the operator's
		}
		if n := refundsOn[string(l.Provider)]; n > allowed {
			add(VRefundTwice, "%s has %d refunds for an order of %d (buyer paid %d)", l.Provider, n, l.Total, l.Paid)
		}
	}
	if !final {
		return vs
	}

	// Liveness: by now every outcome must be settled.
	if o.CreateOK && !d.Found {
		add(VOrderLost, "create confirmed, daemon answers ORDER_NOT_FOUND")
	}
	if d.Found && Live(d.State) {
		if d.State == "paid" {
			add(VPaidNoOutcome, "daemon still in state paid")
		} else {
			add(VPendingLost, "daemon still in state %s after the deadline", d.State)
		}
	}
	if d.Found && !Live(d.State) {
		for _, l := range legs {
			if openAtProvider(l.State) {
				add(VPendingLost, "daemon says %s but the %s order is still %s (payable)", d.State, l.Provider, l.State)
			}
		}
	}
	delivered := len(o.Unlocked) > 0
	want := int64(0)
	if delivered {
		want = o.Total - o.OperatorRefund
	}
	switch {
	case kept > want && !delivered:
		add(VKeptNoDelivery, "kept %d fen (paid %d, refunded %d) without delivery; daemon state %s", kept, paid, refunded, d.State)
	case kept > want:
		add(VKeptNoDelivery, "kept %d fen for a %d fen delivery (paid %d, refunded %d)", kept, want, paid, refunded)
	case kept < want:
		add(VDeliveredLoss, "delivered, but kept only %d of %d fen (paid %d, refunded %d); daemon state %s", kept, want, paid, refunded, d.State)
	}
	for id, cmd := range o.Requests {
		if replies(id) == 0 {
			add(VNoReply, "%s request %s never got a reply", cmd, id)
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Kind < vs[j].Kind })
	return vs
}

// UnknownResults returns results for orders the ledger never created.
func (l *Ledger) UnknownResults() []testrig.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]testrig.Result(nil), l.unknown...)
}

func keys(m map[uint64]bool) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
