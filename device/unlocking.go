package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/store"
)

// With a local unlock driver (Config.Unlock) the driver's outcome is the
// ack. The engine follows device/unlock's package documentation:
//
//   - create: Plan refuses an order type the driver cannot deliver, before
//     any provider order or QR code exists;
//   - paid: Plan again, its Progress stored in the order record in the
//     transaction that moves the order to paid. A paid order with a
//     Progress is "unlocking": it waits for no P/unlock/ack (an ack for it
//     is answered and ignored) and has no ack deadline; its paid result is
//     published once, for telemetry, and retired on PUBACK;
//   - one goroutine (runUnlocks) runs the driver for one order at a time,
//     every Progress committed before the driver's next step;
//   - delivered → delivered; not delivered → on_no_ack: refunding, or
//     held for a person;
//   - start-up: every order still unlocking is resumed from its last
//     Progress; one whose action may have reached the machine and cannot
//     be measured (serial, exec) stays paid with the flag
//     unlock_interrupted, is neither refunded nor run again, and the status
//     carries unlock_interrupted until a human acks or refunds it.

// unlockRetry is the wait before an action that failed without an outcome
// (a device or store error, not a stop) is resumed in the same run.
const unlockRetry = 5 * time.Second

// errUnlockAborted stops a driver whose order left the unlocking state
// while it ran (an operator refunded it).
var errUnlockAborted = errors.New("order is no longer unlocking")

// unlocker is the queue of orders waiting for the driver.
type unlocker struct {
	mu     sync.Mutex
	queue  []string
	queued map[string]bool // queued or running
	ready  chan struct{}
}

func newUnlocker() *unlocker {
	return &unlocker{queued: map[string]bool{}, ready: make(chan struct{}, 1)}
}

func (u *unlocker) add(otn string) {
	u.mu.Lock()
	if !u.queued[otn] {
		u.queued[otn] = true
		u.queue = append(u.queue, otn)
	}
	u.mu.Unlock()
	signal(u.ready)
}

func (u *unlocker) next(ctx context.Context) (string, bool) {
	for {
		u.mu.Lock()
		if len(u.queue) > 0 {
			otn := u.queue[0]
			u.queue = u.queue[1:]
			u.mu.Unlock()
			return otn, true
		}
		u.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-u.ready:
		}
	}
}

func (u *unlocker) done(otn string) {
	u.mu.Lock()
	delete(u.queued, otn)
	u.mu.Unlock()
}

// unlockOrderOf is what the driver is told about o.
func unlockOrderOf(o *store.Order) unlock.Order {
	return unlock.Order{OutTradeNo: o.OutTradeNo, Type: o.Type, TotalFee: int64(o.TotalFee),
		Provider: string(o.Winner), Custom: o.Custom}
}

// unlocking reports whether o is paid and its local action not finished.
func unlocking(o *store.Order) bool { return o.State == store.Paid && len(o.Unlock) > 0 }

// checkUnlockType refuses a create the driver could not deliver.
func (e *Engine) checkUnlockType(o *store.Order) error {
	if e.cfg.Unlock == nil {
		return nil
	}
	if _, err := e.cfg.Unlock.Plan(unlockOrderOf(o)); err != nil {
		return &contract.Error{Name: contract.ErrPriceMismatch, Field: "data.type", Msg: fmt.Sprintf("type %q cannot be started on this device: %v", o.Type, err)}
	}
	return nil
}

