package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"slices"
	"strconv"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// transitions is the order state machine (docs/contract.md §4): every allowed state
// change, in one place. writer.to refuses anything else.
var transitions = map[store.State][]store.State{
	"":                 {store.Creating},
	store.Creating:     {store.Pending, store.Closing, store.Failed, store.Paid, store.Refunding},
	store.Pending:      {store.Paid, store.Closing, store.Refunding},
	store.Closing:      {store.Paid, store.Refunding, store.Expired, store.Cancelled, store.Failed, store.Refunded},
	store.Paid:         {store.Delivered, store.Held, store.Refunding},
	store.Held:         {store.Delivered, store.Refunding},
	store.Delivered:    {store.Refunding},
	store.Refunding:    {store.Refunded, store.RefundFailed},
	store.Refunded:     {store.Refunding},
	store.RefundFailed: {store.Refunding},
	store.Expired:      {store.Refunding},
	store.Cancelled:    {store.Refunding},
	store.Failed:       {store.Refunding},
}

// Close reasons.
const (
	closeExpire       = "expire"
	closeCancel       = "cancel"
	closeSupersede    = "supersede"
	closeCreateFailed = "create_failed"
)

// errNoop aborts a change that turned out to change nothing; the
// transaction is rolled back and nothing is published.
var errNoop = errors.New("no change")

// errNotFound reports a missing order.
var errNotFound = errors.New("order not found")

// writer is one order's change inside one store transaction: state moves,
// events, results and replies all land in the same commit.
type writer struct {
	e           *Engine
	tx          *store.Tx
	o           *store.Order
	now         time.Time
	viewChanged bool
	enqueued    bool
}

// change loads an order, lets fn modify it and queue messages, and commits
// both at once. Observers and the link are told after the commit, never
// before: the side effect follows the durable record.
func (e *Engine) change(outTradeNo string, fn func(w *writer) error) (store.Order, error) {
	var out store.Order
	var w *writer
	err := e.db.Update(func(tx *store.Tx) error {
		o, ok, err := tx.Order(outTradeNo)
		if err != nil {
			return err
		}
		if !ok {
			return errNotFound
		}
		w = &writer{e: e, tx: tx, o: &o, now: e.now()}
		if err := fn(w); err != nil {
			return err
		}
		o.UpdatedAt = w.now
		o.Status = statusOf(&o)
		out = o
		return tx.PutOrder(o)
	})
	if errors.Is(err, errNoop) {
		return e.load(outTradeNo)
	}
	if err != nil {
		e.storageError(err)
		return out, err
	}
	e.afterCommit(w, out)
	return out, nil
}

// insert writes a new order the same way.
func (e *Engine) insert(o store.Order, fn func(w *writer) error) error {
	var w *writer
	err := e.db.Update(func(tx *store.Tx) error {
		w = &writer{e: e, tx: tx, o: &o, now: e.now()}
		if err := fn(w); err != nil {
			return err
		}
		o.UpdatedAt = w.now
		o.Status = statusOf(&o)
		return tx.PutOrder(o)
	})
	if err == nil {
		e.afterCommit(w, o)
	}
	e.storageError(err)
	return err
}

func (e *Engine) afterCommit(w *writer, o store.Order) {
	if w.enqueued {
		signal(e.outboxCh)
	}
	if w.viewChanged {
		signal(e.wakeCh) // status (pending count) may have changed
		if e.cfg.Observer != nil {
			e.cfg.Observer.OrderChanged(viewOf(&o))
		}
	}
}

func (e *Engine) load(outTradeNo string) (store.Order, error) {
	var o store.Order
	err := e.db.View(func(tx *store.Tx) error {
		var ok bool
		var err error
		o, ok, err = tx.Order(outTradeNo)
		if err == nil && !ok {
			err = errNotFound
		}
		return err
	})
	return o, err
}

// to moves the order to next, records the transition, publishes its event
// and, for outcomes, its result.
func (w *writer) to(next store.State, reason string) error {
	o := w.o
	from := o.State
	if !slices.Contains(transitions[from], next) {
		return fmt.Errorf("order %s: illegal transition %s → %s", o.OutTradeNo, from, next)
	}
	o.State = next
	o.Transitions = append(o.Transitions, store.Transition{From: from, To: next, At: w.now, Reason: reason})
	o.Status = statusOf(o)
	w.viewChanged = true
	w.e.log.Info("order transition", "order", o.OutTradeNo, "from", from, "state", next, "reason", reason)
	if err := w.event(string(from), string(next), reason); err != nil {
		return err
	}
	switch next {
	case store.Paid:
		return w.result(contract.ResultPaid, reason)
	case store.Expired:
		return w.result(contract.ResultExpired, reason)
	case store.Cancelled:
		return w.result(contract.ResultCancelled, reason)
	case store.Refunded:
		// The controller is told about money going back for an order it
		// was told was paid, or that never had an outcome (amount mismatch,
		// refunded during close). A late payment on an order it already
		// saw expire changes nothing for it: event only.
		if o.Result == "" || o.Result == string(contract.ResultPaid) {
			return w.result(contract.ResultRefunded, reason)
		}
	case store.Delivered:
		if len(o.Unlock) > 0 {
			// A local driver's paid result is telemetry, published once
			// and retired on PUBACK: let it go out.
			return nil
		}
		_, err := w.tx.DeleteResults(o.OutTradeNo)
		return err
	case store.Refunding:
		if (from == store.Paid || from == store.Held) && len(o.Unlock) == 0 {
			// Stop the unlock signal: the money is going back.
			_, err := w.tx.DeleteResults(o.OutTradeNo)
			return err
		}
	}
	return nil
}

