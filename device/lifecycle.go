package device

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// The lifecycle of one order, in the order an order lives it. The states
// and the table of legal moves between them are store.State's
// (store/order.go); this file decides which move to take.
//
//   - create persists a new order in creating, after closing the order on
//     screen (supersede): one device, one customer, one QR;
//   - step runs the function of the order's state, one per state (the way
//     hashicorp/raft runs runFollower, runCandidate, runLeader):
//     stepCreating creates the provider orders and shows the QR,
//     stepPending polls until paid or the deadline, stepPaid waits for the
//     controller's ack (or the unlock driver), stepClosing settles the
//     provider orders of an order ending unpaid, stepRefunding drives the
//     refunds of its payment;
//   - a payment is recognised in one place, observe → paid, whoever
//     reported it (poll, notification, final query, reconcile);
//   - the commands that act on an order (cancel, refund, ack, notify) are
//     one function each here; commands.go decodes and checks them;
//   - every move goes through a named transition (the end of this file):
//     beginClose, startRefund, outcome, deliver, hold, refunded. Each does
//     the side effects of its move itself; writer.to only records a move.
//
// Provider calls are in provider.go, the one-transaction change in
// writer.go. The order lock (e.locks) is the only per-order mutex: every
// function here that changes an order runs under it.

// Close reasons: why an order is closing (store.Order.CloseReason); it
// decides the outcome (finishClosing).
// Close reasons.
const (
	closeExpire       = "expire"
	closeCancel       = "cancel"
	closeSupersede    = "supersede"
	closeCreateFailed = "create_failed"
)

// ---- create ----

// create starts a new order for a create request that passed the device's
// policy, or answers a repeated one (recreate). Creates are serialised
// (createMu): the order on screen is closed before the next is shown.
func (e *Engine) create(ctx context.Context, m store.InboxEntry, req contract.CreateRequest, legs []payment.ProviderName) error {
	otn := req.Order.OutTradeNo
	fp := fingerprint(req.Provider, legs, req.Order)

	e.createMu.Lock()
	defer e.createMu.Unlock()
	unlock := e.locks.lock(otn)
	defer unlock()

	existing, err := e.load(otn)
	switch {
	case err == nil:
		return e.recreate(ctx, m, req, fp, existing)
	case !errors.Is(err, errNotFound):
		return err
	}
	if e.storageFull() {
		return e.storageFullError()
	}
	// One device, one customer, one QR: the order on screen is closed
	// first, and a create that cannot close it does not go ahead.
	if err := e.supersede(ctx, otn); err != nil {
		e.log.Error("create refused: the previous order could not be superseded", "order", otn, "err", err)
		return err
	}

	now := e.now()
	o := store.Order{
		OutTradeNo: otn, RequestID: req.RequestID, Fingerprint: fp, Provider: req.Provider,
		PID: req.Order.PID, TotalFee: req.Order.TotalFee, Subject: req.Order.Subject, Type: req.Order.Type,
		Custom: req.Order.Custom, Expire: req.Order.Expire,
		CreatedAt: now, ExpiresAt: now.Add(req.Order.Expire).Round(0),
	}
	if req.Order.Other != nil {
		o.Other, _ = json.Marshal(req.Order.Other)
	}
	for _, p := range legs {
		o.Legs = append(o.Legs, store.Leg{Provider: p, State: store.LegCreating})
	}
	err = e.insert(o, func(w *writer) error {
		if err := w.doneInbox(m.ID); err != nil {
			return err
		}
		return w.to(store.Creating, "create")
	})
	if err != nil {
		return err
	}
	t := e.timer(otn)
	t.deadline = now.Add(req.Order.Expire) // monotonic while we run
	e.stepCreating(ctx, o, req.RequestID, 0)
	if ctx.Err() == nil {
		e.schedule(otn, e.now(), false)
	}
	return nil
}

