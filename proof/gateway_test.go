package proof

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
)

// TestGatewayReplicas runs orders for KIOSKPAY_GATEWAY (a duration, e.g.
// 60s) on KIOSKPAY_GATEWAY_DEVICES daemons (default 3) with
// payment.backend = "gateway" and no merchant key file, against three
// paygate replicas sharing one broker, while one replica is SIGKILLed
// every KIOSKPAY_GATEWAY_KILL_EVERY (default 4s) and restarted a second
// later. A call a killed replica held times out on the device as an
// unknown outcome and is asked again (of another replica); the provider
// dedupes by out_trade_no and out_refund_no. Every order must end the way
// its script says and pass every invariant.
func TestGatewayReplicas(t *testing.T) {
	total, err := time.ParseDuration(os.Getenv("KIOSKPAY_GATEWAY"))
	if err != nil || total <= 0 {
		t.Skip("set KIOSKPAY_GATEWAY=60s to run the paygate replica test")
	}
	killEvery := 4 * time.Second
	if d, err := time.ParseDuration(os.Getenv("KIOSKPAY_GATEWAY_KILL_EVERY")); err == nil && d > 0 {
		killEvery = d
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	overrides := map[string]any{
		"payment.poll":       "500ms",
		"unlock.ack_timeout": "5s",
		// A killed replica's call is given up after this; short, so
		// the load goes on at once.
		"gateway.timeout": "2s",
	}
	w := newWorldRig(t, ctx, testrig.RigOptions{Sim: testrig.SimOptions{RefundDelay: 300 * time.Millisecond}, Gateway: 3}, overrides, nil)
	devices := []string{w.dev}
	for len(devices) < envInt("KIOSKPAY_GATEWAY_DEVICES", 3) {
		devices = append(devices, w.addDevice(overrides))
	}
	statsBefore := w.rig.Sim.Stats()
	stop := time.Now().Add(total)

	var kills int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(killEvery):
			}
			if time.Now().After(stop) {
				return
			}
			g := w.rig.Gates[w.intn(len(w.rig.Gates))]
			if err := g.Kill(); err != nil {
				t.Errorf("kill paygate: %v", err)
				return
			}
			kills++
			time.Sleep(time.Second)
			if err := g.Start(); err != nil {
				t.Errorf("restart paygate: %v", err)
				return
			}
		}
	}()

	n := w.scriptedOrders(devices, stop)
	wg.Wait()
	w.finish(2 * time.Minute)

	calls, outcomes := w.tally(statsBefore)
	for _, g := range w.rig.Gates {
		for _, c := range g.Crashes() {
			w.report([]Violation{{Kind: VDaemonCrashed, Detail: "paygate: " + c}})
		}
	}
	// Every replica took a share: the shared subscription spreads the
	// requests (each replica's audit log has its decisions).
	var shares []string
	for i, g := range w.rig.Gates {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(g.Config), "audit.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Count(string(b), "\n")
		shares = append(shares, fmt.Sprint(lines))
		if lines == 0 {
			t.Errorf("paygate replica %d decided nothing", i)
		}
	}
	v := w.violationCount()
	t.Logf("GATEWAY devices=%d replicas=%d orders=%d provider_calls=%d paygate_kills=%d audited_per_replica=%s unlocks=%d violations=%d outcomes: %s",
		len(devices), len(w.rig.Gates), n, calls, kills, strings.Join(shares, "/"), w.unlocks, v, outcomes)
	fmt.Printf("GATEWAY orders=%d paygate_kills=%d violations=%d\n", n, kills, v)
	if v > 0 {
		for _, x := range w.violations {
			t.Errorf("violation: %s", x)
		}
		t.Logf("daemon log: %s", w.d.Log)
	}
}
