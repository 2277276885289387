package proof

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// TestCrash is the crash harness: kioskpayd as a subprocess against a
// private Mosquitto and paysim, orders driven through every state, SIGKILL
// at random moments (densest right after a create or a payment, when a
// provider call is in flight or its outcome not yet committed), restart,
// and the invariants checked after every round.
//
//	KIOSKPAY_CRASH_ROUNDS=500 go test -run TestCrash -v -timeout 3h ./proof
//
// KIOSKPAY_CRASH_EXPIRE_EVERY=N makes every Nth round an expiry round
// (≥ 60 s each: the shortest QR lifetime); 0 disables them.
//
// Not every round kills. At the same moments a round may instead stop the
// daemon (SIGSTOP for up to 9 s, across the 4 s ack timeout, then
// SIGCONT), fill its state directory's file system and free it again
// (when the harness runs as root: the state directory is then a tmpfs),
// flood it with 300 commands, or kill it and damage its store (a bit of
// the root and freelist page ids: the start finds it, salvages into a new
// store and serves); the invariants are the same.
func TestCrash(t *testing.T) {
	rounds := envInt("KIOSKPAY_CRASH_ROUNDS", 0)
	if rounds <= 0 {
		t.Skip("set KIOSKPAY_CRASH_ROUNDS=N to run the crash harness")
	}
	expireEvery := envInt("KIOSKPAY_CRASH_EXPIRE_EVERY", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	overrides := map[string]any{
		"payment.poll":       "500ms",
		"unlock.ack_timeout": "4s",
	}
	var fs *Tmpfs
	if os.Geteuid() == 0 {
		var err error
		if fs, err = MountTmpfs(filepath.Join(t.TempDir(), "state"), 64<<20); err != nil {
			t.Logf("no disk-full rounds: %v", err)
		} else {
			t.Cleanup(func() {
				fs.Free()
				fs.Unmount()
			})
			overrides["state_dir"] = fs.Dir
		}
	} else {
		t.Log("no disk-full rounds: mounting a tmpfs for the state directory needs root")
	}
	w := newWorld(t, ctx, testrig.SimOptions{TimeoutHold: 3 * time.Second, RefundDelay: 300 * time.Millisecond}, overrides)
	w.fs = fs
	start := time.Now()
	kills := 0
	for round := 1; round <= rounds; round++ {
		sc := w.pickScenario(round, expireEvery)
		began := time.Now()
		r := w.runRound(sc)
		scripted := time.Since(began)
		kills += r.kills
		var vs []Violation
		for _, otn := range r.orders {
			vs = append(vs, w.settle(otn, time.Now().Add(r.settle))...)
		}
		for _, c := range w.d.Crashes() {
			vs = append(vs, Violation{Kind: VDaemonCrashed, Detail: c})
		}
		w.report(vs)
		t.Logf("round %d/%d %-9s %-16s %-28s %5.1fs+%4.1fs violations=%d", round, rounds, sc, r.killNote, strings.Join(r.orders, ","),
			scripted.Seconds(), (time.Since(began) - scripted).Seconds(), w.violationCount())
		if !w.d.Running() {
			if err := w.d.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.finish(90 * time.Second)
	out := w.outcomes()
	var parts []string
	for k, v := range out {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	n := w.violationCount()
	t.Logf("CRASH rounds=%d kills=%d orders=%d unlocks=%d violations=%d elapsed=%s outcomes: %s",
		rounds, kills, len(w.ledger.Orders()), w.unlocks, n, time.Since(start).Round(time.Second), strings.Join(parts, " "))
	fmt.Printf("CRASH rounds=%d kills=%d orders=%d violations=%d\n", rounds, kills, len(w.ledger.Orders()), n)
	if n > 0 {
		for _, v := range w.violations {
			t.Errorf("violation: %s", v)
			w.explain(v.OutTradeNo)
		}
		t.Logf("daemon log: %s", w.d.Log)
	}
}

const (
	scPay       = "pay"
	scFastPay   = "fastpay"
	scCancel    = "cancel"
	scDouble    = "double"
	scWrong     = "wrong"
	scSupersede = "supersede"
	scRefund    = "refund"
	scExpire    = "expire"
)

func (w *world) pickScenario(round, expireEvery int) string {
	if expireEvery > 0 && round%expireEvery == 0 {
		return scExpire
	}
	table := []struct {
		sc string
		w  int
	}{{scPay, 30}, {scFastPay, 14}, {scCancel, 14}, {scDouble, 10}, {scWrong, 8}, {scSupersede, 12}, {scRefund, 12}}
	n := w.intn(100)
	for _, e := range table {
		if n < e.w {
			return e.sc
		}
		n -= e.w
	}
	return scPay
}

type roundResult struct {
	orders   []string
	kills    int
	killNote string
	settle   time.Duration
}

// killer strikes at an offset from a focus moment the round's script
// announces: most often it kills the daemon, then restarts it (sometimes
// killing it again while it recovers); otherwise it stops the daemon for a
// while, fills its disk for a while, or floods it.
type killer struct {
	w     *world
	focus chan struct{}
	done  chan struct{}
	kills int
	note  string
}

// Hazards a round may meet instead of a kill.
const (
	hzKill   = "kill"
	hzFreeze = "freeze"
	hzFull   = "diskfull"
	hzFlood  = "flood"
	hzDamage = "damage"
)

func (w *world) hazard() string {
	switch p := w.float(); {
	case p < 0.2:
		return hzFreeze
	case p < 0.32 && w.fs != nil:
		return hzFull
	case p < 0.4:
		return hzFlood
	case p < 0.46:
		return hzDamage
	}
	return hzKill
}

func (w *world) newKiller() *killer {
	k := &killer{w: w, focus: make(chan struct{}, 1), done: make(chan struct{})}
	hz := w.hazard()
	// Offsets are dense near zero: most commits and provider calls of a
	// step happen within a few milliseconds of it.
	var off time.Duration
	switch p := w.float(); {
	case p < 0.45:
		off = w.dur(0, 15*time.Millisecond)
	case p < 0.8:
		off = w.dur(15*time.Millisecond, 250*time.Millisecond)
	default:
		off = w.dur(250*time.Millisecond, 1500*time.Millisecond)
	}
	again := w.float() < 0.15
	go func() {
		defer close(k.done)
		select {
		case <-k.focus:
		case <-time.After(3 * time.Minute):
			k.note = "none"
			return
		}
		time.Sleep(off)
		switch hz {
		case hzFreeze:
			d := w.dur(500*time.Millisecond, 9*time.Second)
			k.note = "freeze" + d.Round(100*time.Millisecond).String() + "@" + off.Round(time.Millisecond).String()
			if err := w.d.Freeze(); err != nil {
				w.t.Errorf("freeze: %v", err)
				return
			}
			time.Sleep(d)
			if err := w.d.Thaw(); err != nil {
				w.t.Errorf("thaw: %v", err)
			}
			return
		case hzFull:
			d := w.dur(500*time.Millisecond, 8*time.Second)
			k.note = "full" + d.Round(100*time.Millisecond).String() + "@" + off.Round(time.Millisecond).String()
			if _, err := w.fs.Fill(); err != nil {
				w.t.Errorf("fill: %v", err)
			}
			time.Sleep(d)
			if err := w.fs.Free(); err != nil {
				w.t.Errorf("free: %v", err)
			}
			return
		case hzFlood:
			k.note = "flood@" + off.Round(time.Millisecond).String()
			w.flood(300)
			return
		}
		k.kill()
		k.note = "kill@" + off.Round(time.Millisecond).String()
		if hz == hzDamage {
			k.note = "damage@" + off.Round(time.Millisecond).String()
			if err := flipPageIDs(w.storePath(), w.intn); err != nil {
				w.t.Errorf("damage: %v", err)
			}
		}
		time.Sleep(w.dur(0, 300*time.Millisecond))
		k.start()
		if again {
			// Kill during recovery: resume, re-publication, re-query.
			time.Sleep(w.dur(0, 400*time.Millisecond))
			k.kill()
			k.note += "+"
			k.start()
		}
	}()
	return k
}

func (k *killer) kill() {
	if err := k.w.d.Kill(); err != nil {
		k.w.t.Errorf("kill: %v", err)
	}
	k.kills++
}

func (k *killer) start() {
	if err := k.w.d.Start(); err != nil {
		k.w.t.Errorf("restart: %v", err)
	}
}

// at marks the focus moment (once).
func (k *killer) at() {
	select {
	case k.focus <- struct{}{}:
	default:
	}
}

func (w *world) provider() string {
	return []string{"wxpay", "alipay", "any"}[w.intn(3)]
}

func (w *world) ackPolicy() AckPolicy {
	switch p := w.float(); {
	case p < 0.6:
		return AckOK
	case p < 0.8:
		return AckFail
	}
	return AckNever
}

// maybeFault injects one provider timeout for the next call of api with
// probability p, so the kill may land while that call is in flight.
func (w *world) maybeFault(p float64, api string) {
	if w.float() < p {
		_ = w.rig.Sim.InjectFault(paysim.Fault{Kind: paysim.FaultTimeout, API: api, Count: 1})
	}
}

func (w *world) runRound(sc string) (res roundResult) {
	k := w.newKiller()
	res.settle = 40 * time.Second
	defer func() {
		k.at() // a script that ended early still gets its kill
		<-k.done
		res.kills, res.killNote = k.kills, k.note
		// Leave nothing payable behind for the next round to supersede
		// (an expiry round is left to expire).
		for _, otn := range res.orders {
			if sc == scExpire {
				break
			}
			if v, ok := w.daemonView(otn); ok && v.Found && v.State == "pending" {
				w.command(otn, "pay/cancel", map[string]any{})
			}
		}
	}()
	total := int64(100 + w.intn(5000))
	o := &Order{OutTradeNo: newOTN(), Provider: w.provider(), Total: total, Scenario: sc, Ack: w.ackPolicy()}
	res.orders = append(res.orders, o.OutTradeNo)
	long := 20 * time.Second
	switch sc {
	case scPay:
		focusCreate := w.float() < 0.5
		w.maybeFault(0.2, "")
		ch := w.create(o)
		if focusCreate {
			k.at()
		}
		if _, ok := waitReply(w.ctx, ch, long); !ok {
			return res
		}
		time.Sleep(w.dur(0, 800*time.Millisecond))
		if !focusCreate {
			w.maybeFault(0.3, "query")
			k.at()
		}
		w.payAny(o.OutTradeNo, 0)
		w.waitPaidOutcome(o.OutTradeNo, 5*time.Second)

	case scFastPay:
		// Pay the instant the provider has the order: the daemon is then
		// between the provider call and the commit of its outcome.
		o.Ack = AckOK
		w.create(o)
		deadline := time.Now().Add(long)
		for time.Now().Before(deadline) {
			if ls := w.legs(o.OutTradeNo); len(ls) > 0 {
				k.at()
				w.pay(o.OutTradeNo, ls[0], 0)
				break
			}
			time.Sleep(time.Millisecond)
		}
		w.waitPaidOutcome(o.OutTradeNo, 10*time.Second)

	case scCancel:
		ch := w.create(o)
		if _, ok := waitReply(w.ctx, ch, long); !ok {
			return res
		}
		time.Sleep(w.dur(0, 500*time.Millisecond))
		race := w.float() < 0.5
		w.maybeFault(0.3, "close")
		k.at()
		w.command(o.OutTradeNo, "pay/cancel", map[string]any{})
		if race {
			time.Sleep(w.dur(0, 30*time.Millisecond))
			w.payAny(o.OutTradeNo, 0)
		}

	case scDouble:
		o.Provider = "any"
		ch := w.create(o)
		if _, ok := waitReply(w.ctx, ch, long); !ok {
			return res
		}
		k.at()
		done := make(chan struct{})
		go func() { w.pay(o.OutTradeNo, payment.WxPay, 0); close(done) }()
		w.pay(o.OutTradeNo, payment.Alipay, 0)
		<-done

	case scWrong:
		o.WrongAmount = true
		ch := w.create(o)
		if _, ok := waitReply(w.ctx, ch, long); !ok {
			return res
		}
		k.at()
		w.payWrong(o.OutTradeNo)

	case scSupersede:
		ch := w.create(o)
		if _, ok := waitReply(w.ctx, ch, long); !ok {
			return res
		}
		o2 := &Order{OutTradeNo: newOTN(), Provider: w.provider(), Total: total + 1, Scenario: sc, Ack: w.ackPolicy()}
		res.orders = append(res.orders, o2.OutTradeNo)
		k.at()
		ch2 := w.create(o2)
		if w.float() < 0.5 {
			// The customer of the old order pays as it is superseded.
			w.payAny(o.OutTradeNo, 0)
		}
		if _, ok := waitReply(w.ctx, ch2, long); ok && w.float() < 0.6 {
			w.payAny(o2.OutTradeNo, 0)
			w.waitPaidOutcome(o2.OutTradeNo, 5*time.Second)
		}

	case scRefund:
		o.Ack = AckOK
		ch := w.create(o)
		if _, ok := waitReply(w.ctx, ch, long); !ok {
			return res
		}
		if !w.payAny(o.OutTradeNo, 0) {
			return res
		}
		if !w.waitState(o.OutTradeNo, "delivered", 10*time.Second) {
			return res
		}
		w.maybeFault(0.3, "refund")
		k.at()
		rch := w.command(o.OutTradeNo, "pay/refund", map[string]any{"refund_desc": "operator"})
		if r, ok := waitReply(w.ctx, rch, long); ok && r.Code == 0 {
			w.ledger.Update(o.OutTradeNo, func(o *Order) { o.OperatorRefund = o.Total })
		}

	case scExpire:
		o.ExpireSeconds = 60 // the shortest QR lifetime
		ch := w.create(o)
		r, ok := waitReply(w.ctx, ch, long)
		if !ok {
			return res
		}
		var cr contract.CreateReply
		_ = r.Decode(&cr) // an undecodable reply leaves ExpiresAt empty: the default below
		exp, err := time.Parse(time.RFC3339, cr.ExpiresAt)
		if err != nil {
			exp = time.Now().Add(time.Minute)
		}
		res.settle = time.Until(exp) + 40*time.Second
		lastMinute := w.float() < 0.5
		time.Sleep(time.Until(exp) - w.dur(0, 1500*time.Millisecond))
		w.maybeFault(0.3, "close")
		k.at()
		if lastMinute {
			w.payAny(o.OutTradeNo, 0) // paid in the last second, or just after
		}
	}
	return res
}

// waitPaidOutcome waits until the order has a paid result booked.
func (w *world) waitPaidOutcome(otn string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if o, _ := w.ledger.Get(otn); len(o.PaidSeqs) > 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// waitState polls the daemon until the order is in state.
func (w *world) waitState(otn, state string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if v, ok := w.daemonView(otn); ok && v.State == state {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// payWrong pays a leg whose order total at the provider differs from the
// order's, one fen less or more (an out_trade_no collision): never
// delivered, refunded at the provider's total.
func (w *world) payWrong(otn string) bool {
	ls := w.legs(otn)
	if len(ls) == 0 {
		return false
	}
	o, _ := w.ledger.Get(otn)
	p := ls[w.intn(len(ls))]
	delta := int64(-1)
	if w.float() < 0.5 {
		delta = 1
	}
	return w.pay(otn, p, o.Total+delta)
}