// note publishes an event for something routine that is not a state
// change (from = to), such as a refund that went through.
func (w *writer) note(reason string) error {
	w.e.log.Info("order event", "order", w.o.OutTradeNo, "state", w.o.State, "reason", reason)
	return w.event(string(w.o.State), string(w.o.State), reason)
}

// alert flags the order with a condition that needs attention and
// publishes it as an event (from = to) whose reason starts with the flag.
func (w *writer) alert(flag, detail string) error {
	w.o.Flag(flag)
	reason := flag
	if detail != "" {
		reason += ": " + detail
	}
	w.e.log.Warn("order needs attention", "order", w.o.OutTradeNo, "state", w.o.State, "reason", reason)
	return w.event(string(w.o.State), string(w.o.State), reason)
}

func (w *writer) event(from, to, reason string) error {
	ev := contract.Event{OutTradeNo: w.o.OutTradeNo, From: from, To: to, At: contract.FormatTime(w.now), Reason: reason, Provider: string(w.o.Winner)}
	return w.enqueue(contract.TopicEvent, store.KindEvent, ev, false)
}

func (w *writer) reply(v any) error { return w.enqueue(contract.TopicReply, store.KindReply, v, false) }

func (w *writer) enqueue(topic, kind string, v any, untilAck bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", kind, err)
	}
	_, err = w.tx.Enqueue(store.OutboxEntry{
		Topic: topic, Payload: b, Kind: kind, OutTradeNo: w.o.OutTradeNo,
		UntilAck: untilAck, NextAt: w.now, CreatedAt: w.now,
	})
	w.enqueued = true
	return err
}

// result writes the order's outcome to the outbox. Its seq is taken here,
// in the transaction that creates it; re-publications resend these exact
// bytes, so one outcome never carries two seqs.
func (w *writer) result(status contract.ResultStatus, reason string) error {
	o := w.o
	seq, err := w.tx.NextSeq()
	if err != nil {
		return err
	}
	r := contract.Result{
		OutTradeNo:    o.OutTradeNo,
		Status:        status,
		PayType:       payTypeOf(o),
		Provider:      string(o.Winner),
		TotalFee:      o.TotalFee,
		TransactionID: o.TransactionID,
		PaidAt:        contract.FormatTime(o.PaidAt),
		Type:          o.Type,
		Custom:        o.Custom,
		Reason:        reason,
		Seq:           seq,
		TS:            w.now.Unix(),
	}
	switch status {
	case contract.ResultRefunded:
		r.RefundFee = o.RefundedFee
	case contract.ResultPaid:
		if l := o.Leg(o.Winner); l != nil {
			payer, discount := l.PayerTotal, l.Discount
			r.PayerTotal, r.Discount = &payer, &discount
		}
	}
	if len(r.Custom) == 0 {
		r.Custom = json.RawMessage("{}")
	}
	r.Sign(w.e.cfg.ResultKey)
	if _, err := w.tx.DeleteResults(o.OutTradeNo); err != nil {
		return err
	}
	o.Result, o.ResultSeq = string(status), seq
	// Results are re-published until the controller acks them. With a
	// local unlock driver no controller is expected to ack anything (the
	// driver's outcome is the ack): results are telemetry, published once
	// at QoS 1 and retired on PUBACK.
	untilAck := w.e.cfg.Unlock == nil && len(o.Unlock) == 0
	return w.enqueue(contract.TopicResult, store.KindResult, r, untilAck)
}

func (w *writer) doneInbox(id uint64) error {
	if id == 0 {
		return nil
	}
	return w.tx.DeleteInbox(id)
}

func payTypeOf(o *store.Order) string {
	if o.Winner != "" {
		return contract.PayType(o.Winner)
	}
	if len(o.Legs) == 1 {
		return contract.PayType(o.Legs[0].Provider)
	}
	return contract.PayType(payment.ProviderName(o.Provider))
}

