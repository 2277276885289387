package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// The calls to the payment providers, in the order an order makes them:
// Create, Query while pending, final query → Close → final query when
// closing, Refund and QueryRefund while refunding. Each call's answer is
// applied by a change (writer.go) through the lifecycle's own functions
// (observe, the named transitions): nothing here decides a state.

func (e *Engine) provider(pid string, p payment.ProviderName) (payment.Provider, error) {
	prov := e.cfg.Merchants[pid][p]
	if prov == nil {
		return nil, fmt.Errorf("merchant %q has no %s account configured", pid, p)
	}
	return prov, nil
}

// callTimeout bounds one provider call on top of the adapter's own timeout.
const callTimeout = 20 * time.Second

// createOutcome is one provider's answer to Create.
type createOutcome struct {
	created payment.Created
	err     error
}

// createAtProviders calls Create for every leg still being created. It
// records nothing: stepCreating applies the answers in one change.
func (e *Engine) createAtProviders(ctx context.Context, o store.Order) (map[payment.ProviderName]createOutcome, error) {
	var other map[string]any
	if len(o.Other) > 0 {
		d := json.NewDecoder(strings.NewReader(string(o.Other)))
		d.UseNumber()
		_ = d.Decode(&other)
	}
	results := map[payment.ProviderName]createOutcome{}
	for _, l := range o.Legs {
		if l.State != store.LegCreating {
			continue
		}
		prov, err := e.provider(o.PID, l.Provider)
		if err != nil {
			results[l.Provider] = createOutcome{err: &payment.RejectedError{Provider: l.Provider, Op: "create", Code: "NOT_CONFIGURED", Message: err.Error()}}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		c, err := prov.Create(cctx, payment.Order{
			OutTradeNo: o.OutTradeNo, Total: o.TotalFee, Subject: o.Subject, Type: o.Type,
			NotifyURL: e.notifyURL(l.Provider), ExpireAt: o.ExpiresAt, Other: other,
		})
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err() // shutting down: the next Run resumes it
		}
		if err == nil && c.CodeURL == "" {
			err = fmt.Errorf("%s create returned no code", l.Provider)
		}
		if err != nil {
			e.log.Warn("provider create failed", "order", o.OutTradeNo, "provider", l.Provider, "err", err)
		}
		results[l.Provider] = createOutcome{c, err}
	}
	return results, nil
}

// orderExists reports whether a create was refused because the provider
// already has an order with this number (paid, closed or otherwise used):
// then a payment may be waiting at the provider, and treating the leg as
// never created would keep that money without delivery.
func orderExists(err error) bool {
	for _, code := range []string{"ORDERPAID", "ORDER_CLOSED", "OUT_TRADE_NO_USED",
		"ACQ.TRADE_HAS_SUCCESS", "ACQ.TRADE_HAS_CLOSE", "ACQ.TRADE_HAS_FINISHED"} {
		if payment.IsRejected(err, code) {
			return true
		}
	}
	return false
}

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

func (e *Engine) notifyURL(p payment.ProviderName) string {
	return contract.NotifyURL(e.cfg.NotifyURL, e.cfg.DeviceID, p)
}
