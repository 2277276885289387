package device

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// reconcileBefore is how far before the recovery the salvaged orders are
// compared with the providers.
const reconcileBefore = 24 * time.Hour

// recovered returns the store's recovery record, nil when there is none.
func (e *Engine) recovered() *store.Recovery {
	var r *store.Recovery
	err := e.db.View(func(tx *store.Tx) error {
		var err error
		r, err = tx.Recovery()
		return err
	})
	if err != nil {
		e.log.Error("read the recovery record", "err", err)
	}
	return r
}

// followRecovery runs once the engine has resumed after a recovery: it
// announces it (event store_recovered, once), then compares the salvaged
// orders of the last day with the providers (a payment the device lost
// track of follows the paid or refund path), and settles the live orders
// whose records were lost: a provider order still payable is closed, so
// nobody pays a code the device no longer knows; one already paid is left
// to a person, with an event naming it. Neither provider can list a
// merchant's orders of the last hours (WeChat Pay's and Alipay's bills
// cover whole past days, published the next morning), so orders the
// damaged file held no trace of cannot be found this way: `kioskctl
// reconcile` and the day's bill settle those.
func (e *Engine) followRecovery(ctx context.Context, r *store.Recovery) {
	if !r.Announced {
		e.mu.Lock()
		e.deviceEventLocked(contract.StatusStoreRecovered + ": " + r.Summary())
		e.mu.Unlock()
		e.flushDeviceEvents()
		r.Announced = true
		e.saveRecovery(r)
	}
	if r.Reconciled {
		return
	}
	rep := contract.ReconcileReply{}
	if err := e.reconcile(ctx, r.At.Add(-reconcileBefore), &rep); err != nil {
		e.log.Warn("reconcile after the store recovery", "err", err)
		return // again at the next start
	}
	var paid []string
	for _, otn := range r.Lost {
		if ctx.Err() != nil {
			return
		}
		paid = append(paid, e.settleLost(ctx, otn)...)
	}
	msg := fmt.Sprintf("%s: reconciled %d salvaged orders with the providers (%d mismatches)", contract.StatusStoreRecovered, rep.Checked, len(rep.Mismatches))
	if r.LostCount > 0 {
		msg += fmt.Sprintf("; %d lost orders closed where still payable", r.LostCount)
	}
	if len(paid) > 0 {
		msg += "; paid at the provider, their records lost, a person must decide: " + strings.Join(paid, ", ")
	}
	e.mu.Lock()
	e.deviceEventLocked(msg)
	e.mu.Unlock()
	e.flushDeviceEvents()
	e.log.Warn("store recovery reconciled", "checked", rep.Checked, "mismatches", len(rep.Mismatches), "lost", r.LostCount, "lost_paid", paid)
	r.Reconciled = true
	e.saveRecovery(r)
}

// settleLost asks every configured account about a live order whose
// record was lost: payable → closed; paid → reported ("otn at provider").
func (e *Engine) settleLost(ctx context.Context, otn string) []string {
	var paid []string
	for _, pid := range e.merchantIDs() {
		for _, p := range []payment.ProviderName{payment.WxPay, payment.Alipay} {
			prov := e.cfg.Merchants[pid][p]
			if prov == nil {
				continue
			}
			qctx, cancel := context.WithTimeout(ctx, callTimeout)
			st, err := prov.Query(qctx, otn)
			cancel()
			switch {
			case err != nil:
				e.log.Warn("query a lost order", "order", otn, "provider", p, "err", err)
			case st.State.WasPaid():
				paid = append(paid, fmt.Sprintf("%s at %s (%s)", otn, p, st.State))
			case st.State == payment.StateWaiting || p == payment.Alipay && st.State == payment.StateNotCreated:
				// An Alipay trade exists only once scanned: a code shown
				// but not scanned answers "not created" and is burnt by
				// the close all the same.
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				_, err := prov.Close(cctx, otn)
				cancel()
				e.log.Warn("closed a lost order still payable at the provider", "order", otn, "provider", p, "err", err)
			}
		}
	}
	return paid
}

// merchantIDs lists the configured merchants in a stable order.
func (e *Engine) merchantIDs() []string {
	pids := make([]string, 0, len(e.cfg.Merchants))
	for pid := range e.cfg.Merchants {
		pids = append(pids, pid)
	}
	sort.Strings(pids)
	return pids
}

func (e *Engine) saveRecovery(r *store.Recovery) {
	err := e.db.Update(func(tx *store.Tx) error { return tx.PutRecovery(r) })
	if err != nil {
		e.log.Error("write the recovery record", "err", err)
	}
}