// recreate answers a create for an out_trade_no that already exists: the
// same QR while pending with the same parameters (seed: re-pay with the
// original number), DUPLICATE_CONFLICT with different ones, ORDER_FINISHED
// after it ended. It returns the refusal; other answers it sends itself.
func (e *Engine) recreate(ctx context.Context, m store.InboxEntry, req contract.CreateRequest, fp string, o store.Order) error {
	switch o.State {
	case store.Creating:
		if o.Fingerprint != fp {
			return duplicateConflict(req, &o, "exists")
		}
		// Left over from a crash and not resumed yet: finish it and answer
		// this request.
		e.stepCreating(ctx, o, req.RequestID, m.ID)
		e.schedule(o.OutTradeNo, e.now(), false)
		return nil
	case store.Pending:
		if o.Fingerprint != fp {
			return duplicateConflict(req, &o, "is pending")
		}
		rep, err := createReply(req.RequestID, &o)
		if err != nil {
			return err
		}
		e.replyOnly(m.ID, rep)
		// Show it again: the controller is re-presenting this order.
		if e.cfg.Observer != nil {
			e.cfg.Observer.OrderChanged(viewOf(&o))
		}
		return nil
	}
	return contract.Errorf(contract.ErrOrderFinished, "order %s has ended (%s); use a new out_trade_no", o.OutTradeNo, o.State)
}

// supersede closes every other order still waiting for payment before a
// new one is shown: one device, one customer, one QR. A payment that
// sneaked in meanwhile follows the paid path. It returns an error when an
// order could not be moved to closing (its commit failed): that order is
// still payable, so the new one must not be shown. The caller holds
// createMu.
func (e *Engine) supersede(ctx context.Context, newOTN string) error {
	live, err := e.liveOrders()
	if err != nil {
		return err
	}
	for _, y := range live {
		if y.OutTradeNo == newOTN || (y.State != store.Pending && y.State != store.Creating) {
			continue
		}
		err := func() error {
			unlock := e.locks.lock(y.OutTradeNo)
			defer unlock()
			if y.State == store.Creating {
				if err := e.stepCreating(ctx, y, "", 0); err != nil {
					return err
				}
			}
			_, err := e.change(y.OutTradeNo, func(w *writer) error {
				switch w.o.State {
				case store.Pending:
					return w.beginClose(closeSupersede, "superseded by "+newOTN)
				case store.Creating:
					return fmt.Errorf("order %s is still being created", w.o.OutTradeNo)
				}
				return errNoop
			})
			if err != nil {
				return err
			}
			e.advance(ctx, y.OutTradeNo)
			return nil
		}()
		if err != nil {
			return fmt.Errorf("supersede %s: %w", y.OutTradeNo, err)
		}
	}
	return nil
}

// ---- the step: what an order does when its timer fires ----

