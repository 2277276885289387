package device

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/store"
)

// The inbox is the engine's only queue of inbound work, and it is on disk.
// Memory holds at most InboxWindow messages being handled; the rest wait in
// the inbox. A flood therefore costs disk, not memory, and only up to
// MaxInboxBytes of payload: beyond that Accept waits before recording
// more, the link stops reading, and the broker keeps the rest (its
// per-client queue, deploy/mosquitto). Payloads over MaxPayload never
// enter the inbox: Accept answers them with PAYLOAD_TOO_LARGE in the same
// commit, so a flood of large junk costs neither.
const (
	// InboxWindow is how many inbox messages are handled at once.
	InboxWindow = 16
	// MaxInboxBytes is how much payload the inbox holds before Accept
	// waits for room: some 20,000 ordinary commands, or 256 of the
	// largest accepted.
	MaxInboxBytes = 4 << 20
)

// DefaultStaleAfter is how long a create or cancel may wait in the daemon's
// own inbox before it is refused with COMMAND_STALE instead of executed: a
// create minutes old must not supersede the order the customer is looking
// at. It counts from the moment the daemon recorded the message (its
// ReceivedAt), so commands the broker held while the device was offline
// are not stale on arrival; a backend bounds those with a signed ts.
const DefaultStaleAfter = 30 * time.Second

// EnvTestStaleAfter names the environment variable through which tests
// shorten StaleAfter for a daemon process ("5s"). It is not a setting.
const EnvTestStaleAfter = "KIOSKPAYD_TEST_STALE_AFTER"

// retryFirst and retryMax bound the wait before a message whose commit
// failed (a full disk) is handled again.
const (
	retryFirst = 100 * time.Millisecond
	retryMax   = 5 * time.Second
)

// Accept durably records one raw inbound message; see AcceptAll.
func (e *Engine) Accept(ctx context.Context, topicSuffix string, payload []byte) error {
	return e.AcceptAll(ctx, []contract.Inbound{{Topic: topicSuffix, Payload: payload}})
}

// AcceptAll durably records raw inbound messages, in order, in one commit,
// and returns; processing happens on the engine's goroutines. The link
// acknowledges them to the broker only after it returns nil, so nothing
// acknowledged is lost. A payload over MaxPayload is answered at once, in
// the same commit, with PAYLOAD_TOO_LARGE. While the inbox is full it waits
// (until ctx ends) for room. The error is non-nil only when the messages
// could not be recorded.
func (e *Engine) AcceptAll(ctx context.Context, msgs []contract.Inbound) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.waitRoom(ctx); err != nil {
		return fmt.Errorf("record inbound messages: %w", err)
	}
	now := e.now()
	var added, size int64
	replied := false
	// Concurrent callers share one commit; each returns only once its own
	// messages are on disk.
	err := e.db.Batch(func(tx *store.Tx) error {
		added, size, replied = 0, 0, false
		for _, m := range msgs {
			if len(m.Payload) > contract.MaxPayload {
				if err := enqueueReply(tx, now, tooLarge(m)); err != nil {
					return err
				}
				replied = true
				continue
			}
			if _, err := tx.AddInbox(store.InboxEntry{Topic: m.Topic, Payload: m.Payload, ReceivedAt: now}); err != nil {
				return err
			}
			added++
			size += int64(len(m.Payload))
		}
		return nil
	})
	if err != nil {
		e.storageError(err)
		return fmt.Errorf("record inbound messages: %w", err)
	}
	e.inboxLen.Add(added)
	e.inboxBytes.Add(size)
	if added > 0 {
		signal(e.inboxCh)
	}
	if replied {
		signal(e.outboxCh)
	}
	return nil
}

// tooLarge is the reply to an oversized payload, with the request id when
// one can be read before the limit.
func tooLarge(m contract.Inbound) contract.Reply {
	return contract.ErrorReply(contract.SalvageRequestID(m.Payload[:contract.MaxPayload+1]), contract.ActionForTopic(m.Topic),
		contract.Errorf(contract.ErrPayloadTooLarge, "payload is %d bytes, the limit is %d", len(m.Payload), contract.MaxPayload))
}

// enqueueReply adds a reply to the outbox in tx.
func enqueueReply(tx *store.Tx, now time.Time, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = tx.Enqueue(store.OutboxEntry{Topic: contract.TopicReply, Payload: b, Kind: store.KindReply, NextAt: now, CreatedAt: now})
	return err
}

