package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// bench holds the shared pieces of one run.
type bench struct {
	o   options
	dir string
	log *slog.Logger

	rig      *testrig.Rig
	keys     *paysim.Keys
	relayBin string

	mu       sync.Mutex
	waiters  map[string]chan testrig.Result // out_trade_no → results
	seq      int
	prefixes map[string]string // device → out_trade_no prefix (gateway)

	main     *testrig.Daemon // create, detection and calls by polling
	relayD   *testrig.Daemon // detection and calls through notifyrelay
	gwD      *testrig.Daemon // create and detection through paygate
	relaySim *testrig.Sim
	relayURL string
	cleanup  []func()
}

func (b *bench) run(ctx context.Context) (*Report, error) {
	rep := &Report{Command: b.o.commandLn, Started: time.Now().UTC().Format(time.RFC3339)}
	b.waiters = map[string]chan testrig.Result{}
	rep.BrokerNoDelay = b.o.nodelay
	if b.o.poll == "" {
		b.o.poll = "2s" // what paysim's kioskpayd.toml ships
	}
	rep.Provider, rep.Poll = b.o.provider, b.o.poll
	rep.Machine = machine(b.dir)
	defer func() {
		for _, d := range []*testrig.Daemon{b.main, b.relayD, b.gwD} {
			if d != nil {
				d.Stop(10 * time.Second)
			}
		}
		for i := len(b.cleanup) - 1; i >= 0; i-- {
			b.cleanup[i]()
		}
		if b.rig != nil {
			b.rig.Close()
		}
	}()

	steps := []struct {
		name string
		fn   func(context.Context, *Report) error
		rig  bool // needs the daemon rig (broker, paysim, binaries)
	}{
		{"idle", b.measureIdle, true},
		{"floor", b.measureFloor, true},
		{"create", b.measureCreate, true},
		{"detect", b.measureDetect, true},
		{"calls", b.measureCalls, true},
		{"throughput", b.measureThroughput, true},
		{"gateway", b.measureGateway, true},
		{"sizes", b.measureSizes, false},
		{"history", b.measureHistory, true},
		{"fleet", b.measureFleet, false},
	}
	for _, s := range steps {
		if b.o.skip[s.name] {
			continue
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if s.rig && b.rig == nil {
			if err := b.startRig(ctx); err != nil {
				return rep, err
			}
		}
		b.log.Info("measuring", "part", s.name)
		start := time.Now()
		if err := s.fn(ctx, rep); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", s.name, err))
			b.log.Error("measurement failed", "part", s.name, "err", err)
		}
		b.log.Info("measured", "part", s.name, "took", time.Since(start).Round(time.Second))
	}
	rep.Finished = time.Now().UTC().Format(time.RFC3339)
	rep.evaluate()
	return rep, nil
}

// startRig generates keys, builds the binaries and starts the broker,
// paysim and the controller the daemon measurements share.
func (b *bench) startRig(ctx context.Context) error {
	b.log.Info("generating keys and building binaries")
	var err error
	if b.keys, err = paysim.GenerateKeys(); err != nil {
		return err
	}
	var brokerConf []string
	if b.o.nodelay {
		brokerConf = append(brokerConf, "set_tcp_nodelay true")
	}
	b.rig, err = testrig.NewRig(ctx, b.dir, testrig.RigOptions{
		Keys: b.keys, Sim: testrig.SimOptions{RefundDelay: 200 * time.Millisecond}, OnResult: b.onResult,
		BrokerConfig: brokerConf,
	})
	if err != nil {
		return err
	}
	b.relayBin = filepath.Join(b.dir, "notifyrelay")
	return testrig.Build(ctx, "./cmd/notifyrelay", b.relayBin, "CGO_ENABLED=0")
}