// tick advances one order when its timer fires (queueTick). It holds the
// order lock, which keeps commands about the order and cross-order work
// (supersede, notify, reconcile) out while it runs.
func (e *Engine) tick(ctx context.Context, key string) {
	unlock := e.locks.lock(key)
	defer unlock()
	e.mu.Lock()
	delete(e.ticking, key) // a wake-up from now on needs a tick of its own
	e.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
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
// to be woken next (zero: nothing left to do). The caller holds the order
// lock.
func (e *Engine) step(ctx context.Context, o store.Order) time.Time {
	now := e.now()
	t := e.timer(o.OutTradeNo)
	if t.deadline.IsZero() {
		t.deadline = now.Add(o.ExpiresAt.Sub(now))
	}
	switch o.State {
	case store.Creating:
		e.stepCreating(ctx, o, "", 0)
		return now
	case store.Pending:
		return e.stepPending(ctx, o, t, now)
	case store.Paid:
		return e.stepPaid(ctx, o, t, now)
	case store.Closing:
		return e.stepClosing(ctx, o, t, now)
	case store.Refunding:
		return e.stepRefunding(ctx, o, t, now)
	}
	// Delivered, held and the ended states: only background work is left.
	return e.background(ctx, o, t, now, time.Time{})
}

// ---- creating ----

// stepCreating creates the provider orders of an order in state creating
// (right after it was persisted, or after a crash) and replies to the
// create request: pending with the QR when a provider order is open,
// failed when every provider refused, closing when an outcome is unknown.
// Create is idempotent at both providers for the same out_trade_no and
// parameters, so calling it again after a crash is safe. The caller holds
// the order lock. replyTo overrides the stored request id (a repeated
// create); inboxID is retired with the reply.
func (e *Engine) stepCreating(ctx context.Context, o store.Order, replyTo string, inboxID uint64) error {
	requestID := cmp.Or(replyTo, o.RequestID)
	if !e.now().Before(o.ExpiresAt) {
		// Down past the QR's lifetime: never show it; close whatever the
		// provider may have created.
		_, err := e.change(o.OutTradeNo, func(w *writer) error {
			for i := range w.o.Legs {
				if w.o.Legs[i].State == store.LegCreating {
					w.o.Legs[i].State = store.LegAbandon
				}
			}
			if err := w.answer(inboxID, contract.ErrorReply(requestID, contract.ActionCreate, contract.Errorf(contract.ErrProviderUnavailable, "order %s expired before it could be created", o.OutTradeNo))); err != nil {
				return err
			}
			return w.beginClose(closeExpire, "expired while creating")
		})
		if err != nil {
			e.storageError(err)
			e.log.Error("expire creating order", "order", o.OutTradeNo, "err", err)
		}
		return err
	}
	results, err := e.createAtProviders(ctx, o)
	if err != nil {
		return err
	}
	_, err = e.change(o.OutTradeNo, func(w *writer) error { return w.created(results, requestID, inboxID) })
	if err != nil {
		e.storageError(err)
		e.log.Error("record create outcome", "order", o.OutTradeNo, "err", err)
	}
	return err
}

// created applies the providers' answers to Create and replies to the
// create request in the same commit.
func (w *writer) created(results map[payment.ProviderName]createOutcome, requestID string, inboxID uint64) error {
	if w.o.State != store.Creating {
		return errNoop
	}
	open, unknown := 0, 0
	var rejected *payment.RejectedError
	var invalid error // the request itself is wrong (other overrides a daemon field)
	for i := range w.o.Legs {
		l := &w.o.Legs[i]
		r, ok := results[l.Provider]
		if !ok || l.State != store.LegCreating {
			continue
		}
		switch {
		case r.err == nil:
			l.State, l.CodeURL = store.LegOpen, r.created.CodeURL
			open++
		case errors.Is(r.err, payment.ErrOtherOverride):
			// Refused before anything was sent: nothing to close.
			l.State, l.Error = store.LegFailed, r.err.Error()
			invalid = r.err
		case payment.IsUnknown(r.err) || orderExists(r.err):
			// The provider may have created it (or says it did: a
			// create repeated after a crash can find the order paid
			// or closed): it must be queried and closed, never shown.
			l.State, l.Error = store.LegAbandon, r.err.Error()
			unknown++
		default:
			l.State, l.Error = store.LegFailed, r.err.Error()
			errors.As(r.err, &rejected)
		}
	}
	if open > 0 {
		rep, err := createReply(requestID, w.o)
		if err != nil {
			return err
		}
		if err := w.answer(inboxID, rep); err != nil {
			return err
		}
		return w.to(store.Pending, "created")
	}
	var rerr error
	switch {
	case invalid != nil:
		rerr = contract.AsError(invalid)
	case unknown > 0 || rejected == nil:
		rerr = contract.Errorf(contract.ErrProviderUnavailable, "the payment provider did not answer; try again")
	default:
		rerr = contract.Errorf(contract.ErrProviderRejected, "%s refused the order: %s %s", rejected.Provider, rejected.Code, rejected.Message)
	}
	w.o.LastError = rerr.Error()
	if err := w.answer(inboxID, contract.ErrorReply(requestID, contract.ActionCreate, rerr)); err != nil {
		return err
	}
	if unknown > 0 {
		return w.beginClose(closeCreateFailed, closeCreateFailed)
	}
	return w.failCreate()
}

// ---- pending ----

// stepPending polls the provider orders until one is paid, and starts
// closing the order at its deadline.
func (e *Engine) stepPending(ctx context.Context, o store.Order, t *orderTimer, now time.Time) time.Time {
	if !now.Before(t.deadline) {
		_, err := e.change(o.OutTradeNo, func(w *writer) error {
			if w.o.State != store.Pending {
				return errNoop
			}
			return w.beginClose(closeExpire, "deadline")
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
	return e.background(ctx, o, t, now, earliest(t.nextPoll, t.deadline))
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
	return w.beginClose(closeExpire, "closed_at_provider")
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
			return w.startRefund(contract.FlagAmountMismatch, fmt.Sprintf("order total at %s is %d fen, order is %d fen", leg.Provider, st.Amount.Total, o.TotalFee))
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
		return w.outcome(store.Paid, contract.ResultPaid, reason)
	case o.Winner == "":
		// The order already ended unpaid: the money must go back.
		w.e.log.Warn("payment after the order ended: refunding", "order", o.OutTradeNo, "provider", leg.Provider, "state", o.State)
		o.Winner, o.PaidFee, o.TransactionID, o.PaidAt = leg.Provider, st.Amount.Total, st.TransactionID, leg.PaidAt
		o.Flag(contract.FlagLatePayment)
		return w.startRefund(contract.FlagLatePayment, "")
	default:
		// "any" mode: the other code was paid too.
		w.addRefund(leg.Provider, 0, contract.FlagDuplicatePayment, false, "", "")
		return w.alert(contract.FlagDuplicatePayment, string(leg.Provider))
	}
}

// ---- paid ----

// stepPaid waits for the controller's ack until the ack deadline, then
// applies on_no_ack; an order with a local unlock driver is handed to it
// instead (unlocking.go).
func (e *Engine) stepPaid(ctx context.Context, o store.Order, t *orderTimer, now time.Time) time.Time {
	if len(o.Unlock) > 0 {
		e.stepUnlocking(o)
		return e.background(ctx, o, t, now, time.Time{})
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
	return e.background(ctx, o, t, now, t.ackDeadline)
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
		return w.hold("ack_timeout_hold")
	}
	return w.startRefund("ack_timeout", "")
}

// ---- closing ----

// stepClosing runs final query → close → final query on every provider
// order that may still take money, until all are settled, then turns the
// order into its outcome (finishClosing).
func (e *Engine) stepClosing(ctx context.Context, o store.Order, t *orderTimer, now time.Time) time.Time {
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
		return w.refunded(contract.FlagRefundedOnClose)
	}
	switch o.CloseReason {
	case closeCancel:
		return w.outcome(store.Cancelled, contract.ResultCancelled, "cancel")
	case closeSupersede:
		return w.outcome(store.Cancelled, contract.ResultCancelled, "superseded")
	case closeCreateFailed:
		return w.to(store.Failed, closeCreateFailed)
	}
	return w.outcome(store.Expired, contract.ResultExpired, "deadline")
}

// ---- refunding ----

// stepRefunding advances the order's refunds until every refund of its own
// payment is settled (finishRefunding).
func (e *Engine) stepRefunding(ctx context.Context, o store.Order, t *orderTimer, now time.Time) time.Time {
	next := e.refunds(ctx, o, t)
	if next.IsZero() {
		if _, err := e.change(o.OutTradeNo, (*writer).finishRefunding); err != nil {
			e.log.Error("finish refunding", "order", o.OutTradeNo, "err", err)
			return now.Add(time.Second)
		}
		return now
	}
	return next
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
	return w.refunded("refund_success")
}

// ---- background work ----

// background does the provider work that does not depend on the order's
// state (legs to close, duplicate payments to refund) and returns the
// earlier of next and when that work wants to run again.
func (e *Engine) background(ctx context.Context, o store.Order, t *orderTimer, now, next time.Time) time.Time {
	if !needsBackground(&o) {
		return next
	}
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
	return earliest(next, bg)
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

func hasAbandoned(o *store.Order) bool {
	for _, l := range o.Legs {
		if l.State == store.LegAbandon {
			return true
		}
	}
	return false
}

// ---- what commands do to an order ----

// cancel closes a creating or pending order at the controller's request;
// the reply goes in the same commit.
func (e *Engine) cancel(ctx context.Context, inboxID uint64, req contract.CancelRequest) error {
	unlock := e.locks.lock(req.OutTradeNo)
	defer unlock()
	_, err := e.change(req.OutTradeNo, func(w *writer) error {
		switch w.o.State {
		case store.Pending, store.Creating:
			if err := w.beginClose(closeCancel, "cancel"); err != nil {
				return err
			}
		case store.Closing:
		default:
			return contract.Errorf(contract.ErrOrderFinished, "order %s has ended (%s)", w.o.OutTradeNo, w.o.State)
		}
		return w.answer(inboxID, contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionCancel, "closing"), OrderSummary: summarize(w.o)})
	})
	if err != nil {
		return notFound(err, req.OutTradeNo)
	}
	e.advance(ctx, req.OutTradeNo)
	return nil
}

// commandChange applies a command's change of order otn, answer included,
// under the order lock; a missing order is ORDER_NOT_FOUND.
func (e *Engine) commandChange(otn string, fn func(w *writer) error) error {
	unlock := e.locks.lock(otn)
	defer unlock()
	_, err := e.change(otn, fn)
	return notFound(err, otn)
}

// operatorRefund refunds (part of) a paid order's payment at an operator's
// request; the reply goes in the same commit.
func (e *Engine) operatorRefund(inboxID uint64, req contract.RefundRequest) error {
	err := e.commandChange(req.OutTradeNo, func(w *writer) error {
		o := w.o
		reply := func(r *store.Refund, msg string) error {
			return w.answer(inboxID, contract.RefundReply{Reply: contract.OKReply(req.RequestID, contract.ActionRefund, msg), OutTradeNo: o.OutTradeNo,
				OutRefundNo: r.OutRefundNo, RefundFee: r.Amount, State: string(r.State)})
		}
		// A repeated command (QoS 1 redelivery, operator retry) returns
		// the refund it already started instead of paying out again.
		for i := range o.Refunds {
			r := &o.Refunds[i]
			if (req.OutRefundNo != "" && r.OutRefundNo == req.OutRefundNo) || (req.RequestID != "" && r.RequestID == req.RequestID) {
				if req.RefundFee != 0 && req.RefundFee != r.Amount {
					return &contract.Error{Name: contract.ErrDuplicateConflict, Field: "refund_fee", Msg: fmt.Sprintf("refund %s exists for %d fen", r.OutRefundNo, r.Amount)}
				}
				return reply(r, "already requested")
			}
		}
		if o.Winner == "" {
			return &contract.Error{Name: contract.ErrInvalidArgument, Field: "out_trade_no", Msg: fmt.Sprintf("order %s is not paid (%s)", o.OutTradeNo, o.State)}
		}
		// The provider holds the order total at it, less what was
		// refunded or is being refunded; a refund never asks for more.
		remaining := refundable(o, o.Winner)
		if remaining <= 0 {
			return contract.Errorf(contract.ErrOrderFinished, "order %s is already refunded in full", o.OutTradeNo)
		}
		amount := cmp.Or(req.RefundFee, remaining)
		if amount > remaining {
			total := providerTotal(o, o.Winner)
			return &contract.Error{Name: contract.ErrFeeOutOfRange, Field: "refund_fee", Msg: fmt.Sprintf("refund_fee must be at most %d fen (order total %d at the provider, refunded or refunding %d)", remaining, total, total-remaining)}
		}
		r := w.addRefund(o.Winner, amount, cmp.Or(req.RefundDesc, "operator refund"), true, req.RequestID, req.OutRefundNo)
		if err := w.refunding("operator_refund"); err != nil {
			return err
		}
		return reply(r, "refunding")
	})
	if err != nil {
		return err
	}
	e.schedule(req.OutTradeNo, e.now(), false)
	return nil
}

// acknowledge applies the controller's ack of a paid order: delivered, or
// refunding when the service did not start; the reply goes in the same
// commit.
func (e *Engine) acknowledge(inboxID uint64, req contract.AckRequest) error {
	err := e.commandChange(req.OutTradeNo, func(w *writer) error {
		o := w.o
		msg := "ok"
		reply := func() error {
			return w.answer(inboxID, contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionAck, msg), OrderSummary: summarize(o)})
		}
		if unlocking(o) && !o.HasFlag(contract.FlagUnlockInterrupted) {
			// The local driver's outcome is the ack: this one changes
			// nothing. (An interrupted one waits for exactly this: a
			// human's ack.)
			msg = "ignored: the unlock driver decides this order"
			return reply()
		}
		o.Acked = true
		switch {
		case (o.State == store.Paid || o.State == store.Held) && req.OK:
			if err := w.deliver("ack"); err != nil {
				return err
			}
		case (o.State == store.Paid || o.State == store.Held) && !req.OK:
			reason := "ack_failed"
			if req.Reason != "" {
				reason += ": " + req.Reason
			}
			if err := w.startRefund(reason, ""); err != nil {
				return err
			}
			msg = "refunding"
		case req.OK && o.HasFlag(contract.FlagNoAck) && (o.State == store.Refunding || o.State == store.Refunded):
			// Delivered after all, but the money already went back.
			o.Flag(contract.FlagLateAck)
			if err := w.note(contract.FlagLateAck); err != nil {
				return err
			}
			msg = "late ack: the payment was already refunded"
			if err := w.retireResults(); err != nil {
				return err
			}
		default:
			// Any other outcome: the ack only stops re-publication.
			if err := w.retireResults(); err != nil {
				return err
			}
		}
		return reply()
	})
	if err != nil {
		return err
	}
	e.schedule(req.OutTradeNo, e.now(), false)
	return nil
}