// statusOf derives the seed's numeric status.
func statusOf(o *store.Order) int {
	switch {
	case o.RefundedFee > 0 && o.RefundedFee >= o.PaidFee:
		return store.StatusRefunded
	case o.RefundedFee > 0:
		return store.StatusPartlyRefunded
	case o.State == store.Refunded:
		return store.StatusRefunded
	case o.Winner != "":
		return store.StatusPaid
	case o.State == store.Expired || o.State == store.Cancelled || o.State == store.Failed:
		return store.StatusClosed
	}
	return store.StatusUnpaid
}

func viewOf(o *store.Order) View {
	v := View{
		OutTradeNo: o.OutTradeNo, State: string(o.State), Total: o.TotalFee, Subject: o.Subject,
		ExpiresAt: o.ExpiresAt, PaidProvider: o.Winner,
	}
	if o.State == store.Pending {
		for _, l := range o.Legs {
			if l.State == store.LegOpen {
				v.Codes = append(v.Codes, CodeView{Provider: l.Provider, CodeURL: l.CodeURL})
			}
		}
	}
	if n := len(o.Transitions); n > 0 {
		v.Reason = o.Transitions[n-1].Reason
	}
	return v
}

// providerTotal is the order total the provider holds for o's leg at p:
// what its refunds are measured against. Records from before the money
// rule may not have it; the order total stands in (the most the old engine
// could have delivered).
func providerTotal(o *store.Order, p payment.ProviderName) payment.Fen {
	switch l := o.Leg(p); {
	case l == nil:
		return o.TotalFee
	case l.Total > 0:
		return l.Total
	default:
		return max(o.TotalFee, l.PayerTotal)
	}
}

// refundable is what the provider still holds for o's leg at p: its order
// total less every refund of that leg that is not closed.
func refundable(o *store.Order, p payment.ProviderName) payment.Fen {
	left := providerTotal(o, p)
	for _, r := range o.Refunds {
		if r.Provider == p && r.Committed() {
			left -= r.Amount
		}
	}
	return max(left, 0)
}

// addRefund records a refund of amount (0: everything the provider still
// holds for the leg) before any provider call. It never asks for more than
// is refundable, and records nothing when nothing is: it returns nil then.
func (w *writer) addRefund(p payment.ProviderName, amount payment.Fen, reason string, main bool, requestID, outRefundNo string) *store.Refund {
	o := w.o
	left := refundable(o, p)
	if amount <= 0 || amount > left {
		amount = left
	}
	if amount <= 0 {
		w.e.log.Warn("nothing left to refund", "order", o.OutTradeNo, "provider", p, "reason", reason)
		return nil
	}
	if outRefundNo == "" {
		// Deterministic and persisted before the provider is called: a
		// retry after a crash reuses it, and the provider deduplicates.
		outRefundNo = o.OutTradeNo + "R" + strconv.Itoa(len(o.Refunds)+1)
	}
	o.Refunds = append(o.Refunds, store.Refund{
		OutRefundNo: outRefundNo, Provider: p, Amount: amount, Reason: reason, State: store.RefundPending,
		Main: main, RequestID: requestID, CreatedAt: w.now, UpdatedAt: w.now,
	})
	return &o.Refunds[len(o.Refunds)-1]
}

func openLeg(s store.LegState) bool {
	return s == store.LegOpen || s == store.LegAbandon || s == store.LegCreating
}

// observe applies a confirmed provider status of one leg to the order.
// It is the only place a payment is recognised, whatever reported it (poll,
// final query, notification, reconcile).
func (w *writer) observe(p payment.ProviderName, st payment.Status, source string) error {
	o := w.o
	leg := o.Leg(p)
	if leg == nil {
		return errNoop
	}
	switch st.State {
	case payment.StatePaid:
		if leg.State == store.LegPaid || leg.State == store.LegRefunded {
			return errNoop
		}
		return w.paid(leg, st, source)
	case payment.StateRefunded:
		if leg.State == store.LegPaid || leg.State == store.LegRefunded {
			return errNoop // our own refund, tracked in Refunds
		}
		// Paid and refunded without us: no money is held for this leg.
		leg.State = store.LegRefunded
		leg.SetAmounts(st.Amount)
		if err := w.alert(contract.FlagRefundedAtProvider, ""); err != nil {
			return err
		}
		return w.closeIfNoOpenLegs()
	case payment.StateClosed:
		if !openLeg(leg.State) {
			return errNoop
		}
		leg.State = store.LegClosed
		return w.closeIfNoOpenLegs()
	case payment.StateWaiting, payment.StateNotCreated:
		if st.Scanned && !leg.Scanned {
			leg.Scanned = true
			return nil
		}
	}
	return errNoop
}

