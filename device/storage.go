package device

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/store"
)

// DefaultMinFree is the free space below which the state directory's file
// system counts as full. New orders are refused below it so that what is
// left goes to the orders already running: their acks, payments, refunds
// and results.
const DefaultMinFree = 4 << 20

// storageRecheck is how often a full file system is looked at again.
const storageRecheck = time.Second

// probeSize is what the recovery probe writes: enough to need new blocks,
// which a full file system (or a used-up quota) refuses.
const probeSize = 64 << 10

// storageState is the engine's view of the state directory's file system.
type storageState struct {
	full      bool
	reason    string
	checkedAt time.Time // real time of the last look
	// events waiting to be written to the outbox (it may be the outbox's
	// own commit that failed); a few at most, oldest first.
	events []contract.Event
}

// storageFull reports whether new orders are refused for lack of space.
func (e *Engine) storageFull() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.storage.full
}

// storageError records a failed commit: when it failed for lack of space,
// the file system counts as full until checkStorage sees space again.
func (e *Engine) storageError(err error) {
	if !store.IsNoSpace(err) {
		return
	}
	e.setStorageFull(fmt.Sprintf("a write to %s failed: %v", e.db.Path(), err))
}

func (e *Engine) setStorageFull(reason string) {
	e.mu.Lock()
	was := e.storage.full
	e.storage.full, e.storage.reason = true, reason
	e.storage.checkedAt = time.Now()
	if !was {
		e.deviceEventLocked(contract.StatusStorageFull + ": " + reason)
	}
	e.mu.Unlock()
	if !was {
		e.log.Error("storage full: refusing new orders with STORAGE_FULL until space returns", "reason", reason)
		// The reserve's blocks give the store room to record the refusals
		// and acks of the full period (store.DefaultReserve says why).
		if released, err := e.db.ReleaseReserve(); err != nil {
			e.log.Warn("release the space reserve", "err", err)
		} else if released {
			e.log.Info("space reserve released for the store", "bytes", store.DefaultReserve)
		}
		signal(e.statusCh)
		signal(e.wakeCh)
	}
}

// checkStorage looks at the file system's free space (once a second while
// full, every idleWake otherwise): below MinFree it counts as full; once
// there is room again and a probe write of new blocks succeeds, it is
// usable again and the daemon takes orders.
func (e *Engine) checkStorage(real time.Time) {
	e.mu.Lock()
	full := e.storage.full
	every := idleWake
	if full {
		every = storageRecheck
	}
	due := real.Sub(e.storage.checkedAt) >= every
	if due {
		e.storage.checkedAt = real
	}
	e.mu.Unlock()
	e.flushDeviceEvents()
	if !due {
		return
	}
	free, err := e.db.FreeSpace()
	if err != nil {
		e.log.Warn("read free space of the state directory", "err", err)
		return
	}
	if free < e.cfg.MinFree {
		if !full {
			e.setStorageFull(fmt.Sprintf("%d bytes free on the file system of %s (below %d)", free, filepath.Dir(e.db.Path()), e.cfg.MinFree))
		}
		return
	}
	if !full {
		return
	}
	if err := probeWrite(filepath.Dir(e.db.Path())); err != nil {
		e.log.Warn("storage still full", "free", free, "err", err)
		return
	}
	e.mu.Lock()
	e.storage.full, e.storage.reason = false, ""
	e.deviceEventLocked(fmt.Sprintf("%s: %d bytes free on the file system of %s", contract.EventStorageOK, free, filepath.Dir(e.db.Path())))
	e.mu.Unlock()
	e.log.Info("storage has room again: taking orders", "free", free)
	e.keepReserve()
	e.flushDeviceEvents()
	signal(e.statusCh)
}

// probeWrite writes and removes a file of probeSize in dir.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".kioskpayd-space-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, probeSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// deviceEventLocked queues an event about the device itself. The caller
// holds e.mu.
func (e *Engine) deviceEventLocked(reason string) {
	const keep = 8
	e.storage.events = append(e.storage.events, contract.Event{At: contract.FormatTime(e.now()), Reason: reason})
	if n := len(e.storage.events); n > keep {
		e.storage.events = slices.Delete(e.storage.events, 0, n-keep)
	}
}

// flushDeviceEvents writes queued device events to the outbox; what cannot
// be written yet goes back to the front of the queue for the next pass.
// The queue is taken whole under the lock, so two flushes never publish
// one event twice.
func (e *Engine) flushDeviceEvents() {
	e.mu.Lock()
	evs := e.storage.events
	e.storage.events = nil
	e.mu.Unlock()
	if len(evs) == 0 {
		return
	}
	now := e.now()
	err := e.db.Update(func(tx *store.Tx) error {
		for _, ev := range evs {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if _, err := tx.Enqueue(store.OutboxEntry{Topic: contract.TopicEvent, Payload: b, Kind: store.KindEvent, NextAt: now, CreatedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.mu.Lock()
		e.storage.events = append(evs, e.storage.events...)
		e.mu.Unlock()
		return
	}
	for _, ev := range evs {
		e.log.Info("device event", "reason", ev.Reason)
	}
	signal(e.outboxCh)
}

// statusFlags lists the device conditions the status reports.
func (e *Engine) statusFlagsLocked() []string {
	var f []string
	if e.storage.full {
		f = append(f, contract.StatusStorageFull)
	}
	if e.storeRecovered {
		f = append(f, contract.StatusStoreRecovered)
	}
	if e.unlockAttention > 0 {
		f = append(f, contract.StatusUnlockInterrupted)
	}
	return f
}

// keepReserve writes the space reserve if it is missing; without room for
// it the daemon runs on and tries again when space returns.
func (e *Engine) keepReserve() {
	if err := e.db.KeepReserve(store.DefaultReserve); err != nil {
		e.log.Warn("write the space reserve", "path", store.ReservePath(e.db.Path()), "err", err)
	}
}