// paidLocal moves a paid order to paid with the driver's planned action.
func (w *writer) paidLocal(reason string) error {
	p, err := w.e.cfg.Unlock.Plan(unlockOrderOf(w.o))
	if err != nil {
		// The table changed since the create: the service cannot be
		// started, so the money goes back.
		if err := w.outcome(store.Paid, contract.ResultPaid, reason); err != nil {
			return err
		}
		return w.notDelivered("plan: " + err.Error())
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	w.o.Unlock = b
	return w.outcome(store.Paid, contract.ResultPaid, reason)
}

// notDelivered applies on_no_ack to an order the driver did not deliver
// (SPEC §3: "not delivered (refund per on_no_ack)"): refund, or hold it for
// a person.
func (w *writer) notDelivered(why string) error {
	reason := contract.ReasonUnlockNotDelivered + ": " + why
	if w.e.cfg.OnNoAck == config.OnNoAckHold {
		return w.hold(reason)
	}
	return w.startRefund(reason, "")
}

// stepUnlocking is the paid state's step with a Progress: hand the order
// to the driver, or flag it when it cannot be.
func (e *Engine) stepUnlocking(o store.Order) {
	switch {
	case o.HasFlag(contract.FlagUnlockInterrupted):
		// Waiting for a human: never run again.
	case e.cfg.Unlock == nil:
		e.unlockInterrupted(o.OutTradeNo, "no unlock driver is configured now")
	default:
		e.ul.add(o.OutTradeNo)
	}
}

// runUnlocks drives the local driver for queued orders, one at a time,
// until ctx ends.
func (e *Engine) runUnlocks(ctx context.Context) {
	for {
		otn, ok := e.ul.next(ctx)
		if !ok {
			return
		}
		retry := e.unlockOne(ctx, otn)
		e.ul.done(otn)
		if !retry.IsZero() && ctx.Err() == nil {
			e.schedule(otn, retry, false)
		}
	}
}

// unlockOne runs or resumes one order's action and records its outcome. It
// returns when to try again (zero: no retry).
func (e *Engine) unlockOne(ctx context.Context, otn string) time.Time {
	o, err := e.load(otn)
	if err != nil || !unlocking(&o) || o.HasFlag(contract.FlagUnlockInterrupted) {
		return time.Time{}
	}
	var p unlock.Progress
	if err := json.Unmarshal(o.Unlock, &p); err != nil {
		e.unlockInterrupted(otn, "stored progress unreadable: "+err.Error())
		return time.Time{}
	}
	log := e.log.With("order", otn, "driver", p.Driver, "mode", p.Mode)
	drv := e.cfg.Unlock
	run := drv.Run
	if p.Started {
		log.Info("resuming unlock", "progress", string(o.Unlock))
		run = drv.Resume
	}
	res, err := run(ctx, unlockOrderOf(&o), p, func(p unlock.Progress) error { return e.saveProgress(otn, p) })
	switch {
	case err == nil:
		return e.finishUnlock(ctx, otn, res)
	case errors.Is(err, errUnlockAborted):
		log.Warn("unlock stopped: the order left the unlocking state", "err", err)
	case ctx.Err() != nil:
		log.Info("unlock interrupted by the stop; resumed at the next start", "err", err)
	case errors.Is(err, unlock.ErrNotResumable), errors.Is(err, unlock.ErrProgress):
		e.unlockInterrupted(otn, err.Error())
	default:
		log.Error("unlock failed without an outcome; resuming later", "err", err, "retry_in", unlockRetry)
		return e.now().Add(unlockRetry)
	}
	return time.Time{}
}

// saveProgress is the driver's Reporter: it returns once p is committed.
func (e *Engine) saveProgress(otn string, p unlock.Progress) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = e.change(otn, func(w *writer) error {
		if !unlocking(w.o) || w.o.HasFlag(contract.FlagUnlockInterrupted) {
			return errUnlockAborted
		}
		var old unlock.Progress
		_ = json.Unmarshal(w.o.Unlock, &old)
		w.o.Unlock = b
		if p.Started && !old.Started {
			return w.note(contract.ReasonUnlockStarted)
		}
		return nil
	})
	return err
}

// finishUnlock records a driver's outcome. The outcome happened: a failed
// commit is retried until it lands or the daemon stops (then the next
// start resumes from the last Progress).
func (e *Engine) finishUnlock(ctx context.Context, otn string, res unlock.Result) time.Time {
	b, err := json.Marshal(res.Progress)
	if err != nil {
		e.log.Error("encode unlock progress", "order", otn, "err", err)
		return time.Time{}
	}
	record := func() error {
		release := e.locks.lock(otn)
		defer release()
		_, err := e.change(otn, func(w *writer) error {
			if !unlocking(w.o) {
				return errNoop
			}
			w.o.Unlock = b
			switch res.Outcome {
			case unlock.Delivered:
				w.o.Acked = true
				return w.deliver(contract.ReasonUnlockDelivered)
			case unlock.NotDelivered:
				return w.notDelivered(res.Reason)
			}
			return fmt.Errorf("unlock driver returned %s", res.Outcome)
		})
		return err
	}
	for {
		err := record()
		if err == nil {
			break
		}
		e.log.Error("record unlock outcome", "order", otn, "outcome", res.Outcome, "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}
		case <-t.C:
		}
	}
	e.schedule(otn, e.now(), false)
	return time.Time{}
}

// unlockInterrupted flags a paid order for a human: the machine may have
// started, so it is neither refunded nor run again.
func (e *Engine) unlockInterrupted(otn, detail string) {
	_, err := e.change(otn, func(w *writer) error {
		if !unlocking(w.o) || w.o.HasFlag(contract.FlagUnlockInterrupted) {
			return errNoop
		}
		return w.alert(contract.FlagUnlockInterrupted, detail)
	})
	if err != nil {
		e.log.Error("flag interrupted unlock", "order", otn, "err", err)
	}
	signal(e.wakeCh) // the status flag
}

// unlockAttention counts the orders a human must look at.
func unlockAttention(live []store.Order) int {
	n := 0
	for i := range live {
		if unlocking(&live[i]) && live[i].HasFlag(contract.FlagUnlockInterrupted) {
			n++
		}
	}
	return n
}
