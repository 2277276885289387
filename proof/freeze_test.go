package proof

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// TestFreeze stops the daemon (SIGSTOP, as an overloaded board, a long GC
// or an I/O stall does) across each deadline of the lifecycle while the
// controller and the customer go on, then continues it (SIGCONT). It runs
// under a supervisor that follows the shipped unit (systemd/kioskpayd.service:
// Type=notify, Restart=always, RestartSec=, RestartPreventExitStatus=,
// Environment=) with WatchdogSec scaled from 30 s to 10 s:
//
//   - short: a freeze shorter than the watchdog; the daemon resumes;
//   - long: a freeze longer than the watchdog; the supervisor aborts the
//     daemon as systemd does (SIGABRT, SIGCONT) and starts it again.
//
// Stages: the ack timeout (the controller acks a second into the freeze,
// which lasts past the deadline), a payment during the freeze (the poll
// fires late), the QR deadline (paid just before it, during the freeze;
// with KIOSKPAY_FREEZE_EXPIRY=1, ≥ 60 s each), a create whose provider call
// is in flight, a close, a refund, and a result's re-publication. Every
// order must pass every invariant; the ack sent in time must deliver.
//
//	KIOSKPAY_PROOF=1 go test -run TestFreeze -v -timeout 30m ./proof
func TestFreeze(t *testing.T) {
	if os.Getenv("KIOSKPAY_PROOF") == "" {
		t.Skip("set KIOSKPAY_PROOF=1 to run the subprocess scenarios")
	}
	unit, err := ShippedUnit()
	if err != nil {
		t.Fatal(err)
	}
	unit.WatchdogSec = 10 * time.Second
	for _, v := range []struct {
		name    string
		freeze  time.Duration
		restart bool
	}{
		// The daemon pings every WatchdogSec/2, so a freeze shorter than
		// half of it can never miss the watchdog.
		{"short", 4 * time.Second, false},
		{"long", 16 * time.Second, true},
	} {
		t.Run(v.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sup, err := NewSupervisor(t.TempDir(), unit)
			if err != nil {
				t.Fatal(err)
			}
			w := newWorldEnv(t, ctx, testrig.SimOptions{TimeoutHold: 3 * time.Second, RefundDelay: 300 * time.Millisecond}, map[string]any{
				"payment.poll":       "500ms",
				"unlock.ack_timeout": "6s",
			}, sup.Env())
			sup.Watch(w.d)
			t.Cleanup(sup.Close)
			f := &freezer{w: w, sup: sup, d: v.freeze, restart: v.restart}
			stages := []struct {
				name string
				run  func(*freezer) []string
			}{
				{"ack timeout", (*freezer).ackTimeout},
				{"payment during the freeze", (*freezer).pollLate},
				{"create in flight", (*freezer).createInFlight},
				{"close", (*freezer).closing},
				{"refund", (*freezer).refunding},
				{"result re-publication", (*freezer).republish},
			}
			if os.Getenv("KIOSKPAY_FREEZE_EXPIRY") != "" {
				stages = append(stages, struct {
					name string
					run  func(*freezer) []string
				}{"QR deadline", (*freezer).expiry})
			}
			if only := os.Getenv("KIOSKPAY_FREEZE_STAGE"); only != "" {
				stages = stages[:0:0]
				for _, s := range []struct {
					name string
					run  func(*freezer) []string
				}{{"ack timeout", (*freezer).ackTimeout}, {"QR deadline", (*freezer).expiry}} {
					if strings.Contains(s.name, only) {
						stages = append(stages, s)
					}
				}
			}
			for _, st := range stages {
				before, _, _ := sup.Watchdogs()
				otns := st.run(f)
				for _, otn := range otns {
					w.report(w.settle(otn, time.Now().Add(60*time.Second)))
				}
				after, exits, down := sup.Watchdogs()
				t.Logf("FREEZE %s %-26s orders=%s watchdog_kills=%d exits=%v violations=%d", v.name, st.name, strings.Join(otns, ","), after-before, exits, w.violationCount())
				if down {
					t.Fatalf("the daemon stayed down after the watchdog killed it (exits %v): the unit's restart policy took it for a bad config", exits)
				}
				if v.restart && after == before {
					t.Errorf("%s: a %s freeze did not trigger the watchdog", st.name, v.freeze)
				}
				if !v.restart && after != before {
					t.Errorf("%s: a %s freeze triggered the watchdog", st.name, v.freeze)
				}
			}
			w.finish(60 * time.Second)
			for _, vio := range w.violations {
				t.Errorf("violation: %s", vio)
			}
			_, exits, _ := sup.Watchdogs()
			for _, e := range exits {
				if !strings.Contains(e, "signal") {
					t.Errorf("an aborted run ended %q; under the unit it must die by the signal to be restarted", e)
				}
			}
		})
	}
}

