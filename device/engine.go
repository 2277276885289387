// Package device is the device side of kioskpay: the order engine that takes
// commands, drives provider orders through their lifecycle, persists every
// step, and produces the replies, results and events the MQTT link publishes.
//
// The engine never publishes anything itself. It writes messages to the
// store's outbox in the same transaction as the state change that caused
// them, and the link drains the outbox (Due, Published). Inbound messages
// take the opposite path: Accept records them durably before the broker is
// acknowledged, and the engine processes them from the inbox.
package device

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// Config is everything the engine needs, passed explicitly.
type Config struct {
	DeviceID string
	Version  string
	// DefaultProvider is used when a create request names none: "wxpay",
	// "alipay" or "any". Zero fields of Config take config's Default*
	// values, the same the configuration file falls back to.
	DefaultProvider payment.ProviderName
	DefaultExpire   time.Duration
	MaxFee          payment.Fen
	PollInterval    time.Duration
	// NotifyURL is the public base of a notifyrelay ("" = poll only);
	// orders get NotifyURL + "/notify/<device_id>/<provider>".
	NotifyURL  string
	AckTimeout time.Duration
	OnNoAck    config.OnNoAck
	// ResultKey signs results when set; with RequireSignedRequests it also
	// authenticates create, cancel, refund and ack requests.
	ResultKey             []byte
	RequireSignedRequests bool
	// Catalog maps order type to its only allowed total_fee; empty allows
	// any type and amount.
	Catalog map[string]payment.Fen
	// ClockSynced reports whether the system clock is trustworthy; nil
	// means always. BuildTime is the binary's build time: a clock before it
	// is certainly wrong.
	ClockSynced func() (bool, error)
	BuildTime   time.Time
	// Merchants maps pid to that merchant's provider accounts.
	Merchants map[string]map[payment.ProviderName]payment.Provider
	// Observer is told about every order change the display shows; nil
	// for none. It must not block.
	Observer Observer
	// Now is the clock (default time.Now); tests inject one.
	Now    func() time.Time
	Logger *slog.Logger
	// PruneEvery is how often finished orders past the store's retention
	// are deleted (default 1 h): at start and then every PruneEvery, on a
	// goroutine of its own, in short batches (store.Prune).
	PruneEvery time.Duration
	// Retry bounds refunds and closes whose outcome stays unknown; zero
	// fields take DefaultRetry's.
	Retry Retry
	// StaleAfter is how long a create or cancel may wait in the inbox
	// before it is refused with COMMAND_STALE (default DefaultStaleAfter).
	StaleAfter time.Duration
	// MinFree is the free space below which the store's file system counts
	// as full and new orders are refused with STORAGE_FULL (default
	// DefaultMinFree).
	MinFree uint64
	// Unlock is the local unlock driver whose outcome is the ack (see
	// unlocking.go); nil when an MQTT controller acks P/pay/result. The
	// caller opens it before New and closes it after Run returns.
	Unlock unlock.Driver
}

// Observer is told when an order visible on the display changes.
type Observer interface{ OrderChanged(View) }

// View is what the display needs to know about an order.
type View struct {
	OutTradeNo   string
	State        string
	Total        payment.Fen
	Subject      string
	Codes        []CodeView
	ExpiresAt    time.Time
	PaidProvider payment.ProviderName
	Reason       string
}

// CodeView is one QR code to show.
type CodeView struct {
	Provider payment.ProviderName
	CodeURL  string
}

