package device

import (
	"container/heap"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// Poll schedule (docs/providers.md C). One timer heap serves every order: an
// order is woken when its next poll, deadline, ack timeout or retry is due,
// never by a goroutine of its own.
const (
	// firstPoll is the delay before the first query: a buyer cannot scan
	// and pay faster, and it keeps the create path quiet.
	firstPoll = 2 * time.Second
	// maxBackoff bounds the wait after unknown outcomes; rate limits get
	// maxRateLimitBackoff.
	maxBackoff          = 30 * time.Second
	maxRateLimitBackoff = 60 * time.Second
	// maxRefundPoll bounds the wait between refund queries.
	maxRefundPoll = 60 * time.Second
	// idleWake is the longest the engine loop sleeps, so Healthy stays
	// fresh while nothing happens (one wake-up every 5 s).
	idleWake = 5 * time.Second
)

// orderTimer is the in-memory schedule of one live order. Deadlines are
// derived from the persisted wall-clock times when the order is loaded and
// then carry Go's monotonic reading, so a clock step does not move them.
type orderTimer struct {
	deadline    time.Time // QR deadline
	ackDeadline time.Time
	nextPoll    time.Time
	retryAt     time.Time // next attempt after an unknown outcome (close, refund)
	failures    int       // consecutive unknown outcomes
	rateLimited bool
	// refundAt is when each unsettled refund is due for its next call.
	refundAt map[string]time.Time
	// closeReported: this run already reported the close as stuck.
	closeReported bool
	// ackGraced: the ack timeout already got its grace after a stall.
	ackGraced bool
	// linkHeldAt: when the ack timeout first waited for the MQTT session.
	linkHeldAt time.Time
	// resultLeft: the paid result may have reached the broker (it stays
	// so once seen).
	resultLeft bool
	lastErr    string // the last unknown outcome, for that report
}

func (t *orderTimer) dueRefund(outRefundNo string, at time.Time) {
	if t.refundAt == nil {
		t.refundAt = map[string]time.Time{}
	}
	t.refundAt[outRefundNo] = at
}

// Retry bounds provider work whose outcome stays unknown: a refund, or a
// close at the deadline. Such work is retried with backoff (the poll
// interval doubling up to 30 s); after StuckAfter consecutive unknown
// outcomes the order is flagged refund_stuck or close_stuck, an event says
// so once, and retrying goes on every Slow, without end: the money or the
// payable code is still out there.
type Retry struct {
	StuckAfter int
	Slow       time.Duration
}

// DefaultRetry reports stuck work after 10 unknown outcomes in a row (about
// 3½ minutes at the default 2 s poll interval) and retries it every 10
// minutes after that; an ABNORMAL refund is queried at the slow rate too.
var DefaultRetry = Retry{StuckAfter: 10, Slow: 10 * time.Minute}

// EnvTestRetry names the environment variable through which tests shorten
// the bound for a daemon process: "<stuck_after>/<slow>", e.g. "3/2s". It
// is not a setting: production runs with DefaultRetry.
const EnvTestRetry = "KIOSKPAYD_TEST_RETRY"

// ParseRetry reads EnvTestRetry's value; "" is DefaultRetry.
func ParseRetry(s string) (Retry, error) {
	if s == "" {
		return DefaultRetry, nil
	}
	n, d, ok := strings.Cut(s, "/")
	stuck, err := strconv.Atoi(n)
	if !ok || err != nil || stuck < 1 {
		return Retry{}, fmt.Errorf("%q: want <attempts>/<duration>, e.g. 3/2s", s)
	}
	slow, err := time.ParseDuration(d)
	if err != nil || slow <= 0 {
		return Retry{}, fmt.Errorf("%q: want <attempts>/<duration>, e.g. 3/2s", s)
	}
	return Retry{StuckAfter: stuck, Slow: slow}, nil
}

// stuck reports whether t's consecutive unknown outcomes reached the bound.
func (t *orderTimer) stuck(r Retry) bool { return t.failures >= r.StuckAfter }

// closeDelay is the wait before the next close attempt.
func (t *orderTimer) closeDelay(base time.Duration, r Retry) time.Duration {
	if t.stuck(r) {
		return r.Slow
	}
	return t.retryDelay(base)
}

// hotWindow is how long after creation a WeChat order is polled at half the
// base interval. Nearly every payment happens in the first minute or two; at
// the base interval alone a payment is seen uniformly 0..base later, so p99
// detection sits at the interval itself.
const hotWindow = 2 * time.Minute

// pollPace describes an order for pollInterval.
type pollPace struct {
	// scanned: an Alipay buyer scanned and is about to pay.
	scanned bool
	// hot: a WeChat order younger than hotWindow. Alipay orders are not
	// hot before the scan: no payment can happen without one, and Alipay
	// asks face-to-face integrations to query no faster than every 2–3 s.
	hot bool
	// relayed: provider notifications reach the daemon through
	// notifyrelay within milliseconds; polling is only the fallback for a
	// lost one.
	relayed bool
}

// pollInterval is the next regular query delay for a pending order.
func pollInterval(base time.Duration, p pollPace) time.Duration {
	switch {
	case p.scanned:
		return fast(base)
	case p.relayed:
		return 3 * base
	case p.hot:
		return fast(base)
	}
	return base
}

// fast is half the base interval, but not below 500 ms.
func fast(base time.Duration) time.Duration {
	return max(base/2, min(base, 500*time.Millisecond))
}

// backoff is the delay after n consecutive unknown outcomes: base doubling
// to maxBackoff, and harder (×4 per step, up to maxRateLimitBackoff) when the
// provider said it is rate limiting us.
func backoff(base time.Duration, n int, rateLimited bool) time.Duration {
	if n < 1 {
		return base
	}
	limit, factor := maxBackoff, time.Duration(2)
	if rateLimited {
		limit, factor = maxRateLimitBackoff, 4
	}
	d := base
	for i := 0; i < n && d < limit; i++ {
		d *= factor
	}
	return min(d, limit)
}

// note records one provider call outcome for backoff purposes.
func (t *orderTimer) note(err error) {
	if err == nil || !payment.IsUnknown(err) {
		t.failures, t.rateLimited = 0, false
		return
	}
	t.failures++
	t.rateLimited = errors.Is(err, payment.ErrRateLimited)
	t.lastErr = err.Error()
}

// retryDelay is the delay before the next attempt after the recorded
// failures.
func (t *orderTimer) retryDelay(base time.Duration) time.Duration {
	return backoff(base, t.failures, t.rateLimited)
}

// wakeHeap orders pending wake-ups by time; index tracks each order's entry
// so rescheduling replaces it.
type wakeHeap struct {
	items []*wakeItem
	index map[string]*wakeItem
}

type wakeItem struct {
	at  time.Time
	key string
	pos int
}

func newWakeHeap() *wakeHeap { return &wakeHeap{index: map[string]*wakeItem{}} }

func (h *wakeHeap) Len() int           { return len(h.items) }
func (h *wakeHeap) Less(i, j int) bool { return h.items[i].at.Before(h.items[j].at) }
func (h *wakeHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].pos, h.items[j].pos = i, j
}
func (h *wakeHeap) Push(x any) {
	it := x.(*wakeItem)
	it.pos = len(h.items)
	h.items = append(h.items, it)
}
func (h *wakeHeap) Pop() any {
	n := len(h.items)
	it := h.items[n-1]
	h.items = h.items[:n-1]
	return it
}

