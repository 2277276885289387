package device

import (
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/store"
)

// Deadlines that fire late. A process that stood still — stopped
// (SIGSTOP), starved on an overloaded board, stuck in I/O — wakes up with
// every deadline that fell due meanwhile firing at once, while what
// arrived meanwhile is still in the socket buffer or at the broker. The
// one deadline whose early firing costs money is the ack timeout: an ack
// the controller sent in time would be overridden by a refund after the
// service was delivered. So an ack timeout waits while:
//
//   - an ack for the order is in the inbox: it is handled first;
//   - inbound messages are backed up (beyond the window, or at the broker
//     because the inbox is full), or the store is full: the ack may be
//     among the messages not yet handled or not yet recorded;
//   - the engine has just noticed a stall: the order gets one fresh
//     ack_timeout, as after a restart (the ack may still be at the broker,
//     or the connection may have to be re-established first);
//   - the paid result may have reached the broker and the MQTT session is
//     down, or came back less than ack_timeout ago: the controller may
//     have delivered and its ack be stuck on the way (see holdForLink; a
//     result that never left is refunded on time).
//
// Other deadlines are safe when late: an expiring order is closed with a
// final query first, so a payment made meanwhile counts; retries and
// re-publications only happen later than planned.
const (
	// stallThreshold is how late the engine loop must wake to count as
	// stalled; Go's timers are rarely more than milliseconds late.
	stallThreshold = time.Second
	// stallWindow is how long after noticing a stall the ack timeouts
	// that fire get their grace.
	stallWindow = 10 * time.Second
	// ackRecheck is how soon a held ack timeout is looked at again.
	ackRecheck = 500 * time.Millisecond
	// maxLinkHold bounds how long past its own deadline an ack timeout
	// waits for the MQTT session: a customer who paid is refunded even
	// when the broker never comes back.
	maxLinkHold = 2 * time.Minute
)

// SetOnline records that the daemon's MQTT session came up (subscribed) or
// was lost; the link reports every change. Until the first report the
// engine counts the session as up, so an engine without a link (tests,
// tools) behaves as if the broker never went away.
func (e *Engine) SetOnline(up bool) {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case up:
		e.linkDownAt, e.linkUpAt = time.Time{}, now
	case e.linkDownAt.IsZero():
		e.linkDownAt = now
	}
}

// holdForLink decides whether a due ack timeout waits for the MQTT
// session, and until when (zero: it does not).
//
// A paid result that never reached the broker cannot have been acted on:
// the timeout acts on time, the result is withdrawn with the refund, and
// the customer, who has waited ack_timeout in front of a machine that did
// not start, gets the money back. Once the result may have reached the
// broker, the controller may have delivered and its ack be stuck on the
// way back: then the timeout waits while the session is down, and until a
// full ack_timeout after it is back (the ack is delivered from the
// broker's queue), as after a restart. With a broker that stays away or
// keeps dropping the session, it acts maxLinkHold after it first waited.
func (e *Engine) holdForLink(o store.Order, t *orderTimer, now time.Time) time.Time {
	e.mu.Lock()
	downAt, upAt := e.linkDownAt, e.linkUpAt
	e.mu.Unlock()
	var until time.Time
	switch {
	case !downAt.IsZero():
		until = now.Add(ackRecheck)
	case !upAt.IsZero() && now.Before(upAt.Add(e.cfg.AckTimeout)):
		until = upAt.Add(e.cfg.AckTimeout)
	default:
		return time.Time{}
	}
	if !t.resultLeft {
		t.resultLeft = e.resultMayHaveLeft(o.OutTradeNo)
	}
	if !t.resultLeft {
		return time.Time{}
	}
	if t.linkHeldAt.IsZero() {
		t.linkHeldAt = now
		e.log.Warn("ack timeout fell due while the MQTT session was down or just back: waiting for the result and the ack to pass",
			"order", o.OutTradeNo, "at_most", maxLinkHold)
	}
	last := t.linkHeldAt.Add(maxLinkHold)
	if !now.Before(last) {
		return time.Time{}
	}
	if last.Before(until) {
		return last
	}
	return until
}

// noteStall records that the loop woke late by late at real time now.
func (e *Engine) noteStall(now time.Time, late time.Duration) {
	e.mu.Lock()
	e.stallAt = now
	e.mu.Unlock()
	e.log.Warn("engine stood still (process stopped, overloaded, or waiting on I/O); unacknowledged paid orders get a fresh ack_timeout",
		"late", late.Round(time.Millisecond))
}

// holdAckTimeout decides whether the ack timeout of paid order o, due now,
// waits; it returns when to look again (zero: act now).
func (e *Engine) holdAckTimeout(o store.Order, t *orderTimer, now time.Time) time.Time {
	// While the store is full an ack may be unrecorded at the link (its
	// commit failing) or left in the inbox: neither is lost, and no refund
	// could be recorded either.
	if e.ackQueued(o.OutTradeNo) || e.backlog() || e.storageFull() {
		return now.Add(ackRecheck)
	}
	e.mu.Lock()
	stalled := !e.stallAt.IsZero() && time.Since(e.stallAt) < stallWindow
	e.mu.Unlock()
	if stalled && !t.ackGraced {
		t.ackGraced = true
		t.ackDeadline = now.Add(e.cfg.AckTimeout)
		e.log.Warn("ack timeout fell due while the daemon stood still: waiting a fresh ack_timeout for an ack already sent",
			"order", o.OutTradeNo, "until", contract.FormatTime(e.now().Add(e.cfg.AckTimeout)))
		return t.ackDeadline
	}
	return e.holdForLink(o, t, now)
}

// resultMayHaveLeft reports whether order otn's result may have reached
// the broker: the broker acknowledged it before, or it is handed to the
// link now (a publish whose acknowledgement was lost with the connection
// may have arrived). When the outbox cannot be read it says yes: waiting
// is bounded, a refund for a delivered service is not undone.
func (e *Engine) resultMayHaveLeft(otn string) bool {
	left := false
	err := e.db.View(func(tx *store.Tx) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		return tx.OutboxHeads(func(h store.OutboxHead) bool {
			if h.Kind == store.KindResult && h.OutTradeNo == otn {
				_, leased := e.leases[h.ID]
				left = left || h.Attempts > 0 || leased || e.unconfirmed[h.ID]
			}
			return true
		})
	})
	if err != nil {
		e.log.Error("read outbox", "err", err)
		return true
	}
	return left
}

// ackQueued reports whether an ack for outTradeNo waits in the inbox.
func (e *Engine) ackQueued(outTradeNo string) bool {
	found := false
	err := e.db.View(func(tx *store.Tx) error {
		var err error
		found, err = tx.InboxFind(contract.TopicAck, func(payload []byte) bool {
			req, err := contract.DecodeAck(payload)
			return err == nil && req.OutTradeNo == outTradeNo
		})
		return err
	})
	if err != nil {
		e.log.Error("read inbox", "err", err)
	}
	return found
}