// closeIfNoOpenLegs starts closing a pending order whose provider orders
// all ended at the provider's side.
func (w *writer) closeIfNoOpenLegs() error {
	if w.o.State != store.Pending {
		return nil
	}
	for _, l := range w.o.Legs {
		if openLeg(l.State) {
			return nil
		}
	}
	w.o.CloseReason = closeExpire
	return w.to(store.Closing, "closed_at_provider")
}

// paid handles a confirmed payment of leg: the first payment in time whose
// order total at the provider equals the order's total unlocks (the money
// rule, payment.Amounts.Matches); any other total, a late payment or a
// second payment is refunded and never delivered. What the buyer paid is
// recorded, never compared.
func (w *writer) paid(leg *store.Leg, st payment.Status, source string) error {
	o := w.o
	leg.State = store.LegPaid
	leg.SetAmounts(st.Amount)
	leg.TransactionID = st.TransactionID
	leg.PaidAt = st.PaidAt
	if leg.PaidAt.IsZero() {
		leg.PaidAt = w.now
	}
	switch {
	case o.Winner == "" && (o.State == store.Creating || o.State == store.Pending || o.State == store.Closing):
		o.Winner, o.PaidFee, o.TransactionID, o.PaidAt = leg.Provider, st.Amount.Total, st.TransactionID, leg.PaidAt
		for i := range o.Legs {
			if o.Legs[i].Provider != leg.Provider && openLeg(o.Legs[i].State) {
				o.Legs[i].State = store.LegAbandon
			}
		}
		if !st.Amount.Matches(o.TotalFee) {
			w.e.log.Warn("provider order total differs from the order's: refunding, not delivering", "order", o.OutTradeNo,
				"provider", leg.Provider, "provider_total", int64(st.Amount.Total), "total_fee", int64(o.TotalFee))
			o.Flag(contract.FlagAmountMismatch)
			w.addRefund(leg.Provider, 0, contract.FlagAmountMismatch, true, "", "")
			return w.to(store.Refunding, fmt.Sprintf("%s: order total at %s is %d fen, order is %d fen", contract.FlagAmountMismatch, leg.Provider, st.Amount.Total, o.TotalFee))
		}
		reason := "paid"
		if o.State == store.Closing {
			reason = "paid_during_close" // counts as paid in time
		}
		if source != "" {
			reason += " (" + source + ")"
		}
		if w.e.cfg.Unlock != nil {
			return w.paidLocal(reason)
		}
		o.AckDeadline = w.now.Add(w.e.cfg.AckTimeout)
		return w.to(store.Paid, reason)
	case o.Winner == "":
		// The order already ended unpaid: the money must go back.
		w.e.log.Warn("payment after the order ended: refunding", "order", o.OutTradeNo, "provider", leg.Provider, "state", o.State)
		o.Winner, o.PaidFee, o.TransactionID, o.PaidAt = leg.Provider, st.Amount.Total, st.TransactionID, leg.PaidAt
		o.Flag(contract.FlagLatePayment)
		w.addRefund(leg.Provider, 0, contract.FlagLatePayment, true, "", "")
		return w.to(store.Refunding, contract.FlagLatePayment)
	default:
		// "any" mode: the other code was paid too.
		w.addRefund(leg.Provider, 0, contract.FlagDuplicatePayment, false, "", "")
		return w.alert(contract.FlagDuplicatePayment, string(leg.Provider))
	}
}

// needsBackground reports whether an order has provider work left that is
// not driven by its state: legs to close, duplicate payments to refund.
func needsBackground(o *store.Order) bool {
	if o.State == store.Creating || o.State == store.Closing {
		return false
	}
	for _, l := range o.Legs {
		if l.State == store.LegAbandon {
			return true
		}
	}
	for _, r := range o.Refunds {
		if !r.Settled() {
			return true
		}
	}
	return false
}

// ---- the tick: what an order does when its timer fires ----

// tick advances one order. The caller runs it on the order's work queue;
// the order lock also keeps cross-order work (supersede, notify,
// reconcile) out while it runs.
func (e *Engine) tick(ctx context.Context, key string) {
	if ctx.Err() != nil {
		return
	}
	unlock := e.locks.lock(key)
	defer unlock()
	e.advance(ctx, key)
}

// advance runs steps until the order stops changing state, then schedules
// its next wake-up. The caller holds the order lock.
func (e *Engine) advance(ctx context.Context, key string) {
	var next time.Time
	for range 8 {
		o, err := e.load(key)
		if err != nil {
			e.unschedule(key)
			return
		}
		before := o.State
		next = e.step(ctx, o)
		if ctx.Err() != nil {
			return
		}
		after, err := e.load(key)
		if err != nil || after.State == before {
			// Nothing moved: never re-run at once, or a step that keeps
			// failing would spin.
			if now := e.now(); !next.IsZero() && !next.After(now) {
				next = now.Add(min(e.cfg.PollInterval, time.Second))
			}
			break
		}
	}
	if next.IsZero() {
		e.unschedule(key)
		return
	}
	e.schedule(key, next, false)
}

