package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
)

// webOutput makes a daemon run the web display, as the config paysim
// writes does, on a free port.
func webOutput() map[string]any {
	port, _ := testrig.FreePort()
	return map[string]any{"display.outputs": []string{"web"}, "display.web_listen": "127.0.0.1:" + strconv.Itoa(port)}
}

// measureIdle starts a fresh daemon and measures it doing nothing.
func (b *bench) measureIdle(ctx context.Context, rep *Report) error {
	d, err := b.daemon(ctx, "idle-1", webOutput())
	if err != nil {
		return err
	}
	defer d.Stop(10 * time.Second)
	rss, sw, ev, err := idleFigures(ctx, d.PID(), 5*time.Second, b.o.idleFor)
	if err != nil {
		return err
	}
	rep.Memory.IdleFresh, rep.Wakeups.Fresh, rep.Wakeups.FreshEvents, rep.Wakeups.Seconds = rss, sw, ev, b.o.idleFor.Seconds()
	rep.Memory.IdleFreshAnon, _, _ = testrig.MemoryBreakdown(d.PID())
	return nil
}

// idleFigures waits settle, then watches the process for d: it returns the
// RSS at the end, the context switches per second summed over all threads
// (every time any thread slept or was preempted), and the wake-up events
// per second: bursts of switches separated by at least 50 ms of quiet,
// which is what one timer firing looks like even when it passes through
// several runtime threads.
func idleFigures(ctx context.Context, pid int, settle, d time.Duration) (rss int64, switches, events float64, err error) {
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return 0, 0, 0, ctx.Err()
	}
	first, err := testrig.ContextSwitches(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	prev, quietSince, n := first, start, 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < d {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		}
		cur, err := testrig.ContextSwitches(pid)
		if err != nil {
			return 0, 0, 0, err
		}
		now := time.Now()
		if cur != prev {
			if now.Sub(quietSince) >= 50*time.Millisecond {
				n++
			}
			prev = cur
			quietSince = now
		} else if quietSince.IsZero() {
			quietSince = now
		}
	}
	secs := time.Since(start).Seconds()
	rss, _, err = testrig.Memory(pid)
	return rss, float64(prev-first) / secs, float64(n) / secs, err
}

