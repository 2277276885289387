package proof

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil {
			return n
		}
	}
	return def
}

// world is one rig with one daemon, a ledger, and the controller's and
// customer's behaviour on top.
type world struct {
	t   testing.TB
	ctx context.Context
	rig *testrig.Rig
	dev string
	d   *testrig.Daemon
	// daemons is every device's process by device id (dev's and those
	// addDevice started), for crash checks and the logs a violation is
	// explained with.
	daemons map[string]*testrig.Daemon
	ledger  *Ledger
	rnd     *rand.Rand
	rndMu   sync.Mutex

	mu         sync.Mutex
	violations []Violation
	reported   map[string]bool
	unlocks    int
	// ackGate, while non-nil, holds the controller's acks until it is
	// closed.
	ackGate chan struct{}
	// fs is the state directory's own file system, when the test could
	// mount one (disk-full rounds).
	fs *Tmpfs
}

func newWorld(t testing.TB, ctx context.Context, sim testrig.SimOptions, overrides map[string]any) *world {
	t.Helper()
	return newWorldEnv(t, ctx, sim, overrides, nil)
}

// newWorldEnv is newWorld with env added to the daemon's environment.
func newWorldEnv(t testing.TB, ctx context.Context, sim testrig.SimOptions, overrides map[string]any, env []string) *world {
	t.Helper()
	return newWorldRig(t, ctx, testrig.RigOptions{Sim: sim}, overrides, env)
}

// newWorldRig is newWorldEnv with the rig's options (e.g. Gateway).
func newWorldRig(t testing.TB, ctx context.Context, ro testrig.RigOptions, overrides map[string]any, env []string) *world {
	t.Helper()
	seed := uint64(envInt("KIOSKPAY_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("seed %d (KIOSKPAY_SEED=%d reproduces the schedule)", seed, seed)
	w := &world{t: t, ctx: ctx, ledger: NewLedger(), rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b9)), reported: map[string]bool{}}
	dir := t.TempDir()
	if keep := os.Getenv("KIOSKPAY_PROOF_DIR"); keep != "" {
		dir = filepath.Join(keep, fmt.Sprintf("%s-%d", t.Name(), time.Now().Unix()))
	}
	ro.Keys, ro.OnResult = simkeys.Get(t), w.onResult
	rig, err := testrig.NewRig(ctx, dir, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.Close)
	w.rig = rig
	w.dev = "dev" + testrig.RandomHex(3)
	if w.d, err = rig.Daemon(w.dev, overrides); err != nil {
		t.Fatal(err)
	}
	w.daemons = map[string]*testrig.Daemon{w.dev: w.d}
	w.d.Env = env
	if err := w.d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if code, err := w.d.Stop(10 * time.Second); err != nil || code != 0 {
			t.Errorf("daemon stop: exit %d, %v (log %s)", code, err, w.d.Log)
		}
	})
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := rig.Ctl.WaitOnline(wctx, w.dev); err != nil {
		t.Fatalf("%v (log %s)", err, w.d.Log)
	}
	return w
}

func (w *world) intn(n int) int {
	w.rndMu.Lock()
	defer w.rndMu.Unlock()
	return w.rnd.IntN(n)
}

func (w *world) float() float64 {
	w.rndMu.Lock()
	defer w.rndMu.Unlock()
	return w.rnd.Float64()
}

func (w *world) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(w.float()*float64(hi-lo))
}

// onResult is the controller: book the result, ack as the order's policy
// says, and count unlocks.
func (w *world) onResult(r testrig.Result) {
	dec := w.ledger.OnResult(r)
	if dec.Unlock {
		w.mu.Lock()
		w.unlocks++
		w.mu.Unlock()
	}
	if !dec.Ack {
		return
	}
	w.mu.Lock()
	gate := w.ackGate
	w.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-w.ctx.Done():
			return
		}
	}
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	id, err := w.rig.Ctl.Ack(ctx, r.Device, r.OutTradeNo, dec.OK, dec.Reason)
	if err != nil {
		return // the result is re-sent until acked
	}
	w.ledger.Update(r.OutTradeNo, func(o *Order) { o.Requests[id] = "unlock/ack" })
}

var otnSeq struct {
	sync.Mutex
	n int
}

func newOTN() string {
	otnSeq.Lock()
	defer otnSeq.Unlock()
	otnSeq.n++
	return fmt.Sprintf("p%s_%06d", testrig.RandomHex(3), otnSeq.n)
}