// onResult routes results to whoever waits for that order, and acks
// anything nobody waits for so it is not re-published forever.
func (b *bench) onResult(r testrig.Result) {
	b.mu.Lock()
	ch := b.waiters[r.OutTradeNo]
	b.mu.Unlock()
	if ch != nil {
		select {
		case ch <- r:
		default:
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = b.rig.Ctl.Ack(ctx, r.Device, r.OutTradeNo, false, "bench: not waited for")
}

func (b *bench) expect(otn string) chan testrig.Result {
	ch := make(chan testrig.Result, 32)
	b.mu.Lock()
	b.waiters[otn] = ch
	b.mu.Unlock()
	return ch
}

func (b *bench) forget(otn string) {
	b.mu.Lock()
	delete(b.waiters, otn)
	b.mu.Unlock()
}

func (b *bench) otn() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	return fmt.Sprintf("kb%d_%06d", time.Now().Unix()%100000, b.seq)
}

// otnFor is otn with device's out_trade_no prefix, for devices that use
// paygate.
func (b *bench) otnFor(device string) string {
	b.mu.Lock()
	p := b.prefixes[device]
	b.mu.Unlock()
	return p + b.otn()
}

// daemon starts a daemon for device with the bench's defaults plus
// overrides and waits until it is online.
func (b *bench) daemon(ctx context.Context, device string, overrides map[string]any) (*testrig.Daemon, error) {
	return b.startDaemon(ctx, b.rig.Daemon, device, overrides)
}

// startDaemon is daemon with the rig's constructor (Daemon, GatewayDaemon).
func (b *bench) startDaemon(ctx context.Context, mk func(string, map[string]any) (*testrig.Daemon, error), device string, overrides map[string]any) (*testrig.Daemon, error) {
	o := map[string]any{
		"payment.poll":       b.o.poll,
		"payment.provider":   b.o.provider,
		"unlock.ack_timeout": "30s",
	}
	for k, v := range overrides {
		o[k] = v
	}
	d, err := mk(device, o)
	if err != nil {
		return nil, err
	}
	if err := d.Start(); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.rig.Ctl.WaitOnline(wctx, device); err != nil {
		d.Stop(5 * time.Second)
		return nil, fmt.Errorf("%w (log %s)", err, d.Log)
	}
	return d, nil
}

// createFields is a create request for otn.
func (b *bench) createFields(otn string, total int64, expire int) map[string]any {
	data := map[string]any{"out_trade_no": otn, "total_fee": total, "subject": "bench", "type": "bench"}
	if expire > 0 {
		data["expire_seconds"] = expire
	}
	return map[string]any{"provider": b.o.provider, "needQRcode": true, "data": data}
}

// order is one timed order: created, optionally paid, its outcome acked.
type order struct {
	otn        string
	created    time.Duration // publish → reply
	reply      testrig.Reply
	detected   time.Duration // pay → paid result
	resultSeen time.Time
}

// create publishes a create and waits for the reply.
func (b *bench) create(ctx context.Context, device, otn string, total int64, expire int) (order, error) {
	o := order{otn: otn}
	fields := b.createFields(otn, total, expire)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	r, err := b.rig.Ctl.Request(cctx, device, contract.TopicCreate, fields)
	if err != nil {
		return o, err
	}
	o.created, o.reply = r.Received.Sub(start), r
	if r.Code != 0 {
		return o, fmt.Errorf("create %s: %s %s", otn, r.Error, r.Msg)
	}
	return o, nil
}

// payAndWait pays otn at sim and waits for the paid result, then acks it.
func (b *bench) payAndWait(ctx context.Context, sim *testrig.Sim, device string, o *order, results chan testrig.Result) error {
	prov := payment.ProviderName(b.o.provider)
	if b.o.provider == "any" {
		prov = payment.WxPay
	}
	start := time.Now()
	if err := sim.Pay(prov, o.otn, 0); err != nil {
		return fmt.Errorf("pay %s: %w", o.otn, err)
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case r := <-results:
			if r.Status != "paid" {
				continue
			}
			o.detected, o.resultSeen = r.Received.Sub(start), r.Received
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := b.rig.Ctl.Request(actx, device, contract.TopicAck, map[string]any{"out_trade_no": o.otn, "ok": true})
			return err
		case <-timeout:
			return fmt.Errorf("no paid result for %s within 60s", o.otn)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// cancelAndWait cancels otn and acks its cancelled result.
func (b *bench) cancelAndWait(ctx context.Context, device, otn string, results chan testrig.Result) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := b.rig.Ctl.Request(cctx, device, contract.TopicCancel, map[string]any{"out_trade_no": otn}); err != nil {
		return err
	}
	for {
		select {
		case r := <-results:
			if r.Status == "paid" {
				continue
			}
			_, err := b.rig.Ctl.Request(cctx, device, contract.TopicAck, map[string]any{"out_trade_no": otn, "ok": false, "reason": "bench"})
			return err
		case <-cctx.Done():
			return fmt.Errorf("no result after cancelling %s", otn)
		}
	}
}

// startRelay runs notifyrelay against the rig's broker and returns its
// base URL for payment.notify_url.
func (b *bench) startRelay(ctx context.Context, name string) (string, func(), error) {
	port, err := testrig.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logf, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(b.relayBin, "-listen", addr, "-broker", b.rig.URL, "-prefix", b.rig.Prefix, "-client-id", name+"-"+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}
	if err := testrig.WaitTCP(ctx, addr, 10*time.Second); err != nil {
		stop()
		return "", nil, err
	}
	return "http://" + addr, stop, nil
}

// extraSim starts another simulator with the same keys (so the same key
// files work) and returns it with the config overrides pointing a daemon
// at it.
func (b *bench) extraSim() (*testrig.Sim, map[string]any, error) {
	s, err := testrig.StartSim(b.keys, testrig.SimOptions{RefundDelay: 200 * time.Millisecond})
	if err != nil {
		return nil, nil, err
	}
	return s, map[string]any{
		"merchants.default.wxpay.api_base": s.URL,
		"merchants.default.alipay.gateway": s.URL + "/gateway.do",
	}, nil
}

func jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Float64()*float64(hi-lo))
}