// notified acts on a provider notification verified with the keys of
// merchant pid: it confirms it with a query before anything changes (the
// relay and the notification are only hints), then advances the order. It
// returns the order as it now is.
func (e *Engine) notified(ctx context.Context, p payment.ProviderName, n payment.Notification, pid string) (store.Order, error) {
	unlock := e.locks.lock(n.OutTradeNo)
	defer unlock()
	o, err := e.load(n.OutTradeNo)
	if err != nil {
		return o, notFound(err, n.OutTradeNo)
	}
	if o.PID != pid || o.Leg(p) == nil {
		return o, contract.Errorf(contract.ErrSignatureInvalid, "notification is not from order %s's merchant", o.OutTradeNo)
	}
	e.log.Debug("notification verified", "order", o.OutTradeNo, "provider", p, "kind", n.Kind)
	switch n.Kind {
	case payment.NotifyRefund:
		// The refund step queries every unsettled refund that is due;
		// the notification makes this one due now, whatever its schedule
		// (an ABNORMAL refund a person settled is otherwise queried only
		// at the slow rate).
		delete(e.timer(o.OutTradeNo).refundAt, n.OutRefundNo)
	default:
		if err := e.confirm(ctx, o, p, "notify"); err != nil {
			e.log.Warn("confirm notification", "order", o.OutTradeNo, "err", err)
		}
	}
	e.advance(ctx, o.OutTradeNo)
	return e.load(o.OutTradeNo)
}