// Engine runs the order lifecycle. Create it with New, start it with Run.
type Engine struct {
	cfg Config
	db  *store.DB
	log *slog.Logger
	now func() time.Time

	inboxCh  chan struct{}
	wakeCh   chan struct{}
	outboxCh chan struct{}
	statusCh chan struct{}

	mu      sync.Mutex
	timers  map[string]*orderTimer
	wake    *wakeHeap
	ticking map[string]bool
	leases  map[uint64]time.Time
	// unconfirmed are outbox entries the broker acknowledged whose record
	// of that could not be committed yet: never published again.
	unconfirmed map[uint64]bool
	inflight    map[uint64]string // inbox messages being handled, with their order key
	room        chan struct{}     // closed (and replaced) when one is done
	status      contract.Status
	clockAt     time.Time
	running     bool
	storage     storageState
	// storeRecovered: the store was salvaged from a damaged file and no
	// operator has cleared the record yet.
	storeRecovered bool
	// unlockAttention counts paid orders flagged unlock_interrupted.
	unlockAttention int
	ul              *unlocker
	stallAt         time.Time // real time the loop last noticed it had stalled
	// linkDownAt is when the MQTT session was lost (zero while it is up or
	// was never reported), linkUpAt when it last came up (SetOnline).
	linkDownAt, linkUpAt time.Time

	inboxLen   atomic.Int64 // unprocessed inbox messages
	inboxBytes atomic.Int64 // and their payload bytes
	backlogged atomic.Int32 // Accept calls waiting for room
	lastPassNs atomic.Int64
	passes     atomic.Int64 // loop passes, to keep idle wake-ups in check

	createMu sync.Mutex
	locks    keyedMutex
	work     sync.WaitGroup
	ctx      context.Context
}