// create books an order and publishes its create request; the reply is
// booked when it arrives (the daemon may be dead meanwhile).
func (w *world) create(o *Order) <-chan testrig.Reply {
	if o.Device == "" {
		o.Device = w.dev
	}
	w.ledger.Add(o)
	data := map[string]any{
		"out_trade_no": o.OutTradeNo, "total_fee": o.Total, "subject": "proof " + o.Scenario,
		"type": "proof", "custom": map[string]any{"scenario": o.Scenario},
	}
	if o.ExpireSeconds > 0 {
		data["expire_seconds"] = o.ExpireSeconds
	}
	fields := map[string]any{"provider": o.Provider, "needQRcode": true, "data": data}
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	id, ch, err := w.rig.Ctl.Send(ctx, o.Device, "pay/create", fields)
	if err != nil {
		w.t.Errorf("publish create: %v", err)
		return nil
	}
	w.ledger.Update(o.OutTradeNo, func(o *Order) { o.Requests[id] = "pay/create" })
	out := make(chan testrig.Reply, 1)
	go func() {
		select {
		case r := <-ch:
			if r.Code == 0 {
				w.ledger.Update(o.OutTradeNo, func(o *Order) { o.CreateOK = true })
			}
			out <- r
		case <-w.ctx.Done():
		}
	}()
	return out
}

// command publishes a command for an order and books its request id.
func (w *world) command(otn, suffix string, fields map[string]any) <-chan testrig.Reply {
	o, _ := w.ledger.Get(otn)
	fields["out_trade_no"] = otn
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	id, ch, err := w.rig.Ctl.Send(ctx, o.Device, suffix, fields)
	if err != nil {
		w.t.Errorf("publish %s: %v", suffix, err)
		return nil
	}
	w.ledger.Update(otn, func(o *Order) { o.Requests[id] = suffix })
	return ch
}

// waitReply waits up to d for a reply; ok false on timeout.
func waitReply(ctx context.Context, ch <-chan testrig.Reply, d time.Duration) (testrig.Reply, bool) {
	if ch == nil {
		return testrig.Reply{}, false
	}
	select {
	case r := <-ch:
		return r, true
	case <-time.After(d):
	case <-ctx.Done():
	}
	return testrig.Reply{}, false
}

// legs returns the providers the simulator has an order for.
func (w *world) legs(otn string) []payment.ProviderName {
	var out []payment.ProviderName
	for _, l := range w.rig.Sim.Legs(otn) {
		out = append(out, l.Provider)
	}
	return out
}

// pay makes the customer pay amount (0 = the order's) on provider p; it
// books the payment when the simulator took it.
//
// A third of the payments carry a coupon, funded by the platform or the
// merchant, as real payments often do: the buyer pays less, the provider
// still holds the order total, and the order must be delivered as usual.
func (w *world) pay(otn string, p payment.ProviderName, amount int64) bool {
	o, _ := w.ledger.Get(otn)
	if amount == 0 {
		amount = o.Total
	}
	sp := paysim.Payment{Amount: payment.Fen(amount)}
	if amount > 1 && w.float() < 1.0/3 {
		sp.Discount = payment.Fen(1 + w.intn(int(min(amount-1, 500))))
		sp.DiscountBy = []paysim.Funder{paysim.DiscountPlatform, paysim.DiscountMerchant}[w.intn(2)]
	}
	if err := w.rig.Sim.PayWith(p, otn, sp); err != nil {
		w.t.Logf("%s: pay %s: %v", otn, p, err)
		return false
	}
	w.ledger.Update(otn, func(o *Order) {
		o.Payments = append(o.Payments, Payment{Provider: string(p), Amount: amount, Discount: int64(sp.Discount), At: time.Now()})
	})
	return true
}

// payAny pays on a random leg the simulator has, preferring one that is
// still payable (the customer scans the code that works); false if none.
func (w *world) payAny(otn string, amount int64) bool {
	var open, all []payment.ProviderName
	for _, l := range w.rig.Sim.Legs(otn) {
		all = append(all, l.Provider)
		if openAtProvider(l.State) {
			open = append(open, l.Provider)
		}
	}
	if len(open) > 0 {
		all = open
	}
	if len(all) == 0 {
		return false
	}
	return w.pay(otn, all[w.intn(len(all))], amount)
}

// daemonView asks the daemon for the order's state.
func (w *world) daemonView(otn string) (DaemonView, bool) {
	ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
	defer cancel()
	o, _ := w.ledger.Get(otn)
	r, err := w.rig.Ctl.Request(ctx, o.Device, "pay/query", map[string]any{"out_trade_no": otn})
	if err != nil {
		return DaemonView{}, false
	}
	if r.Error == contract.ErrOrderNotFound {
		return DaemonView{Found: false}, true
	}
	var q contract.QueryReply
	if r.Code != 0 || r.Decode(&q) != nil {
		return DaemonView{}, false
	}
	return DaemonView{Found: true, State: q.State}, true
}

