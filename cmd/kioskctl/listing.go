package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// How a listing of retained messages knows it has them all.
//
// A broker sends the retained messages matching a new subscription right
// after it has processed the SUBSCRIBE, ahead of anything published after
// that. So kioskctl subscribes to the retained filters (at QoS 0) and to a
// topic of its own (at QoS 1) in one SUBSCRIBE, then publishes one message
// to its own topic: when that end marker comes back, every retained
// message the broker sent is in. No quiet gap is guessed, however large
// the fleet or slow the link.
//
// The retained filters are subscribed at QoS 0 because a broker holds at
// most its per-client queue limit of unacknowledged QoS 1 messages for a
// client (Mosquitto's max_inflight_messages + max_queued_messages: 110 with
// deploy/mosquitto's old limits) and silently drops the rest. The marker
// is QoS 1 so a broker that does drop QoS 0 messages for a reader that
// falls behind (Mosquitto 2.0 with max_queued_messages > 0) cannot
// deliver it ahead of the ones it kept: in our measurements it never came
// back once a burst had been cut short, and the listing is then reported
// as possibly incomplete (BENCHMARKS.md, fleet).
//
// Checked against Mosquitto 2.0.11, NATS 2.9's MQTT (single node and a
// three-node cluster) and mochi-mqtt. A broker or ACL that refuses the
// marker topic (<prefix>/_kioskctl/#, read and write) makes every listing
// end at -timeout as possibly incomplete.

// markerLevel is the topic level under the prefix where kioskctl sends its
// end markers. It is not a device id a daemon would use for itself (none
// starts with an underscore in practice) and no filter of the daemons or
// of kioskctl's other commands matches "<prefix>/_kioskctl/<nonce>".
const markerLevel = "_kioskctl"

// listing is a subscription whose retained messages end with a marker.
type listing struct {
	conn   *Conn
	C      <-chan message // every message in arrival order, the marker included
	marker string

	mu        sync.Mutex
	markerErr error // the broker did not take the marker: it will not come back
}

// listRetained subscribes to live filters at QoS 1 and retained filters at
// QoS 0, plus the end marker, then sends the marker.
func (c *Conn) listRetained(ctx context.Context, live, retained []string) (*listing, error) {
	marker := c.g.Prefix + "/" + markerLevel + "/" + randomHex(8)
	subs := map[string]byte{marker: 1}
	for _, f := range live {
		subs[f] = 1
	}
	for _, f := range retained {
		subs[f] = 0
	}
	q := newQueue()
	refused, err := c.subscribeTo(ctx, q, subs)
	if err != nil {
		return nil, err
	}
	markerOK := true
	for _, f := range refused {
		if f != marker {
			return nil, c.refusedError(refused)
		}
		markerOK = false
	}
	l := &listing{conn: c, C: c.feed(q), marker: marker}
	if !markerOK {
		// A cluster short of a node may fail to create the marker's QoS 1
		// consumer for a few seconds (NATS: "timeout for request type
		// CC"): try again, alone, so the retained burst is not sent twice.
		markerOK = l.resubscribeMarker(ctx, q)
	}
	if !markerOK {
		l.markerErr = errors.New("the broker refused the subscription to it")
		return l, nil
	}
	// Not waited for here: a broker busy sending the burst may answer
	// late or never, and what arrives meanwhile is worth reading. The
	// listing ends when the marker comes back or nothing arrives for a
	// while; a marker the broker refused explains the latter.
	tok := c.client.Publish(marker, 1, false, []byte("end of retained messages"))
	go func() {
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				l.mu.Lock()
				l.markerErr = err
				l.mu.Unlock()
			}
		case <-c.done:
		}
	}()
	return l, nil
}

// resubscribeMarker retries the marker's subscription for up to -timeout.
func (l *listing) resubscribeMarker(ctx context.Context, q *queue) bool {
	deadline := time.Now().Add(l.conn.g.Timeout)
	for wait := 250 * time.Millisecond; time.Now().Add(wait).Before(deadline); wait = min(2*wait, 2*time.Second) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		refused, err := l.conn.subscribeTo(ctx, q, map[string]byte{l.marker: 1})
		if err == nil && len(refused) == 0 {
			return true
		}
	}
	return false
}

// IsEnd reports whether m is the end marker.
func (l *listing) IsEnd(m message) bool { return m.Topic == l.marker }

// incompleteError says why a listing may be missing retained messages.
// It maps to ExitIncomplete.
type incompleteError struct{ reason string }

func (e *incompleteError) Error() string {
	return "the listing may be incomplete: " + e.reason
}

// stalled is the incompleteError for a listing that saw nothing for idle.
func (l *listing) stalled(idle time.Duration) *incompleteError {
	l.mu.Lock()
	markerErr := l.markerErr
	l.mu.Unlock()
	what := fmt.Sprintf("the end-of-listing marker did not come back within %s of the last message", idle)
	if markerErr != nil {
		what = fmt.Sprintf("the broker did not take kioskctl's end-of-listing marker (%v)", markerErr)
	}
	return &incompleteError{fmt.Sprintf("%s; likely causes: a broker that drops messages to a client that falls behind "+
		"(Mosquitto 2.0 with max_queued_messages above 0, see deploy/mosquitto/kioskpay.conf), "+
		"an ACL that does not let this user publish and read %s/%s/#, or a slow link (try a longer -timeout)",
		what, l.conn.g.Prefix, markerLevel)}
}

// dropped is the incompleteError for a connection lost mid-listing.
func (l *listing) dropped() *incompleteError {
	return &incompleteError{fmt.Sprintf("the connection to %s was lost before the end of the listing: %v", l.conn.Broker(), l.conn.LostErr())}
}

// interrupted is the incompleteError for a listing cut short by Ctrl-C.
func interrupted() *incompleteError {
	return &incompleteError{"interrupted before the end of the listing"}
}

// resetTimer restarts t for d, draining a pending expiry.
func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}