// ---- the named transitions ----

// beginClose moves a creating or pending order to closing: every provider
// order that may still take money is queried, closed and queried again
// (stepClosing), and why decides the outcome (finishClosing). A payment
// found meanwhile counts as paid in time.
func (w *writer) beginClose(why, reason string) error {
	w.o.CloseReason = why
	return w.to(store.Closing, reason)
}

// failCreate ends an order every provider refused to create: no provider
// order exists, so there is nothing to close.
func (w *writer) failCreate() error {
	w.o.CloseReason = closeCreateFailed
	return w.to(store.Failed, "create_rejected")
}

// outcome moves the order to an outcome the controller is told about (paid,
// expired, cancelled) and publishes its result.
func (w *writer) outcome(next store.State, status contract.ResultStatus, reason string) error {
	if err := w.to(next, reason); err != nil {
		return err
	}
	return w.result(status, reason)
}

// deliver moves a paid or held order to delivered. Its paid result is not
// re-published any more, except a local driver's: that is telemetry,
// published once and retired on PUBACK, so it is let go out.
func (w *writer) deliver(reason string) error {
	if err := w.to(store.Delivered, reason); err != nil {
		return err
	}
	if len(w.o.Unlock) > 0 {
		return nil
	}
	return w.retireResults()
}

// hold keeps a paid order whose delivery is not confirmed for a person
// (on_no_ack = "hold"): neither delivered nor refunded.
func (w *writer) hold(reason string) error { return w.to(store.Held, reason) }

