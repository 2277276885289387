package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// How a listing of retained messages knows it has them all.
//
// A broker sends the retained messages matching a new subscription right
// after it has processed the SUBSCRIBE, ahead of anything published after
// that. So kioskctl subscribes to the retained filters (at QoS 0) and to a
// topic of its own in one SUBSCRIBE, then publishes two end markers to its
// own topic: when both come back, every retained message the broker sent
// is in. No quiet gap is guessed, however large the fleet or slow the link.
//
// The retained filters are subscribed at QoS 0 because a broker holds at
// most its per-client queue limit of unacknowledged QoS 1 messages for a
// client (Mosquitto's max_inflight_messages + max_queued_messages: 110 with
// deploy/mosquitto's old limits) and silently drops the rest.
//
// There are two markers, one at each QoS, and a listing counts as complete
// only when both are back. The QoS 0 one travels the same path as the
// retained messages, so no broker can deliver it ahead of them (NATS, for
// one, delivers QoS 1 through JetStream and QoS 0 directly). The QoS 1 one
// catches the drops we could produce on Mosquitto 2.0 with a small
// max_queued_messages: once a burst had been cut for a client that fell
// behind, the QoS 1 marker never came back in our measurements. Not every
// cut can be seen: Mosquitto with
// max_queued_bytes cuts a burst at that many payload bytes and then
// delivers both markers (measured: 4,096 of 10,000 statuses with 64 KiB).
// No MQTT 3.1.1 client can tell; deploy/mosquitto/kioskpay.conf sets no
// byte limit and a count limit far above any fleet for that reason.
//
// Checked against Mosquitto 2.0.11, NATS 2.9's MQTT (single node and a
// three-node cluster) and mochi-mqtt. A broker or ACL that refuses the
// marker topic (<prefix>/_kioskctl/#, read and write) makes every listing
// end at -timeout as possibly incomplete.

// markerLevel is the topic level under the prefix where kioskctl sends its
// end markers. It is not a device id a daemon would use for itself (none
// starts with an underscore in practice) and no filter of the daemons or
// of kioskctl's other commands matches "<prefix>/_kioskctl/<nonce>/<qos>".
const markerLevel = "_kioskctl"

// listing is a subscription whose retained messages end with the markers.
type listing struct {
	conn   *Conn
	C      <-chan message // every message in arrival order, the markers included
	marker string         // "<prefix>/_kioskctl/<nonce>": the markers are marker/0 and marker/1
	seen   [2]bool        // which markers came back

	mu        sync.Mutex
	markerErr error // the broker did not take a marker: it will not come back
}

// listRetained subscribes to live filters at QoS 1 and retained filters at
// QoS 0, plus the end markers, then sends the markers.
func (c *Conn) listRetained(ctx context.Context, live, retained []string) (*listing, error) {
	marker := c.g.Prefix + "/" + markerLevel + "/" + randomHex(8)
	markers := marker + "/+"
	subs := map[string]byte{markers: 1}
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
	markersOK := true
	for _, f := range refused {
		if f != markers {
			return nil, c.refusedError(refused)
		}
		markersOK = false
	}
	l := &listing{conn: c, C: c.feed(q), marker: marker}
	if !markersOK {
		// A cluster short of a node may fail to create the markers' QoS 1
		// consumer for a few seconds (NATS: "timeout for request type
		// CC"): try again, alone, so the retained burst is not sent twice.
		markersOK = l.resubscribeMarkers(ctx, q, markers)
	}
	if !markersOK {
		l.markerErr = errors.New("the broker refused the subscription to them")
		return l, nil
	}
	// Not waited for here: a broker busy sending the burst may answer
	// late or never, and what arrives meanwhile is worth reading. The
	// listing ends when the markers come back or nothing arrives for a
	// while; a marker the broker refused explains the latter.
	for qos := byte(0); qos <= 1; qos++ {
		tok := c.client.Publish(fmt.Sprintf("%s/%d", marker, qos), qos, false, []byte("end of retained messages"))
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
	}
	return l, nil
}

// resubscribeMarkers retries the markers' subscription for up to -timeout.
func (l *listing) resubscribeMarkers(ctx context.Context, q *queue, filter string) bool {
	deadline := time.Now().Add(l.conn.g.Timeout)
	for wait := 250 * time.Millisecond; time.Now().Add(wait).Before(deadline); wait = min(2*wait, 2*time.Second) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		refused, err := l.conn.subscribeTo(ctx, q, map[string]byte{filter: 1})
		if err == nil && len(refused) == 0 {
			return true
		}
	}
	return false
}

// Marker reports whether m is one of this listing's end markers, and
// whether with it both have come back.
func (l *listing) Marker(m message) (isMarker, done bool) {
	switch m.Topic {
	case l.marker + "/0":
		l.seen[0] = true
	case l.marker + "/1":
		l.seen[1] = true
	default:
		return false, false
	}
	return true, l.seen[0] && l.seen[1]
}

// stray reports whether m is an end marker of any listing of kioskctl's
// (one that came back after its listing gave up, or another operator's).
func stray(prefix string, m message) bool {
	return strings.HasPrefix(m.Topic, prefix+"/"+markerLevel+"/")
}

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
	var missing []string
	for qos, ok := range l.seen {
		if !ok {
			missing = append(missing, fmt.Sprintf("the QoS %d one", qos))
		}
	}
	what := fmt.Sprintf("kioskctl's end-of-listing markers did not come back (%s) within %s of the last message", strings.Join(missing, " and "), idle)
	if markerErr != nil {
		what = fmt.Sprintf("the broker did not take kioskctl's end-of-listing markers (%v)", markerErr)
	}
	return &incompleteError{fmt.Sprintf("%s; likely causes: a broker that drops messages to a client "+
		"(Mosquitto 2.0 with max_queued_messages below the fleet size: see deploy/mosquitto/kioskpay.conf), "+
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