// set schedules key at at, replacing any earlier schedule.
func (h *wakeHeap) set(key string, at time.Time) {
	if it, ok := h.index[key]; ok {
		it.at = at
		heap.Fix(h, it.pos)
		return
	}
	it := &wakeItem{at: at, key: key}
	h.index[key] = it
	heap.Push(h, it)
}

// earlier schedules key at at unless it is already due sooner.
func (h *wakeHeap) earlier(key string, at time.Time) {
	if it, ok := h.index[key]; ok && !at.Before(it.at) {
		return
	}
	h.set(key, at)
}

func (h *wakeHeap) remove(key string) {
	if it, ok := h.index[key]; ok {
		heap.Remove(h, it.pos)
		delete(h.index, key)
	}
}

// next reports the earliest wake-up.
func (h *wakeHeap) next() (time.Time, bool) {
	if len(h.items) == 0 {
		return time.Time{}, false
	}
	return h.items[0].at, true
}

// popDue removes and returns every key due at now.
func (h *wakeHeap) popDue(now time.Time) []string {
	var keys []string
	for len(h.items) > 0 && !h.items[0].at.After(now) {
		it := heap.Pop(h).(*wakeItem)
		delete(h.index, it.key)
		keys = append(keys, it.key)
	}
	return keys
}