// New checks cfg and returns an engine over db.
func New(db *store.DB, cfg Config) (*Engine, error) {
	if db == nil {
		return nil, errors.New("device: New: nil store")
	}
	if cfg.DeviceID == "" {
		return nil, errors.New("device: New: DeviceID is required")
	}
	cfg.DefaultProvider = cmp.Or(cfg.DefaultProvider, config.DefaultProvider)
	if !contract.ValidProvider(string(cfg.DefaultProvider)) {
		return nil, fmt.Errorf("device: New: default provider %q: want wxpay, alipay or any", cfg.DefaultProvider)
	}
	cfg.OnNoAck = cmp.Or(cfg.OnNoAck, config.DefaultOnNoAck)
	if !cfg.OnNoAck.Valid() {
		return nil, fmt.Errorf("device: New: on_no_ack %q: want refund or hold", cfg.OnNoAck)
	}
	if cfg.RequireSignedRequests && len(cfg.ResultKey) == 0 {
		return nil, errors.New("device: New: signed requests require a result key")
	}
	if len(cfg.Merchants) == 0 {
		return nil, errors.New("device: New: no merchants configured")
	}
	if cfg.DefaultExpire <= 0 {
		cfg.DefaultExpire = config.DefaultExpire
	}
	if cfg.MaxFee <= 0 {
		cfg.MaxFee = config.DefaultMaxFee
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = config.DefaultPoll
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = config.DefaultAckTimeout
	}
	if cfg.PruneEvery <= 0 {
		cfg.PruneEvery = time.Hour
	}
	if cfg.Retry.StuckAfter <= 0 {
		cfg.Retry.StuckAfter = DefaultRetry.StuckAfter
	}
	if cfg.Retry.Slow <= 0 {
		cfg.Retry.Slow = DefaultRetry.Slow
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.MinFree == 0 {
		cfg.MinFree = DefaultMinFree
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg:         cfg,
		db:          db,
		log:         cfg.Logger,
		now:         cfg.Now,
		inboxCh:     make(chan struct{}, 1),
		wakeCh:      make(chan struct{}, 1),
		outboxCh:    make(chan struct{}, 1),
		statusCh:    make(chan struct{}, 1),
		timers:      map[string]*orderTimer{},
		wake:        newWakeHeap(),
		ticking:     map[string]bool{},
		leases:      map[uint64]time.Time{},
		inflight:    map[uint64]string{},
		unconfirmed: map[uint64]bool{},
		room:        make(chan struct{}),
		locks:       keyedMutex{m: map[string]*keyedEntry{}},
		ul:          newUnlocker(),
	}
	e.status = contract.Status{Online: true, Version: cfg.Version, ClockSynced: e.clockSynced()}
	err := db.View(func(tx *store.Tx) error {
		n, size, err := tx.InboxSize()
		e.inboxLen.Store(int64(n))
		e.inboxBytes.Store(size)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("device: New: read inbox: %w", err)
	}
	e.storeRecovered = e.recovered() != nil
	e.lastPassNs.Store(time.Now().UnixNano())
	return e, nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// republishDelay is the wait before re-publishing an unacknowledged result:
// 5 s doubling to 60 s.
func republishDelay(attempts int) time.Duration {
	d := 5 * time.Second
	for i := 1; i < attempts && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// leaseFor is how long an entry handed out by Due is withheld from the next
// Due call while its PUBACK is awaited.
const leaseFor = 15 * time.Second

// Due returns the outbox entries to publish now, oldest first. An entry
// handed out is not returned again for 15 s unless Published is called.
func (e *Engine) Due(now time.Time) ([]contract.Outgoing, error) {
	var due []contract.Outgoing
	err := e.db.View(func(tx *store.Tx) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		var ids []uint64
		err := tx.OutboxHeads(func(h store.OutboxHead) bool {
			if !h.NextAt.After(now) && !e.unconfirmed[h.ID] {
				if l, ok := e.leases[h.ID]; !ok || !l.After(now) {
					ids = append(ids, h.ID)
				}
			}
			return true
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			o, ok, err := tx.OutboxEntry(id)
			if err != nil {
				return err
			}
			if ok {
				e.leases[id] = now.Add(leaseFor)
				due = append(due, contract.Outgoing{ID: o.ID, Topic: o.Topic, Payload: o.Payload, Retain: o.Retain})
			}
		}
		return nil
	})
	return due, err
}

// Published tells the engine the broker acknowledged entry id. Replies and
// events are deleted; results stay and are re-published on a backoff
// schedule until the controller acks them. When that commit fails (a full
// disk) the engine remembers the entry as published and records it later:
// the broker has the message, and publishing it again would answer a
// command twice.
func (e *Engine) Published(id uint64) error {
	err := e.confirmPublished([]uint64{id})
	e.mu.Lock()
	delete(e.leases, id)
	if err != nil {
		e.unconfirmed[id] = true
	}
	e.mu.Unlock()
	signal(e.wakeCh)
	if err != nil {
		e.storageError(err)
		e.log.Warn("could not record a published message yet; it is not published again", "outbox_id", id, "err", err)
	}
	return nil
}

// confirmPublished records that the broker acknowledged entries ids.
func (e *Engine) confirmPublished(ids []uint64) error {
	now := e.now()
	return e.db.Batch(func(tx *store.Tx) error {
		for _, id := range ids {
			o, ok, err := tx.OutboxEntry(id)
			if err != nil {
				return err
			}
			switch {
			case !ok:
			case !o.UntilAck:
				err = tx.DeleteOutbox(id)
			default:
				o.Attempts++
				o.NextAt = now.Add(republishDelay(o.Attempts))
				err = tx.PutOutbox(o)
			}
			if err != nil {
				return fmt.Errorf("outbox entry %d published: %w", id, err)
			}
		}
		return nil
	})
}

// retryUnconfirmed records the publications whose commit failed before.
func (e *Engine) retryUnconfirmed() {
	e.mu.Lock()
	ids := make([]uint64, 0, len(e.unconfirmed))
	for id := range e.unconfirmed {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	if len(ids) == 0 || e.confirmPublished(ids) != nil {
		return
	}
	e.mu.Lock()
	for _, id := range ids {
		delete(e.unconfirmed, id)
	}
	e.mu.Unlock()
}

// OutboxChanged is signalled when something became due for publication.
func (e *Engine) OutboxChanged() <-chan struct{} { return e.outboxCh }

// Status is the device status the link publishes (retained) on P/status.
func (e *Engine) Status() contract.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.status
	s.Flags = e.statusFlagsLocked()
	return s
}

// StatusChanged is signalled when Status changed.
func (e *Engine) StatusChanged() <-chan struct{} { return e.statusCh }

// Healthy reports whether the engine loop completed a pass within maxAge.
// The loop wakes at least every 5 s, so a stale pass means it is stuck; the
// systemd watchdog is fed only while this holds.
func (e *Engine) Healthy(maxAge time.Duration) bool {
	return time.Since(time.Unix(0, e.lastPassNs.Load())) <= maxAge
}

func (e *Engine) clockSynced() bool {
	if e.now().Before(e.cfg.BuildTime) {
		return false
	}
	if e.cfg.ClockSynced == nil {
		return true
	}
	ok, err := e.cfg.ClockSynced()
	return err == nil && ok
}

// Run resumes every live order, processes the inbox and drives timers until
// ctx is cancelled. It returns after in-flight work has stopped; every order
// is left in a state the next Run resumes from.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("device: engine already running")
	}
	e.running = true
	e.ctx = ctx
	e.status.StartedAt = contract.FormatTime(e.now())
	e.mu.Unlock()
	e.keepReserve()

	if e.cfg.Unlock != nil {
		e.work.Add(1)
		go func() {
			defer e.work.Done()
			e.runUnlocks(ctx)
		}()
	}
	if err := e.resume(); err != nil {
		return err
	}
	e.work.Add(1)
	go func() {
		defer e.work.Done()
		e.retain(ctx)
	}()
	if r := e.recovered(); r != nil && (!r.Announced || !r.Reconciled) {
		e.work.Add(1)
		go func() {
			defer e.work.Done()
			e.followRecovery(ctx, r)
		}()
	}
	signal(e.statusCh)
	signal(e.outboxCh)

	t := time.NewTimer(0)
	defer t.Stop()
	expect := time.Now()
	// A pass woken by a signal (a message recorded, handled or published)
	// looks at the outbox and the status at most every busyPass: under a
	// flood the loop turns for every message, and reading the outbox each
	// time was most of the daemon's CPU (BENCHMARKS.md). New messages reach
	// the link at once anyway (afterCommit); what falls due is seen at
	// most busyPass late.
	var nextOut, lookedAt time.Time
	signalled := false
	for {
		// A pass that starts well after the timer was due means the whole
		// process stood still (SIGSTOP, an overloaded board, an I/O
		// stall): deadlines that fell due meanwhile must not act before
		// what was queued meanwhile is read (holdAckTimeout).
		real := time.Now()
		if late := real.Sub(expect); late > stallThreshold {
			e.noteStall(real, late)
		}
		e.lastPassNs.Store(real.UnixNano())
		e.passes.Add(1)
		now := e.now()
		e.mu.Lock()
		due := e.wake.popDue(now)
		e.mu.Unlock()
		for _, key := range due {
			e.queueTick(key)
		}
		if err := e.dispatchInbox(); err != nil {
			e.log.Error("read inbox", "err", err)
		}
		skipped := signalled && real.Sub(lookedAt) < busyPass
		if !skipped {
			lookedAt = real
			e.retryUnconfirmed()
			nextOut = e.checkOutbox(now)
			e.checkStorage(real)
			e.refreshStatus(now)
		}

		wait := idleWake
		if e.storageFull() {
			wait = storageRecheck
		}
		e.mu.Lock()
		if at, ok := e.wake.next(); ok {
			wait = min(wait, at.Sub(now))
		}
		e.mu.Unlock()
		if !nextOut.IsZero() {
			wait = min(wait, nextOut.Sub(now))
		}
		if skipped {
			wait = min(wait, busyPass-real.Sub(lookedAt))
		}
		wait = max(wait, time.Millisecond)
		t.Reset(wait)
		expect = time.Now().Add(wait)
		signalled = true
		select {
		case <-ctx.Done():
			e.work.Wait()
			return nil
		case <-e.inboxCh:
		case <-e.wakeCh:
		case <-t.C:
			signalled = false
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// busyPass bounds how often a loop woken by inbound messages alone looks
// at the outbox and the status.
const busyPass = 100 * time.Millisecond

// checkOutbox signals the link when entries are due and returns when the
// next one becomes due (zero if none is waiting).
func (e *Engine) checkOutbox(now time.Time) time.Time {
	var next time.Time
	anyDue := false
	_ = e.db.View(func(tx *store.Tx) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		for id, l := range e.leases {
			if !l.After(now) {
				delete(e.leases, id)
			}
		}
		return tx.OutboxHeads(func(o store.OutboxHead) bool {
			if e.unconfirmed[o.ID] {
				return true
			}
			at := o.NextAt
			if l, ok := e.leases[o.ID]; ok && l.After(at) {
				at = l
			}
			if !at.After(now) {
				anyDue = true
			} else if next.IsZero() || at.Before(next) {
				next = at
			}
			return true
		})
	})
	if anyDue {
		signal(e.outboxCh)
	}
	return next
}

func (e *Engine) refreshStatus(now time.Time) {
	e.mu.Lock()
	check := now.Sub(e.clockAt) >= idleWake || e.clockAt.IsZero()
	e.mu.Unlock()
	synced := false
	if check {
		synced = e.clockSynced()
	}
	pending, attention := 0, 0
	_ = e.db.View(func(tx *store.Tx) error {
		live, err := tx.LiveOrders()
		for _, o := range live {
			if o.State == store.Pending || o.State == store.Creating {
				pending++
			}
		}
		attention = unlockAttention(live)
		return err
	})
	e.mu.Lock()
	changed := e.status.Pending != pending
	e.status.Pending = pending
	e.unlockAttention = attention
	if flags := e.statusFlagsLocked(); !slices.Equal(flags, e.status.Flags) {
		e.status.Flags, changed = flags, true
	}
	if check {
		e.clockAt = now
		changed = changed || e.status.ClockSynced != synced
		e.status.ClockSynced = synced
	}
	e.mu.Unlock()
	if changed {
		signal(e.statusCh)
	}
}

// retain deletes finished orders past the retention at start and then
// every PruneEvery until ctx ends. It runs beside the loop, never on it:
// the store deletes in short batches, and between batches retain steps
// aside (yield), so a create rarely finds a batch in its way.
func (e *Engine) retain(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		st, err := e.db.Prune(ctx, e.now(), func(batch time.Duration) {
			// Each batch maps megabytes of the file (store.ReleaseMemory
			// says why); giving them back at once keeps the peak at one
			// batch's worth instead of growing with the pass.
			e.releaseMemory()
			e.yield(ctx, batch)
		})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			e.log.Error("prune finished orders", "err", err)
		case st.Deleted > 0:
			e.log.Info("pruned finished orders", "count", st.Deleted, "batches", st.Batches,
				"longest_batch", st.Longest.Round(time.Microsecond), "took", time.Since(start).Round(time.Millisecond))
		}
		// The pages of the deleted orders were read: give them back.
		e.releaseMemory()
		if st.Deleted > 0 {
			// A long pass leaves the heap grown by what it decoded and
			// rewrote; the runtime would return it to the system only
			// slowly. Once an hour, a forced collection is cheap.
			debug.FreeOSMemory()
		}
		t.Reset(e.cfg.PruneEvery)
	}
}

// maxYield bounds how long retention waits for commands to be handled
// before its next batch, so a steady stream of commands cannot stop it.
const maxYield = time.Second

// yield is retention's pause between batches: as long as the batch took
// (so it holds the write lock at most half the time), and then until no
// command is being handled (a create waits for no batch it did not find
// already running), at most maxYield in all.
func (e *Engine) yield(ctx context.Context, batch time.Duration) {
	deadline := time.NewTimer(maxYield)
	defer deadline.Stop()
	p := time.NewTimer(max(batch, time.Millisecond))
	defer p.Stop()
	select {
	case <-ctx.Done():
		return
	case <-p.C:
	}
	for {
		e.mu.Lock()
		busy, room := len(e.inflight) > 0, e.room
		e.mu.Unlock()
		if !busy {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-room:
		}
	}
}

func (e *Engine) releaseMemory() {
	if err := e.db.ReleaseMemory(); err != nil {
		e.log.Warn("release the store's mapped pages", "err", err)
	}
}

// ---- work scheduling ----

// schedule sets an order's next wake-up; earlier only moves it forward.
func (e *Engine) schedule(key string, at time.Time, onlyEarlier bool) {
	e.mu.Lock()
	if onlyEarlier {
		e.wake.earlier(key, at)
	} else {
		e.wake.set(key, at)
	}
	e.mu.Unlock()
	signal(e.wakeCh)
}

func (e *Engine) unschedule(key string) {
	e.mu.Lock()
	e.wake.remove(key)
	delete(e.timers, key)
	e.mu.Unlock()
}

// timer returns the in-memory schedule of an order, creating it.
func (e *Engine) timer(key string) *orderTimer {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.timers[key]
	if t == nil {
		t = &orderTimer{}
		e.timers[key] = t
	}
	return t
}

// queueTick runs the order's step on a goroutine of its own. At most one
// tick per order waits for the order lock: a wake-up while one waits is
// already served by it.
func (e *Engine) queueTick(key string) {
	e.mu.Lock()
	if e.ticking[key] {
		e.mu.Unlock()
		return
	}
	e.ticking[key] = true
	e.mu.Unlock()
	e.work.Add(1)
	go func() {
		defer e.work.Done()
		e.tick(e.ctx, key)
	}()
}

// liveOrders reads every order that has not ended.
func (e *Engine) liveOrders() ([]store.Order, error) {
	var live []store.Order
	err := e.db.View(func(tx *store.Tx) error {
		var err error
		live, err = tx.LiveOrders()
		return err
	})
	return live, err
}

// resume loads every live order and schedules it at once: pending orders
// keep polling (or expire), closing and refunding orders continue, paid
// orders wait for their ack again.
func (e *Engine) resume() error {
	live, err := e.liveOrders()
	if err != nil {
		return fmt.Errorf("resume live orders: %w", err)
	}
	now := e.now()
	// Re-send every unacknowledged result at once: the controller may have
	// missed it while the device was down.
	err = e.db.Update(func(tx *store.Tx) error {
		all, err := tx.Outbox()
		if err != nil {
			return err
		}
		for _, o := range all {
			if o.UntilAck && o.NextAt.After(now) {
				o.NextAt = now
				if err := tx.PutOutbox(o); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resume outbox: %w", err)
	}
	sort.Slice(live, func(i, j int) bool { return live[i].CreatedAt.Before(live[j].CreatedAt) })
	for _, o := range live {
		if o.State.Terminal() {
			// Terminal with provider work left (legs to close, duplicate
			// payments to refund): the live index keeps these too.
			if needsBackground(&o) {
				e.schedule(o.OutTradeNo, now, false)
			}
			continue
		}
		t := e.timer(o.OutTradeNo)
		t.deadline = now.Add(o.ExpiresAt.Sub(now))
		if !o.AckDeadline.IsZero() {
			// The controller's ack may be waiting at the broker for the
			// link to reconnect: give it a full ack_timeout after restart.
			t.ackDeadline = now.Add(max(o.AckDeadline.Sub(now), e.cfg.AckTimeout))
		}
		e.log.Info("resuming order", "order", o.OutTradeNo, "state", o.State)
		e.schedule(o.OutTradeNo, now, false)
	}
	return nil
}

// keyedMutex is the order lock: one mutex per order number, the only
// per-order serialisation the engine has. Whatever changes an order or
// calls a provider about it holds it: command handlers, the order's tick,
// and work that reaches across orders (supersede, notify, reconcile, the
// unlock driver's outcome). Commands about one order also keep their
// arrival order; that comes from the inbox (dispatchInbox), not from here.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu sync.Mutex
	n  int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	ent := k.m[key]
	if ent == nil {
		ent = &keyedEntry{}
		k.m[key] = ent
	}
	ent.n++
	k.mu.Unlock()
	ent.mu.Lock()
	return func() {
		ent.mu.Unlock()
		k.mu.Lock()
		ent.n--
		if ent.n == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
