package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// One order change is one store transaction: the record, the transition,
// and every message it causes (reply, event, result) land in the same
// commit, and the outside world hears of it only after the commit. This
// file is that mechanism; lifecycle.go says which changes happen.

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

// to moves the order to next and records the move, all in this
// transaction: the transition in the record, a log line, and the event on
// P/pay/event. It does nothing else. What entering a state brings with it
// (a result, stopping the re-published paid result) is done by the named
// transition that enters it (lifecycle.go): to is called from there only.
func (w *writer) to(next store.State, reason string) error {
	o := w.o
	from := o.State
	if !from.CanMove(next) {
		return fmt.Errorf("order %s: illegal transition %s → %s", o.OutTradeNo, from, next)
	}
	o.State = next
	o.Transitions = append(o.Transitions, store.Transition{From: from, To: next, At: w.now, Reason: reason})
	o.Status = statusOf(o)
	w.viewChanged = true
	w.e.log.Info("order transition", "order", o.OutTradeNo, "from", from, "state", next, "reason", reason)
	return w.event(string(from), string(next), reason)
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
	if err := w.retireResults(); err != nil {
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

// retireResults deletes the order's results from the outbox: nothing
// about it is re-published any more.
func (w *writer) retireResults() error {
	_, err := w.tx.DeleteResults(w.o.OutTradeNo)
	return err
}

// answer retires a command's inbox message (0: none) and enqueues its
// reply, both in this transaction: the command is answered exactly when
// the change it made commits.
func (w *writer) answer(inboxID uint64, v any) error {
	if err := w.doneInbox(inboxID); err != nil {
		return err
	}
	return w.reply(v)
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