// waitRoom waits until the inbox holds less than MaxInboxBytes.
func (e *Engine) waitRoom(ctx context.Context) error {
	for {
		e.mu.Lock()
		room := e.room
		e.mu.Unlock()
		if e.inboxBytes.Load() < MaxInboxBytes {
			return nil
		}
		e.backlogged.Add(1)
		select {
		case <-room:
		case <-ctx.Done():
		}
		e.backlogged.Add(-1)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// backlog reports whether inbound messages are waiting behind the ones
// being handled: in the inbox beyond the window, or at the broker because
// the inbox is full. Deadlines that a queued message may answer (an ack)
// wait for it.
func (e *Engine) backlog() bool {
	return e.backlogged.Load() > 0 || e.inboxLen.Load() > InboxWindow
}

// dispatchInbox starts handling the oldest messages not yet being
// handled, up to InboxWindow at a time, each on a goroutine, but never two
// about the same order (inboxKey) at once: a later command about an order
// stays in the inbox until the earlier one is answered. So commands about
// one order are handled in arrival order, commands about different orders
// in parallel, and the queue is the inbox on disk; exclusion is the order
// lock's (keyedMutex), taken by the handlers.
func (e *Engine) dispatchInbox() error {
	e.mu.Lock()
	free := InboxWindow - len(e.inflight)
	busy := maps.Clone(e.inflight)
	e.mu.Unlock()
	if free <= 0 {
		return nil
	}
	var entries []store.InboxEntry
	err := e.db.View(func(tx *store.Tx) error {
		var err error
		entries, err = tx.InboxHead(free, func(id uint64) bool { _, ok := busy[id]; return ok })
		return err
	})
	if err != nil {
		return err
	}
	keys := make(map[string]bool, len(busy))
	for _, k := range busy {
		keys[k] = true
	}
	for _, m := range entries {
		key := inboxKey(m)
		if keys[key] {
			continue // waits for the command before it
		}
		keys[key] = true
		e.mu.Lock()
		e.inflight[m.ID] = key
		e.mu.Unlock()
		e.work.Add(1)
		go func() {
			defer e.work.Done()
			e.process(m)
		}()
	}
	return nil
}

// process handles one inbox message until it is answered: a handler whose
// commit failed (a full disk) leaves the message in the inbox, and it is
// handled again after a backoff, so every command gets exactly one reply
// without a restart. Later commands about the same order wait behind it.
func (e *Engine) process(m store.InboxEntry) {
	ctx := e.ctx
	wait := retryFirst
	for {
		e.handle(ctx, m)
		if ctx.Err() != nil {
			break // left in the inbox for the next Run
		}
		pending := false
		if err := e.db.View(func(tx *store.Tx) error { pending = tx.InboxHas(m.ID); return nil }); err != nil {
			e.log.Error("read inbox", "err", err)
			pending = true
		}
		if !pending {
			e.inboxLen.Add(-1)
			e.inboxBytes.Add(-int64(len(m.Payload)))
			break
		}
		e.log.Warn("command not answered yet; handling it again", "topic", m.Topic, "inbox_id", m.ID, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		if ctx.Err() != nil {
			break
		}
		wait = min(2*wait, retryMax)
	}
	e.mu.Lock()
	delete(e.inflight, m.ID)
	close(e.room)
	e.room = make(chan struct{})
	e.mu.Unlock()
	signal(e.inboxCh)
}

// stale reports whether a create or cancel waited in the inbox longer than
// StaleAfter.
func (e *Engine) stale(m store.InboxEntry) bool {
	return !m.ReceivedAt.IsZero() && e.now().Sub(m.ReceivedAt) > e.cfg.StaleAfter
}

func staleError(m store.InboxEntry, now time.Time) error {
	return contract.Errorf(contract.ErrCommandStale, "the command waited %s in the device's inbox (received %s); send it again if it still applies",
		now.Sub(m.ReceivedAt).Round(time.Second), contract.FormatTime(m.ReceivedAt))
}

// inboxKey orders commands per order: the out_trade_no the command is
// about, read as its decoder reads it (contract.OutTradeNoOf), else a key
// of its own.
func inboxKey(m store.InboxEntry) string {
	if otn := contract.OutTradeNoOf(m.Topic, m.Payload); otn != "" {
		return otn
	}
	return fmt.Sprintf("#inbox-%d", m.ID)
}