// settle waits until order otn passes every invariant, or until deadline;
// it returns the violations left at the deadline (none when it settled).
// Safety violations are returned at once: waiting cannot repair them.
func (w *world) settle(otn string, deadline time.Time) []Violation {
	var last []Violation
	for {
		o, _ := w.ledger.Get(otn)
		legs := w.rig.Sim.Legs(otn)
		if vs := Check(o, legs, DaemonView{}, w.rig.Ctl.Replies, false); len(vs) > 0 {
			return vs
		}
		if v, ok := w.daemonView(otn); ok {
			o, _ = w.ledger.Get(otn)
			legs = w.rig.Sim.Legs(otn)
			last = Check(o, legs, v, w.rig.Ctl.Replies, true)
			if len(last) == 0 && o.CreateOK == (v.Found) {
				return nil
			}
			if len(last) == 0 && !o.CreateOK && v.Found && !Live(v.State) {
				return nil // refused or failed create, answered, settled
			}
		} else {
			last = []Violation{{Kind: VNoReply, OutTradeNo: otn, Detail: "query not answered"}}
		}
		if time.Now().After(deadline) || w.ctx.Err() != nil {
			return last
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// report books violations once each and logs them.
func (w *world) report(vs []Violation) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range vs {
		key := v.Kind + " " + v.OutTradeNo
		if w.reported[key] {
			continue
		}
		w.reported[key] = true
		w.violations = append(w.violations, v)
		w.t.Logf("VIOLATION %s", v)
	}
}

func (w *world) violationCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.violations)
}

// finish waits for every order to settle and reports what is left.
func (w *world) finish(grace time.Duration) {
	deadline := time.Now().Add(grace)
	for _, o := range w.ledger.Orders() {
		w.report(w.settle(o.OutTradeNo, deadline))
	}
	for _, r := range w.ledger.UnknownResults() {
		w.report([]Violation{{Kind: VUnknownResult, OutTradeNo: r.OutTradeNo, Detail: "status " + string(r.Status)}})
	}
	w.mu.Lock()
	daemons := slices.Collect(maps.Values(w.daemons))
	w.mu.Unlock()
	for _, d := range daemons {
		for _, c := range d.Crashes() {
			w.report([]Violation{{Kind: VDaemonCrashed, Detail: c}})
		}
	}
}

// addDevice starts one more daemon on the rig and returns its device id.
func (w *world) addDevice(overrides map[string]any) string {
	w.t.Helper()
	dev := "dev" + testrig.RandomHex(3)
	d, err := w.rig.Daemon(dev, overrides)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		if code, err := d.Stop(10 * time.Second); err != nil || code != 0 {
			w.t.Errorf("daemon stop: exit %d, %v (log %s)", code, err, d.Log)
		}
	})
	ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
	defer cancel()
	if err := w.rig.Ctl.WaitOnline(ctx, dev); err != nil {
		w.t.Fatalf("%v (log %s)", err, d.Log)
	}
	w.mu.Lock()
	w.daemons[dev] = d
	w.mu.Unlock()
	return dev
}

// explain logs the last lines of order otn's device log that name it: what
// the daemon did with an order that broke a rule.
func (w *world) explain(otn string) {
	o, _ := w.ledger.Get(otn)
	w.mu.Lock()
	d := w.daemons[o.Device]
	w.mu.Unlock()
	if d == nil {
		return
	}
	b, err := os.ReadFile(d.Log)
	if err != nil {
		w.t.Logf("%s: %v", otn, err)
		return
	}
	var lines []string
	for l := range strings.Lines(string(b)) {
		if strings.Contains(l, otn) {
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
	}
	lines = lines[max(0, len(lines)-40):]
	w.t.Logf("%s: the last %d lines of %s that name it:\n%s", otn, len(lines), d.Log, strings.Join(lines, "\n"))
}

// outcomes counts final daemon states over the ledger (for the summary).
func (w *world) outcomes() map[string]int {
	m := map[string]int{}
	for _, o := range w.ledger.Orders() {
		v, ok := w.daemonView(o.OutTradeNo)
		switch {
		case !ok:
			m["unanswered"]++
		case !v.Found:
			m["not_found"]++
		default:
			m[v.State]++
		}
	}
	return m
}