// step does what the order's state requires now and returns when it wants
// to be woken next (zero: nothing left to do).
func (e *Engine) step(ctx context.Context, o store.Order) time.Time {
	now := e.now()
	t := e.timer(o.OutTradeNo)
	if t.deadline.IsZero() {
		t.deadline = now.Add(o.ExpiresAt.Sub(now))
	}
	var next time.Time
	switch o.State {
	case store.Creating:
		e.resumeCreate(ctx, o, "", 0)
		return now
	case store.Pending:
		if !now.Before(t.deadline) {
			_, err := e.change(o.OutTradeNo, func(w *writer) error {
				if w.o.State != store.Pending {
					return errNoop
				}
				w.o.CloseReason = closeExpire
				return w.to(store.Closing, "deadline")
			})
			if err != nil {
				e.log.Error("expire order", "order", o.OutTradeNo, "err", err)
				return now.Add(time.Second)
			}
			return now
		}
		if t.nextPoll.IsZero() {
			t.nextPoll = o.CreatedAt.Add(min(firstPoll, e.cfg.PollInterval))
			t.nextPoll = now.Add(t.nextPoll.Sub(now))
		}
		if !now.Before(t.nextPoll) {
			e.pollLegs(ctx, o, t)
		}
		next = earliest(t.nextPoll, t.deadline)
	case store.Closing:
		if !t.retryAt.IsZero() && now.Before(t.retryAt) {
			return t.retryAt
		}
		if e.closeLegs(ctx, o, t, false) {
			if _, err := e.change(o.OutTradeNo, (*writer).finishClosing); err != nil {
				e.log.Error("finish closing", "order", o.OutTradeNo, "err", err)
				return now.Add(time.Second)
			}
			t.retryAt = time.Time{}
			return now
		}
		e.reportCloseStuck(o, t)
		t.retryAt = now.Add(t.closeDelay(e.cfg.PollInterval, e.cfg.Retry))
		return t.retryAt
	case store.Paid:
		if len(o.Unlock) > 0 {
			e.stepUnlocking(o)
			break
		}
		if t.ackDeadline.IsZero() {
			t.ackDeadline = now.Add(o.AckDeadline.Sub(now))
		}
		if !now.Before(t.ackDeadline) {
			if at := e.holdAckTimeout(o, t, now); !at.IsZero() {
				return at
			}
			if _, err := e.change(o.OutTradeNo, (*writer).ackTimeout); err != nil {
				e.log.Error("ack timeout", "order", o.OutTradeNo, "err", err)
				return now.Add(time.Second)
			}
			return now
		}
		next = t.ackDeadline
	case store.Refunding:
		next = e.refunds(ctx, o, t)
		if next.IsZero() {
			if _, err := e.change(o.OutTradeNo, (*writer).finishRefunding); err != nil {
				e.log.Error("finish refunding", "order", o.OutTradeNo, "err", err)
				return now.Add(time.Second)
			}
			return now
		}
		return next
	}
	// Work that does not depend on the order's state.
	if needsBackground(&o) {
		if !t.retryAt.IsZero() && now.Before(t.retryAt) {
			return earliest(next, t.retryAt)
		}
		bg := time.Time{}
		if hasAbandoned(&o) && !e.closeLegs(ctx, o, t, true) {
			e.reportCloseStuck(o, t)
			bg = now.Add(t.closeDelay(e.cfg.PollInterval, e.cfg.Retry))
		}
		if o2, err := e.load(o.OutTradeNo); err == nil {
			bg = earliest(bg, e.refunds(ctx, o2, t))
		}
		t.retryAt = bg
		next = earliest(next, bg)
	}
	return next
}

func hasAbandoned(o *store.Order) bool {
	for _, l := range o.Legs {
		if l.State == store.LegAbandon {
			return true
		}
	}
	return false
}

// earliest returns the earlier non-zero time.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

func (e *Engine) provider(pid string, p payment.ProviderName) (payment.Provider, error) {
	prov := e.cfg.Merchants[pid][p]
	if prov == nil {
		return nil, fmt.Errorf("merchant %q has no %s account configured", pid, p)
	}
	return prov, nil
}

// callTimeout bounds one provider call on top of the adapter's own timeout.
const callTimeout = 20 * time.Second