// startRefund refunds the order's whole payment (all the provider still
// holds of it) and moves the order to refunding. reason names the refund
// and the transition; detail, when given, is added to the transition's.
func (w *writer) startRefund(reason, detail string) error {
	w.addRefund(w.o.Winner, 0, reason, true, "", "")
	if detail != "" {
		reason += ": " + detail
	}
	return w.refunding(reason)
}

// refunding moves the order to refunding, where it stays until every
// refund of its own payment is settled (stepRefunding). Leaving paid or
// held it stops the re-published paid result (the unlock signal): the
// money is going back. An order already refunding stays: a new refund
// joins the others.
func (w *writer) refunding(reason string) error {
	from := w.o.State
	if from == store.Refunding {
		return nil
	}
	if err := w.to(store.Refunding, reason); err != nil {
		return err
	}
	if (from == store.Paid || from == store.Held) && len(w.o.Unlock) == 0 {
		return w.retireResults()
	}
	return nil
}

// refunded moves the order to refunded. The controller is told about money
// going back for an order it was told was paid, or that never had an
// outcome (amount mismatch, refunded during close). A late payment on an
// order it already saw expire changes nothing for it: event only.
func (w *writer) refunded(reason string) error {
	if err := w.to(store.Refunded, reason); err != nil {
		return err
	}
	if w.o.Result == "" || w.o.Result == string(contract.ResultPaid) {
		return w.result(contract.ResultRefunded, reason)
	}
	return nil
}

// ---- money ----

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

func openLeg(s store.LegState) bool {
	return s == store.LegOpen || s == store.LegAbandon || s == store.LegCreating
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
