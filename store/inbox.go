package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// InboxHead returns up to n unprocessed messages, oldest first, leaving out
// those skip names (already being handled). Only the entries returned are
// decoded, so a long inbox costs what the caller asked for.
func (t *Tx) InboxHead(n int, skip func(id uint64) bool) ([]InboxEntry, error) {
	var out []InboxEntry
	c := t.tx.Bucket(bucketInbox).Cursor()
	for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
		id := binary.BigEndian.Uint64(k)
		if skip != nil && skip(id) {
			continue
		}
		var e InboxEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("decode inbox entry %d: %w", id, err)
		}
		e.ID = id
		out = append(out, e)
	}
	return out, nil
}

// InboxHas reports whether message id is still unprocessed.
func (t *Tx) InboxHas(id uint64) bool { return t.tx.Bucket(bucketInbox).Get(u64(id)) != nil }

// InboxSize is the number of unprocessed messages and the sum of their
// payload sizes. It reads the whole inbox: call it once, at start.
func (t *Tx) InboxSize() (n int, payload int64, err error) {
	err = t.tx.Bucket(bucketInbox).ForEach(func(k, v []byte) error {
		var e InboxEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decode inbox entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		n++
		payload += int64(len(e.Payload))
		return nil
	})
	return n, payload, err
}

// InboxFind reports whether an unprocessed message on topic satisfies
// match; entries on other topics are not decoded beyond their topic.
func (t *Tx) InboxFind(topic string, match func(payload []byte) bool) (bool, error) {
	c := t.tx.Bucket(bucketInbox).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var head struct {
			Topic string `json:"topic"`
		}
		if err := json.Unmarshal(v, &head); err != nil {
			return false, fmt.Errorf("decode inbox entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if head.Topic != topic {
			continue
		}
		var e InboxEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return false, fmt.Errorf("decode inbox entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if match(e.Payload) {
			return true, nil
		}
	}
	return false, nil
}

// OutboxHead is what scheduling needs of an outbox entry: everything but
// the payload, which is not decoded.
type OutboxHead struct {
	ID         uint64
	Kind       string    `json:"kind"`
	OutTradeNo string    `json:"out_trade_no"`
	NextAt     time.Time `json:"next_at"`
	// Attempts counts the broker's acknowledgements of an entry kept
	// until acked (OutboxEntry.Attempts).
	Attempts int `json:"attempts,omitempty"`
}

// OutboxHeads calls fn for every outbox entry, oldest first, until it
// returns false. Passes that only schedule (what is due, when the next
// entry is) read this instead of whole entries: under a flood they run
// for every message, and decoding every payload each time was most of
// the daemon's work.
func (t *Tx) OutboxHeads(fn func(h OutboxHead) bool) error {
	c := t.tx.Bucket(bucketOutbox).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var h OutboxHead
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("decode outbox entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		h.ID = binary.BigEndian.Uint64(k)
		if !fn(h) {
			return nil
		}
	}
	return nil
}