// freezer runs one stage: it stops the daemon for d at the stage's moment.
type freezer struct {
	w       *world
	sup     *Supervisor
	d       time.Duration
	restart bool
}

// freeze stops the daemon, runs during (the world going on meanwhile),
// and continues it once d has passed since the stop. Under the long
// variant the supervisor has restarted it by then; SIGCONT to the new
// process changes nothing.
func (f *freezer) freeze(during func()) {
	w := f.w
	if err := w.d.Freeze(); err != nil {
		w.t.Errorf("freeze: %v", err)
		return
	}
	start := time.Now()
	if during != nil {
		during()
	}
	time.Sleep(time.Until(start.Add(f.d)))
	if w.d.Running() {
		_ = w.d.Thaw()
	}
	if f.restart {
		// Wait for the restarted daemon to be online again.
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		defer cancel()
		for ctx.Err() == nil && (!w.d.Running() || !w.rig.Ctl.Online(w.dev)) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// holdAcks makes the controller hold its acks until the returned function
// is called.
func (f *freezer) holdAcks() (release func()) {
	gate := make(chan struct{})
	f.w.mu.Lock()
	f.w.ackGate = gate
	f.w.mu.Unlock()
	return func() {
		f.w.mu.Lock()
		if f.w.ackGate == gate {
			f.w.ackGate = nil
			close(gate)
		}
		f.w.mu.Unlock()
	}
}

// paidOrder creates an order, pays it and waits for the paid result.
func (f *freezer) paidOrder(sc string, ack AckPolicy) (*Order, bool) {
	w := f.w
	o := &Order{OutTradeNo: newOTN(), Provider: "wxpay", Total: 800, Scenario: sc, Ack: ack}
	if r, ok := waitReply(w.ctx, w.create(o), 20*time.Second); !ok || r.Code != 0 {
		w.t.Errorf("%s: create: %+v", sc, r)
		return o, false
	}
	w.pay(o.OutTradeNo, payment.WxPay, 0)
	if !w.waitPaidOutcome(o.OutTradeNo, 10*time.Second) {
		w.t.Errorf("%s: no paid result", sc)
		return o, false
	}
	return o, true
}

// ackTimeout: paid, the controller acks one second into a freeze that
// outlasts ack_timeout (6 s here). The ack was sent in time: delivered,
// not refunded.
func (f *freezer) ackTimeout() []string {
	release := f.holdAcks()
	defer release()
	o, ok := f.paidOrder("freeze-ack", AckOK)
	if !ok {
		return []string{o.OutTradeNo}
	}
	// Stop 4 s after the paid result: the ack goes out at 5 s, in time
	// for the 6 s deadline, which passes during the freeze (as does the
	// result's re-publication at 5 s).
	time.Sleep(4 * time.Second)
	f.freeze(func() {
		time.Sleep(time.Second)
		release()
	})
	f.w.waitState(o.OutTradeNo, "delivered", 20*time.Second)
	if v, _ := f.w.daemonView(o.OutTradeNo); v.State != "delivered" {
		f.w.t.Errorf("ack sent during the freeze: order ended %s, want delivered", v.State)
	}
	return []string{o.OutTradeNo}
}

// pollLate: the customer pays while the daemon stands still; the poll
// that was due meanwhile runs late and finds it.
func (f *freezer) pollLate() []string {
	w := f.w
	o := &Order{OutTradeNo: newOTN(), Provider: w.provider(), Total: 900, Scenario: "freeze-poll", Ack: AckOK}
	if !f.created(o) {
		return []string{o.OutTradeNo}
	}
	f.freeze(func() { w.payAny(o.OutTradeNo, 0) })
	w.waitPaidOutcome(o.OutTradeNo, 20*time.Second)
	return []string{o.OutTradeNo}
}

// expiry: the QR deadline (60 s) falls inside the freeze; the customer
// paid just before it. The late close finds the payment: paid in time.
func (f *freezer) expiry() []string {
	w := f.w
	o := &Order{OutTradeNo: newOTN(), Provider: "wxpay", Total: 1000, Scenario: "freeze-expiry", Ack: AckOK, ExpireSeconds: 60}
	if !f.created(o) {
		return []string{o.OutTradeNo}
	}
	created := time.Now()
	time.Sleep(time.Until(created.Add(60*time.Second - f.d/2)))
	f.freeze(func() {
		time.Sleep(time.Until(created.Add(59 * time.Second)))
		w.pay(o.OutTradeNo, payment.WxPay, 0)
	})
	w.waitPaidOutcome(o.OutTradeNo, 20*time.Second)
	return []string{o.OutTradeNo}
}

// createInFlight: the provider holds the create's call (a timeout fault)
// and the daemon stands still meanwhile.
func (f *freezer) createInFlight() []string {
	w := f.w
	_ = w.rig.Sim.InjectFault(paysim.Fault{Kind: paysim.FaultTimeout, API: "create", Count: 1})
	o := &Order{OutTradeNo: newOTN(), Provider: w.provider(), Total: 1100, Scenario: "freeze-create", Ack: AckOK}
	ch := w.create(o)
	time.Sleep(100 * time.Millisecond)
	f.freeze(nil)
	if r, ok := waitReply(w.ctx, ch, 40*time.Second); ok && r.Code == 0 {
		w.payAny(o.OutTradeNo, 0)
	}
	f.cancelPending(o.OutTradeNo)
	return []string{o.OutTradeNo}
}

// closing: the controller cancels and the daemon stops right away; the
// customer tries to pay meanwhile.
func (f *freezer) closing() []string {
	w := f.w
	o := &Order{OutTradeNo: newOTN(), Provider: w.provider(), Total: 1200, Scenario: "freeze-close", Ack: AckOK}
	if !f.created(o) {
		return []string{o.OutTradeNo}
	}
	w.command(o.OutTradeNo, "pay/cancel", map[string]any{})
	time.Sleep(20 * time.Millisecond)
	f.freeze(func() { w.payAny(o.OutTradeNo, 0) })
	return []string{o.OutTradeNo}
}

// refunding: the controller reports a failed delivery, and the daemon
// stands still while the refund is on its way.
func (f *freezer) refunding() []string {
	w := f.w
	o, ok := f.paidOrder("freeze-refund", AckFail)
	if !ok {
		return []string{o.OutTradeNo}
	}
	time.Sleep(50 * time.Millisecond) // the ack ok:false is out
	f.freeze(nil)
	w.waitState(o.OutTradeNo, "refunded", 30*time.Second)
	return []string{o.OutTradeNo}
}

// republish: the paid result is not acknowledged; the freeze passes its
// re-publication time and its ack deadline. It is re-sent with the same
// seq, and the ack that follows the freeze still delivers.
func (f *freezer) republish() []string {
	release := f.holdAcks()
	o, ok := f.paidOrder("freeze-republish", AckOK)
	if !ok {
		release()
		return []string{o.OutTradeNo}
	}
	// Stop 3 s after the paid result, past its re-publication (5 s) and
	// its ack deadline (6 s); the controller acks once it runs again.
	// Under the long variant the controller acks the result the
	// restarted daemon sends again, as soon as it comes.
	time.Sleep(3 * time.Second)
	starts := f.w.d.Starts()
	f.freeze(func() {
		if !f.restart {
			return
		}
		for deadline := time.Now().Add(f.d); time.Now().Before(deadline) && f.w.d.Starts() == starts; {
			time.Sleep(20 * time.Millisecond)
		}
		release()
	})
	release()
	f.w.waitState(o.OutTradeNo, "delivered", 30*time.Second)
	return []string{o.OutTradeNo}
}

// created creates o and reports whether the daemon confirmed it.
func (f *freezer) created(o *Order) bool {
	r, ok := waitReply(f.w.ctx, f.w.create(o), 20*time.Second)
	if !ok || r.Code != 0 {
		f.w.t.Errorf("%s: create: %+v", o.Scenario, r)
		return false
	}
	return true
}

func (f *freezer) cancelPending(otn string) {
	if v, ok := f.w.daemonView(otn); ok && v.State == "pending" {
		f.w.command(otn, "pay/cancel", map[string]any{})
	}
}