func (e *Engine) query(ctx context.Context, o store.Order, p payment.ProviderName) (payment.Status, error) {
	prov, err := e.provider(o.PID, p)
	if err != nil {
		return payment.Status{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	st, err := prov.Query(ctx, o.OutTradeNo)
	if err != nil {
		e.log.Warn("provider query failed", "order", o.OutTradeNo, "provider", p, "err", err)
	}
	return st, err
}

// pollLegs queries every payable leg once and applies the answers.
func (e *Engine) pollLegs(ctx context.Context, o store.Order, t *orderTimer) {
	scanned := false
	for _, l := range o.Legs {
		if l.State != store.LegOpen {
			continue
		}
		st, err := e.query(ctx, o, l.Provider)
		t.note(err)
		if err != nil {
			continue
		}
		scanned = scanned || st.Scanned && l.Provider == payment.Alipay
		if _, err := e.change(o.OutTradeNo, func(w *writer) error { return w.observe(l.Provider, st, "poll") }); err != nil {
			e.log.Error("apply query", "order", o.OutTradeNo, "err", err)
		}
	}
	now := e.now()
	if t.failures > 0 {
		t.nextPoll = now.Add(t.retryDelay(e.cfg.PollInterval))
	} else {
		t.nextPoll = now.Add(pollInterval(e.cfg.PollInterval, pollPace{
			scanned: scanned,
			hot:     o.Leg(payment.WxPay) != nil && now.Sub(o.CreatedAt) < hotWindow,
			relayed: e.cfg.NotifyURL != "",
		}))
	}
}

// confirm queries one leg and applies the answer (notifications, resumes).
func (e *Engine) confirm(ctx context.Context, o store.Order, p payment.ProviderName, source string) error {
	st, err := e.query(ctx, o, p)
	if err != nil {
		return err
	}
	_, err = e.change(o.OutTradeNo, func(w *writer) error { return w.observe(p, st, source) })
	return err
}

// closeLegs runs final query → close → final query on every leg that may
// still take money (only the abandoned ones when onlyAbandoned: the order
// itself stays payable). It reports whether all of them are settled.
func (e *Engine) closeLegs(ctx context.Context, o store.Order, t *orderTimer, onlyAbandoned bool) bool {
	all := true
	for _, l := range o.Legs {
		if !openLeg(l.State) || (onlyAbandoned && l.State != store.LegAbandon) {
			continue
		}
		err := e.closeLeg(ctx, o.OutTradeNo, l.Provider)
		t.note(err)
		if err != nil {
			all = false
			if !errors.Is(err, errRetry) {
				e.log.Warn("close provider order", "order", o.OutTradeNo, "provider", l.Provider, "err", err)
			}
		}
	}
	return all
}

var errRetry = errors.New("close not confirmed yet")

// reportCloseStuck flags an order whose close has stayed unconfirmed for
// Retry.StuckAfter attempts in a row, with one event; the count lives in
// memory, so a restart counts afresh but does not report an order flagged
// already.
func (e *Engine) reportCloseStuck(o store.Order, t *orderTimer) {
	if !t.stuck(e.cfg.Retry) || t.closeReported || o.HasFlag(contract.FlagCloseStuck) {
		return
	}
	t.closeReported = true
	_, err := e.change(o.OutTradeNo, func(w *writer) error {
		return w.alert(contract.FlagCloseStuck, fmt.Sprintf("closing at the provider still unconfirmed after %d attempts, retrying every %s: %s",
			t.failures, e.cfg.Retry.Slow, t.lastErr))
	})
	if err != nil {
		e.log.Error("report stuck close", "order", o.OutTradeNo, "err", err)
	}
}

// existsOnceCreated reports whether the provider's "no such order" for a
// leg in state ls contradicts what we know. A WeChat order exists from the
// moment prepay succeeded, so ORDER_NOT_EXIST for an open WeChat leg is a
// broken answer — and the SDK does not verify signatures on 4xx answers —
// so it must not close a leg that may hold money. (An Alipay trade does not
// exist until the buyer scans, and its 40004 answers are signed.)
func existsOnceCreated(p payment.ProviderName, ls store.LegState) bool {
	return p == payment.WxPay && ls == store.LegOpen
}

func (e *Engine) legState(outTradeNo string, p payment.ProviderName) (store.Order, store.LegState, error) {
	o, err := e.load(outTradeNo)
	if err != nil {
		return o, "", err
	}
	l := o.Leg(p)
	if l == nil {
		return o, "", fmt.Errorf("order %s has no %s leg", outTradeNo, p)
	}
	return o, l.State, nil
}

// closeLeg settles one leg at the provider: a payment found by either query
// or by the close itself counts as paid in time.
func (e *Engine) closeLeg(ctx context.Context, outTradeNo string, p payment.ProviderName) error {
	o, _, err := e.legState(outTradeNo, p)
	if err != nil {
		return err
	}
	if err := e.confirm(ctx, o, p, "final query"); err != nil {
		return err
	}
	o, ls, err := e.legState(outTradeNo, p)
	if err != nil || !openLeg(ls) {
		return err
	}
	prov, err := e.provider(o.PID, p)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	cl, cerr := prov.Close(cctx, outTradeNo)
	cancel()
	if cerr != nil && payment.IsUnknown(cerr) {
		return fmt.Errorf("close: %w", cerr)
	}
	if cerr == nil && cl.Refunded {
		_, err := e.change(outTradeNo, func(w *writer) error {
			l := w.o.Leg(p)
			if !openLeg(l.State) {
				return errNoop
			}
			l.State = store.LegRefunded
			w.o.Flag(contract.FlagRefundedOnClose)
			return w.note(contract.FlagRefundedOnClose + ": " + string(p))
		})
		return err
	}
	if cerr != nil {
		e.log.Info("provider refused close; confirming with a query", "order", outTradeNo, "provider", p, "err", cerr)
	}
	st, err := e.query(ctx, o, p)
	if err != nil {
		return err
	}
	if cerr == nil && cl.Paid && !st.State.WasPaid() {
		return fmt.Errorf("%w: close said paid, query says %s", errRetry, st.State)
	}
	_, err = e.change(outTradeNo, func(w *writer) error {
		l := w.o.Leg(p)
		if err := w.observe(p, st, "close"); err != nil && !errors.Is(err, errNoop) {
			return err
		}
		if !openLeg(l.State) {
			return nil
		}
		if st.State == payment.StateClosed || st.State == payment.StateNotCreated && !existsOnceCreated(p, l.State) {
			l.State = store.LegClosed
			return nil
		}
		return errNoop
	})
	if err != nil {
		return err
	}
	if _, ls, err := e.legState(outTradeNo, p); err == nil && openLeg(ls) {
		return fmt.Errorf("%w: still %s after close", errRetry, st.State)
	}
	return nil
}

// finishClosing turns a closed order into its outcome.
func (w *writer) finishClosing() error {
	o := w.o
	if o.State != store.Closing {
		return errNoop
	}
	refunded := false
	for _, l := range o.Legs {
		if openLeg(l.State) {
			return errNoop
		}
		refunded = refunded || l.State == store.LegRefunded
	}
	if refunded {
		return w.to(store.Refunded, contract.FlagRefundedOnClose)
	}
	switch o.CloseReason {
	case closeCancel:
		return w.to(store.Cancelled, "cancel")
	case closeSupersede:
		return w.to(store.Cancelled, "superseded")
	case closeCreateFailed:
		return w.to(store.Failed, closeCreateFailed)
	}
	return w.to(store.Expired, "deadline")
}

// ackTimeout applies on_no_ack to a paid order the controller never
// acknowledged.
func (w *writer) ackTimeout() error {
	o := w.o
	if o.State != store.Paid {
		return errNoop
	}
	o.Flag(contract.FlagNoAck)
	if w.e.cfg.OnNoAck == config.OnNoAckHold {
		return w.to(store.Held, "ack_timeout_hold")
	}
	w.addRefund(o.Winner, 0, "ack_timeout", true, "", "")
	return w.to(store.Refunding, "ack_timeout")
}

// refunds advances every unsettled refund that is due and returns when to
// look again (zero when all are settled).
func (e *Engine) refunds(ctx context.Context, o store.Order, t *orderTimer) time.Time {
	var next time.Time
	now := e.now()
	for _, r := range o.Refunds {
		if r.Settled() {
			continue
		}
		if due := t.refundAt[r.OutRefundNo]; !due.IsZero() && now.Before(due) {
			next = earliest(next, due)
			continue
		}
		if err := e.refundOnce(ctx, o, r); err != nil {
			e.log.Warn("refund", "order", o.OutTradeNo, "refund", r.OutRefundNo, "provider", r.Provider, "err", err)
		}
		cur, err := e.load(o.OutTradeNo)
		if err != nil {
			continue
		}
		if r2 := cur.Refund(r.OutRefundNo); r2 != nil && !r2.Settled() {
			at := now.Add(e.refundDelay(*r2, now))
			t.dueRefund(r.OutRefundNo, at)
			next = earliest(next, at)
		}
	}
	return next
}

// refundDelay is the wait before a refund's next provider call: backoff
// while answers stay unknown or the provider refuses; the slow rate once
// stuck or while a human must act on an ABNORMAL refund; and while the
// provider reports it processing, the poll interval for its first half
// minute (WeChat refunds to a balance usually complete within seconds),
// backing off after that, and the slow rate once it is an hour old
// (bank-card refunds take days).
func (e *Engine) refundDelay(r store.Refund, now time.Time) time.Duration {
	switch {
	case r.Stuck || r.State == store.RefundAbnormal:
		return e.cfg.Retry.Slow
	case r.Unknown > 0:
		return backoff(e.cfg.PollInterval, r.Unknown, false)
	case r.State == store.RefundPending:
		// Refused, or not found at the provider: send it again, backing off.
		return min(backoff(e.cfg.PollInterval, r.Attempts, false), maxRefundPoll)
	}
	switch age := now.Sub(r.CreatedAt); {
	case age < refundFastWindow:
		return e.cfg.PollInterval
	case age > refundSlowAfter:
		return e.cfg.Retry.Slow
	default:
		return min(backoff(e.cfg.PollInterval, int(age/refundFastWindow), false), maxRefundPoll)
	}
}

// A processing refund is queried at the poll interval for refundFastWindow,
// then less often, and at the slow rate after refundSlowAfter.
const (
	refundFastWindow = 30 * time.Second
	refundSlowAfter  = time.Hour
)

// maxRefundRejections is how often a provider may refuse a refund before it
// is given up as closed (a human must look).
const maxRefundRejections = 5

func (e *Engine) refundOnce(ctx context.Context, o store.Order, r store.Refund) error {
	prov, err := e.provider(o.PID, r.Provider)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var rs payment.RefundStatus
	switch r.State {
	case store.RefundPending:
		rs, err = prov.Refund(cctx, payment.RefundRequest{
			OutTradeNo: o.OutTradeNo, OutRefundNo: r.OutRefundNo, Total: providerTotal(&o, r.Provider), Refund: r.Amount,
			Reason: r.Reason, NotifyURL: e.notifyURL(r.Provider),
		})
	default:
		rs, err = prov.QueryRefund(cctx, o.OutTradeNo, r.OutRefundNo)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	_, cerr := e.change(o.OutTradeNo, func(w *writer) error {
		cur := w.o.Refund(r.OutRefundNo)
		if cur == nil || cur.Settled() {
			return errNoop
		}
		cur.Attempts++
		cur.UpdatedAt = w.now
		if err != nil {
			w.o.LastError = err.Error()
			if payment.IsUnknown(err) {
				return w.refundUnknown(cur, err)
			}
			cur.Unknown, cur.Stuck = 0, false
			// An amount no retry can make valid, or a provider that keeps
			// refusing: a human must look.
			if payment.IsRejected(err, payment.CodeInvalidRefundAmount) || cur.Attempts >= maxRefundRejections {
				cur.State = store.RefundClosed
				return w.alert(contract.FlagRefundClosed, cur.OutRefundNo+": "+err.Error())
			}
			return nil
		}
		cur.Unknown, cur.Stuck = 0, false
		if rs.RefundID != "" {
			cur.RefundID = rs.RefundID
		}
		switch rs.State {
		case payment.RefundSuccess:
			cur.State = store.RefundSuccess
			cur.Attempts = 0
			if cur.Main {
				w.o.RefundedFee += cur.Amount
			}
			return w.note("refund_success: " + cur.OutRefundNo)
		case payment.RefundClosed:
			cur.State = store.RefundClosed
			return w.alert(contract.FlagRefundClosed, cur.OutRefundNo)
		case payment.RefundAbnormal:
			if cur.State == store.RefundAbnormal {
				return nil // reported once; a human is on it
			}
			cur.State = store.RefundAbnormal
			return w.alert(contract.FlagRefundAbnormal, cur.OutRefundNo+": the buyer's account did not accept it; handle it at the merchant platform")
		case payment.RefundProcessing:
			cur.State = store.RefundProcessing
		case payment.RefundNotFound:
			// Never reached the provider: send it again with the same number.
			cur.State = store.RefundPending
		}
		return nil
	})
	if err != nil {
		return err
	}
	return cerr
}

// refundUnknown counts a refund call whose outcome stayed unknown. After
// Retry.StuckAfter of them in a row the order is flagged refund_stuck and
// an event says so, once; retrying goes on at the slow rate.
func (w *writer) refundUnknown(r *store.Refund, err error) error {
	r.Unknown++
	if r.Stuck || r.Unknown < w.e.cfg.Retry.StuckAfter {
		return nil
	}
	r.Stuck = true
	return w.alert(contract.FlagRefundStuck, fmt.Sprintf("%s: no definite answer from %s after %d attempts, retrying every %s: %v",
		r.OutRefundNo, r.Provider, r.Unknown, w.e.cfg.Retry.Slow, err))
}

// finishRefunding ends the refunding state once every refund of the
// order's own payment is settled.
func (w *writer) finishRefunding() error {
	o := w.o
	if o.State != store.Refunding {
		return errNoop
	}
	closed := false
	for _, r := range o.Refunds {
		if !r.Main {
			continue
		}
		if !r.Settled() {
			return errNoop
		}
		closed = closed || r.State == store.RefundClosed
	}
	o.Status = statusOf(o)
	if closed {
		return w.to(store.RefundFailed, contract.FlagRefundClosed)
	}
	return w.to(store.Refunded, "refund_success")
}

func (e *Engine) notifyURL(p payment.ProviderName) string {
	return contract.NotifyURL(e.cfg.NotifyURL, e.cfg.DeviceID, p)
}