// measureFloor times, N times in a row, the irreducible work of a create:
// one bbolt commit (fsync), one RSA-2048 SHA-256 signature with the
// merchant key and one verification with the platform key, the QR PNG data
// URL of a code_url, and one MQTT QoS 1 round trip through the broker
// (publish → echo client → publish back).
func (b *bench) measureFloor(ctx context.Context, rep *Report) error {
	db, err := bolt.Open(filepath.Join(b.dir, "floor.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	value := make([]byte, 1024)
	_, _ = rand.Read(value)
	msg := []byte("POST\n/v3/pay/transactions/native\n1700000000\n" + strings.Repeat("n", 32) + "\n" +
		`{"appid":"wxd678efh567hg6787","mchid":"1900000109","description":"bench","out_trade_no":"kb_000001","notify_url":"https://relay.example/notify/dev/wxpay","amount":{"total":1000,"currency":"CNY"}}` + "\n")
	platformSig, err := rsa.SignPKCS1v15(rand.Reader, b.keys.WxPlatform, crypto.SHA256, sha256Sum(msg))
	if err != nil {
		return err
	}
	codeURL := "weixin://wxpay/bizpayurl?pr=AbCdEfGhIj"

	echo, rtt, err := b.mqttEcho(ctx)
	if err != nil {
		return err
	}
	defer echo()

	parts := map[string][]time.Duration{}
	var total []time.Duration
	for i := 0; i < b.o.creates; i++ {
		var sum time.Duration
		step := func(name string, fn func() error) error {
			t := time.Now()
			if err := fn(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			d := time.Since(t)
			parts[name] = append(parts[name], d)
			sum += d
			return nil
		}
		err := step("bbolt_commit", func() error {
			return db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("orders"))
				if err != nil {
					return err
				}
				return bk.Put([]byte(fmt.Sprintf("kb_%06d", i)), value)
			})
		})
		if err == nil {
			err = step("rsa_sign", func() error {
				_, err := rsa.SignPKCS1v15(rand.Reader, b.keys.WxMerchant, crypto.SHA256, sha256Sum(msg))
				return err
			})
		}
		if err == nil {
			err = step("rsa_verify", func() error {
				return rsa.VerifyPKCS1v15(&b.keys.WxPlatform.PublicKey, crypto.SHA256, sha256Sum(msg), platformSig)
			})
		}
		if err == nil {
			err = step("qr_encode", func() error { _, err := payment.QRDataURL(codeURL); return err })
		}
		if err == nil {
			err = step("mqtt_round_trip", func() error { return rtt(ctx, i) })
		}
		if err != nil {
			return err
		}
		total = append(total, sum)
	}
	rep.Floor.Total = statOf(total)
	rep.Floor.Parts = map[string]Stat{}
	for k, v := range parts {
		rep.Floor.Parts[k] = statOf(v)
	}
	return nil
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// mqttEcho connects an echo client and a pinger to the rig's broker and
// returns a function doing one QoS 1 round trip.
func (b *bench) mqttEcho(ctx context.Context) (stop func(), rtt func(context.Context, int) error, err error) {
	ping, pong := b.rig.Prefix+"/floor/ping", b.rig.Prefix+"/floor/pong"
	connect := func(id string, onConnect func(mqtt.Client)) (mqtt.Client, error) {
		opts := mqtt.NewClientOptions().AddBroker(b.rig.URL).SetClientID(id).SetCleanSession(true).
			SetOrderMatters(false).SetConnectTimeout(5 * time.Second)
		opts.SetOnConnectHandler(onConnect)
		c := mqtt.NewClient(opts)
		t := c.Connect()
		select {
		case <-t.Done():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return c, t.Error()
	}
	subscribe := func(c mqtt.Client, topic string, h mqtt.MessageHandler) error {
		t := c.Subscribe(topic, 1, h)
		select {
		case <-t.Done():
			return t.Error()
		case <-time.After(5 * time.Second):
			return fmt.Errorf("subscribe %s: timeout", topic)
		}
	}
	echo, err := connect("kioskbench-echo", func(mqtt.Client) {})
	if err != nil {
		return nil, nil, err
	}
	if err := subscribe(echo, ping, func(c mqtt.Client, m mqtt.Message) {
		c.Publish(pong, 1, false, m.Payload())
	}); err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	waiting := map[string]chan struct{}{}
	pinger, err := connect("kioskbench-ping", func(mqtt.Client) {})
	if err != nil {
		echo.Disconnect(0)
		return nil, nil, err
	}
	if err := subscribe(pinger, pong, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		ch := waiting[string(m.Payload())]
		delete(waiting, string(m.Payload()))
		mu.Unlock()
		if ch != nil {
			close(ch)
		}
	}); err != nil {
		return nil, nil, err
	}
	stop = func() { pinger.Disconnect(50); echo.Disconnect(50) }
	rtt = func(ctx context.Context, i int) error {
		id := strconv.Itoa(i)
		ch := make(chan struct{})
		mu.Lock()
		waiting[id] = ch
		mu.Unlock()
		pinger.Publish(ping, 1, false, []byte(id))
		select {
		case <-ch:
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no echo for %s", id)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return stop, rtt, nil
}

// mainDaemon is the daemon create, detection (poll) and calls (poll) share;
// its peak memory is the run's peak.
func (b *bench) mainDaemon(ctx context.Context) (*testrig.Daemon, error) {
	b.mu.Lock()
	d := b.main
	b.mu.Unlock()
	if d != nil {
		return d, nil
	}
	d, err := b.daemon(ctx, "main-1", webOutput())
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.main = d
	b.mu.Unlock()
	return d, nil
}

// measureCreate times create → reply, each order then cancelled (untimed)
// so the next create does not supersede a pending order.
func (b *bench) measureCreate(ctx context.Context, rep *Report) error {
	d, err := b.mainDaemon(ctx)
	if err != nil {
		return err
	}
	var lat []time.Duration
	for i := 0; i < b.o.creates; i++ {
		otn := b.otn()
		results := b.expect(otn)
		o, err := b.create(ctx, "main-1", otn, 1000, 0)
		if err != nil {
			b.forget(otn)
			return err
		}
		lat = append(lat, o.created)
		if err := b.cancelAndWait(ctx, "main-1", otn, results); err != nil {
			b.forget(otn)
			return err
		}
		b.forget(otn)
	}
	rep.Create = statOf(lat)
	_, peak, _ := testrig.Memory(d.PID())
	rep.Memory.Peak = max(rep.Memory.Peak, peak)
	return nil
}

// measureDetect times simulated payment → paid result, by polling on the
// main daemon and through notifyrelay on a second one.
func (b *bench) measureDetect(ctx context.Context, rep *Report) error {
	if _, err := b.mainDaemon(ctx); err != nil {
		return err
	}
	// A person needs several seconds to scan, check the amount and confirm;
	// the daemon's first query is 2 s after creation by design. Payments are
	// placed 2–5 s after the code appears, at a random phase of the poll
	// cycle.
	poll, err := b.detectLoop(ctx, "main-1", b.rig.Sim, 2*time.Second, 5*time.Second)
	if err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	rep.DetectPoll = statOf(poll)
	rd, sim, err := b.relayDaemon(ctx)
	if err != nil {
		return err
	}
	_ = rd
	// Notifications do not depend on the poll cycle: pay at once or later.
	relay, err := b.detectLoop(ctx, "relay-1", sim, 100*time.Millisecond, 3*time.Second)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	rep.DetectRelay = statOf(relay)
	return nil
}

// relayDaemon starts (once) notifyrelay, a second simulator and a daemon
// whose orders carry the relay's notify_url.
func (b *bench) relayDaemon(ctx context.Context) (*testrig.Daemon, *testrig.Sim, error) {
	b.mu.Lock()
	d, s := b.relayD, b.relaySim
	b.mu.Unlock()
	if d != nil {
		return d, s, nil
	}
	url, stop, err := b.startRelay(ctx, "notifyrelay")
	if err != nil {
		return nil, nil, err
	}
	b.cleanup = append(b.cleanup, stop)
	s, over, err := b.extraSim()
	if err != nil {
		return nil, nil, err
	}
	b.cleanup = append(b.cleanup, s.Close)
	over["payment.notify_url"] = url
	for k, v := range webOutput() {
		over[k] = v
	}
	d, err = b.daemon(ctx, "relay-1", over)
	if err != nil {
		return nil, nil, err
	}
	b.mu.Lock()
	b.relayD, b.relaySim, b.relayURL = d, s, url
	b.mu.Unlock()
	return d, s, nil
}

// detectLoop creates orders one at a time and pays each between payAfter
// and payBefore after its reply, timing payment → paid result.
func (b *bench) detectLoop(ctx context.Context, device string, sim *testrig.Sim, payAfter, payBefore time.Duration) ([]time.Duration, error) {
	var lat []time.Duration
	for i := 0; i < b.o.detects; i++ {
		otn := b.otnFor(device)
		results := b.expect(otn)
		o, err := b.create(ctx, device, otn, 1000, 0)
		if err != nil {
			b.forget(otn)
			return lat, err
		}
		time.Sleep(jitter(payAfter, payBefore))
		if err := b.payAndWait(ctx, sim, device, &o, results); err != nil {
			b.forget(otn)
			return lat, err
		}
		b.forget(otn)
		lat = append(lat, o.detected)
	}
	return lat, nil
}

// measureCalls counts provider API calls for one order paid after 10 s and
// one never paid, by polling and with the relay, side by side.
func (b *bench) measureCalls(ctx context.Context, rep *Report) error {
	if _, err := b.mainDaemon(ctx); err != nil {
		return err
	}
	_, rsim, err := b.relayDaemon(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var errs [2]error
	run := func(i int, device string, sim *testrig.Sim, paid, unpaid *Calls) {
		defer wg.Done()
		if errs[i] = b.callsPaidAfter(ctx, device, sim, 10*time.Second, paid); errs[i] != nil {
			return
		}
		errs[i] = b.callsUnpaid(ctx, device, sim, unpaid)
	}
	wg.Add(2)
	go run(0, "main-1", b.rig.Sim, &rep.Calls.PaidAfter10sPoll, &rep.Calls.UnpaidPoll)
	go run(1, "relay-1", rsim, &rep.Calls.PaidAfter10sRelay, &rep.Calls.UnpaidRelay)
	wg.Wait()
	if errs[0] != nil {
		return errs[0]
	}
	return errs[1]
}

func diffStats(before, after map[string]int) Calls {
	c := Calls{ByAPI: map[string]int{}}
	for k, v := range after {
		if n := v - before[k]; n > 0 {
			c.ByAPI[k] = n
			c.Total += n
		}
	}
	return c
}

func (b *bench) callsPaidAfter(ctx context.Context, device string, sim *testrig.Sim, wait time.Duration, out *Calls) error {
	before := sim.Stats()
	otn := b.otn()
	results := b.expect(otn)
	defer b.forget(otn)
	o, err := b.create(ctx, device, otn, 1000, 0)
	if err != nil {
		return err
	}
	time.Sleep(wait)
	if err := b.payAndWait(ctx, sim, device, &o, results); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // closing the other code, stragglers
	*out = diffStats(before, sim.Stats())
	return nil
}

func (b *bench) callsUnpaid(ctx context.Context, device string, sim *testrig.Sim, out *Calls) error {
	before := sim.Stats()
	otn := b.otn()
	results := b.expect(otn)
	defer b.forget(otn)
	if _, err := b.create(ctx, device, otn, 1000, 60); err != nil {
		return err
	}
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case r := <-results:
			if r.Status == "paid" {
				return fmt.Errorf("unpaid order %s reported paid", otn)
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := b.rig.Ctl.Request(actx, device, contract.TopicAck, map[string]any{"out_trade_no": otn, "ok": false, "reason": "bench"})
			cancel()
			if err != nil {
				return err
			}
			time.Sleep(3 * time.Second)
			*out = diffStats(before, sim.Stats())
			out.Outcome = string(r.Status)
			return nil
		case <-timeout:
			return fmt.Errorf("no result for unpaid order %s", otn)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// measureThroughput runs many daemons on the broker, each ordering as fast
// as it can: create → pay → paid result (through the relay) → ack.
func (b *bench) measureThroughput(ctx context.Context, rep *Report) error {
	// The main daemon's figures are final now.
	if d := b.main; d != nil {
		rss, sw, ev, err := idleFigures(ctx, d.PID(), 2*time.Second, b.o.idleFor)
		if err == nil {
			rep.Memory.IdleAfterLoad, rep.Wakeups.AfterLoad, rep.Wakeups.AfterLoadEvents = rss, sw, ev
			rep.Memory.IdleAfterLoadAnon, _, _ = testrig.MemoryBreakdown(d.PID())
		}
		_, peak, _ := testrig.Memory(d.PID())
		rep.Memory.Peak = max(rep.Memory.Peak, peak)
	}
	if _, _, err := b.relayDaemon(ctx); err != nil {
		return err
	}
	sim, over, err := b.extraSim()
	if err != nil {
		return err
	}
	defer sim.Close()
	over["payment.notify_url"] = b.relayURL
	n := b.o.devices
	daemons := make([]*testrig.Daemon, n)
	defer func() {
		var wg sync.WaitGroup
		for _, d := range daemons {
			if d != nil {
				wg.Add(1)
				go func() { defer wg.Done(); d.Stop(10 * time.Second) }()
			}
		}
		wg.Wait()
	}()
	startAll := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	var firstErr atomic.Value
	for i := range daemons {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := b.daemon(ctx, fmt.Sprintf("tp-%03d", i), over)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			daemons[i] = d
		}()
	}
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil {
		return e
	}
	b.log.Info("daemons online", "n", n, "took", time.Since(startAll).Round(time.Millisecond))

	begin := time.Now().Add(b.o.warmup)
	end := begin.Add(b.o.window)
	var mu sync.Mutex
	var creates, detects []time.Duration
	completed, failed := 0, 0
	for i := range daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := fmt.Sprintf("tp-%03d", i)
			for time.Now().Before(end) && ctx.Err() == nil {
				otn := b.otn()
				results := b.expect(otn)
				o, err := b.create(ctx, dev, otn, 1000, 0)
				if err == nil {
					err = b.payAndWait(ctx, sim, dev, &o, results)
				}
				b.forget(otn)
				mu.Lock()
				switch {
				case err != nil:
					failed++
				case o.resultSeen.After(begin) && o.resultSeen.Before(end):
					completed++
					creates = append(creates, o.created)
					detects = append(detects, o.detected)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var rssSum int64
	for _, d := range daemons {
		if d != nil {
			r, _, _ := testrig.Memory(d.PID())
			rssSum += r
		}
	}
	calls := 0
	for _, v := range sim.Stats() {
		calls += v
	}
	orders := len(sim.Orders())
	rep.Throughput = Throughput{
		Devices: n, Window: b.o.window.Seconds(), Completed: completed, Failed: failed,
		OrdersPerSec: float64(completed) / b.o.window.Seconds(),
		Create:       statOf(creates), Detect: statOf(detects),
		RSSPerDaemon: rssSum / int64(n),
	}
	if orders > 0 {
		rep.Throughput.CallsPerOrder = float64(calls) / float64(orders)
	}
	return nil
}

// measureSizes builds kioskpayd for each architecture, as built and
// stripped (-ldflags "-s -w").
func (b *bench) measureSizes(ctx context.Context, rep *Report) error {
	root, err := testrig.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	for _, a := range strings.Split(b.o.arches, ",") {
		arch, arm, _ := strings.Cut(strings.TrimSpace(a), "/")
		env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if arm != "" {
			env = append(env, "GOARM="+arm)
		}
		s := Size{Arch: "linux/" + strings.TrimSpace(a)}
		for _, strip := range []bool{false, true} {
			out := filepath.Join(b.dir, "size", strings.ReplaceAll(a, "/", "v"), fmt.Sprint(strip), "kioskpayd")
			args := []string{"build", "-trimpath", "-o", out}
			if strip {
				args = append(args, "-ldflags=-s -w")
			}
			cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/kioskpayd")...)
			cmd.Dir, cmd.Env = root, env
			if msg, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("build %s: %v\n%s", a, err, msg)
			}
			fi, err := os.Stat(out)
			if err != nil {
				return err
			}
			if strip {
				s.Stripped = fi.Size()
			} else {
				s.Bytes = fi.Size()
			}
		}
		rep.Sizes = append(rep.Sizes, s)
	}
	return nil
}
