package proof

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/testrig"
)

// TestFlood publishes KIOSKPAY_FLOOD commands (mixed valid and junk) to one
// daemon as fast as the broker takes them, through a Mosquitto whose
// per-client queue holds the whole burst, and checks that every command
// got exactly one reply while the daemon's resident memory stayed bounded.
// It reports the peak RSS (VmHWM), the drain rate and how long the last
// reply took.
//
//	KIOSKPAY_FLOOD=5000 go test -run TestFlood -v -timeout 20m ./proof
//
// KIOSKPAY_FLOOD_MAX_RSS_MB (default 40) is the limit the peak is held to.
func TestFlood(t *testing.T) {
	n := envInt("KIOSKPAY_FLOOD", 0)
	if n <= 0 {
		t.Skip("set KIOSKPAY_FLOOD=5000 to run the flood")
	}
	maxRSS := int64(envInt("KIOSKPAY_FLOOD_MAX_RSS_MB", 40)) << 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	if keep := os.Getenv("KIOSKPAY_PROOF_DIR"); keep != "" {
		dir = filepath.Join(keep, fmt.Sprintf("flood-%d", time.Now().Unix()))
	}
	var (
		mu      sync.Mutex
		perID   = map[string]int{}
		total   atomic.Int64
		last    atomic.Int64
		allSeen = make(chan struct{})
		once    sync.Once
	)
	rig, err := testrig.NewRig(ctx, dir, testrig.RigOptions{Keys: simkeys.Get(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer rig.Close()
	rig.Ctl.OnReply = func(_ string, r testrig.Reply) {
		mu.Lock()
		perID[r.RequestID]++
		mu.Unlock()
		last.Store(time.Now().UnixNano())
		if total.Add(1) == int64(n) {
			once.Do(func() { close(allSeen) })
		}
	}
	dev := "flood" + testrig.RandomHex(3)
	d, err := rig.Daemon(dev, map[string]any{"payment.poll": "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Stop(20 * time.Second)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := rig.Ctl.WaitOnline(wctx, dev); err != nil {
		t.Fatalf("%v (log %s)", err, d.Log)
	}
	pid := d.PID()
	rss0, _, _ := testrig.Memory(pid)

	msgs, ids := floodMessages(n, rig.Ctl)
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(rig.URL).SetClientID("flood-pub-" + testrig.RandomHex(4)).
		SetCleanSession(true).SetAutoReconnect(false).SetWriteTimeout(30 * time.Second))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	defer pub.Disconnect(100)

	start := time.Now()
	tokens := make([]mqtt.Token, 0, len(msgs))
	for _, m := range msgs {
		tokens = append(tokens, pub.Publish(rig.Prefix+"/"+dev+"/"+m.topic, 1, false, m.payload))
	}
	for i, tok := range tokens {
		if !tok.WaitTimeout(2*time.Minute) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	published := time.Since(start)
	t.Logf("published %d messages in %s (broker PUBACKs)", n, published.Round(time.Millisecond))

	// Sample the resident set while the daemon drains: VmHWM holds the
	// peak, the samples show how memory moved.
	var peakAnon int64
	sampler := time.NewTicker(100 * time.Millisecond)
	defer sampler.Stop()
	timeout := time.After(time.Duration(n/5+60) * time.Second)
wait:
	for {
		select {
		case <-allSeen:
			break wait
		case <-sampler.C:
			if a, _, err := testrig.MemoryBreakdown(pid); err == nil && a > peakAnon {
				peakAnon = a
			}
		case <-timeout:
			t.Errorf("only %d of %d replies after %s (log %s)", total.Load(), n, time.Since(start).Round(time.Second), d.Log)
			break wait
		}
	}
	drained := time.Duration(last.Load() - start.UnixNano())
	// Late duplicates would arrive after the last expected reply.
	time.Sleep(2 * time.Second)
	rss1, peak, _ := testrig.Memory(pid)

	mu.Lock()
	var dup, missing []string
	for _, id := range ids {
		switch perID[id] {
		case 1:
		case 0:
			missing = append(missing, id)
		default:
			dup = append(dup, id)
		}
	}
	mu.Unlock()
	rate := float64(total.Load()) / drained.Seconds()
	t.Logf("FLOOD messages=%d replies=%d missing=%d duplicated=%d drained=%s rate=%.0f/s rss_before=%.1fMiB rss_after=%.1fMiB peak_rss=%.1fMiB peak_anon=%.1fMiB",
		n, total.Load(), len(missing), len(dup), drained.Round(time.Millisecond), rate,
		mib(rss0), mib(rss1), mib(peak), mib(peakAnon))
	fmt.Printf("FLOOD messages=%d replies=%d rate=%.0f/s peak_rss=%.1fMiB\n", n, total.Load(), rate, mib(peak))
	if total.Load() != int64(n) {
		t.Errorf("%d replies for %d commands", total.Load(), n)
	}
	if len(missing) > 0 || len(dup) > 0 {
		t.Errorf("request ids without a reply: %d (e.g. %v); with more than one: %d (e.g. %v)", len(missing), head(missing), len(dup), head(dup))
	}
	if peak > maxRSS {
		t.Errorf("peak RSS %.1f MiB is above %.0f MiB", mib(peak), mib(maxRSS))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func head(s []string) []string { return s[:min(len(s), 5)] }

type floodMsg struct {
	topic   string
	payload []byte
}

// floodMessages builds n commands: a tenth valid creates (each superseding
// the one before), the rest queries, cancels, acks, refunds and order
// lists of orders that do not exist, invalid fields, bad JSON, and
// oversized payloads. ids are the request ids the daemon can echo (the
// messages it cannot parse are answered without one).
func floodMessages(n int, ctl *testrig.Controller) ([]floodMsg, []string) {
	var out []floodMsg
	var ids []string
	add := func(topic string, v map[string]any) {
		id := ctl.NewRequestID()
		v["request_id"] = id
		b, _ := json.Marshal(v)
		out = append(out, floodMsg{topic, b})
		ids = append(ids, id)
	}
	pad := strings.Repeat("x", 17<<10)
	for i := 0; len(out) < n; i++ {
		otn := fmt.Sprintf("flood%08d", i)
		switch i % 10 {
		case 0:
			add("pay/create", map[string]any{"provider": []string{"wxpay", "alipay", "any"}[i%3],
				"data": map[string]any{"out_trade_no": otn, "total_fee": 100 + i%900, "subject": "flood", "type": "flood"}})
		case 1:
			add("pay/query", map[string]any{"out_trade_no": otn})
		case 2:
			add("pay/cancel", map[string]any{"out_trade_no": otn})
		case 3:
			add("unlock/ack", map[string]any{"out_trade_no": otn, "ok": true})
		case 4:
			out = append(out, floodMsg{"pay/create", []byte(`{"request_id": "broken`)})
		case 5:
			// Oversized: cut to the limit on arrival, refused with
			// PAYLOAD_TOO_LARGE and no request id it could read.
			out = append(out, floodMsg{"pay/query", []byte(`{"out_trade_no":"` + otn + `","pad":"` + pad + `"}`)})
		case 6:
			add("pay/create", map[string]any{"data": map[string]any{"out_trade_no": otn, "total_fee": "1.00", "subject": "x", "type": "x"}})
		case 7:
			add("pay/orders", map[string]any{"limit": 5})
		case 8:
			add("pay/refund", map[string]any{"out_trade_no": otn})
		case 9:
			add("pay/create", map[string]any{"provider": "paypal", "data": map[string]any{"out_trade_no": otn, "total_fee": 100, "subject": "x", "type": "x"}})
		}
	}
	return out[:n], ids
}

// flood publishes n commands of the flood's mix to the world's device, as
// fast as the broker takes them; their replies are not booked (the
// creates among them make orders nobody pays, and each supersedes the
// order on screen, as a misbehaving controller would).
func (w *world) flood(n int) {
	msgs, _ := floodMessages(n, w.rig.Ctl)
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	for _, m := range msgs {
		if m.topic == "pay/create" {
			continue // a foreign create would supersede the round's order
		}
		if err := w.rig.Ctl.Publish(ctx, w.dev, m.topic, m.payload); err != nil {
			w.t.Logf("flood: %v", err)
			return
		}
	}
}
