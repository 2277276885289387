package proof

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/internal/testrig"
)

// TestBrokerInflight measures whether the broker holds back QoS 1 messages
// beyond max_inflight_messages for a client that acknowledges them in
// order, a few milliseconds each: the flow control a device could rely on
// instead of its own. It reports how many were outstanding at most.
// Mosquitto 2.0.11 (Debian's): with a limit of 10, 1,795 of 2,000; so
// kioskpayd's link does its own flow control (link/).
//
//	KIOSKPAY_PROOF=1 go test -run TestBrokerInflight -v ./proof
func TestBrokerInflight(t *testing.T) {
	if os.Getenv("KIOSKPAY_PROOF") == "" {
		t.Skip("set KIOSKPAY_PROOF=1 to run the subprocess scenarios")
	}
	const limit, total = 10, 2000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := testrig.StartMosquitto(ctx, filepath.Join(t.TempDir(), "mosquitto"), "max_inflight_messages 10")
	if err != nil {
		t.Skipf("no mosquitto: %v", err)
	}
	defer b.Stop()

	var got, acked, most atomic.Int64
	queue := make(chan mqtt.Message, total)
	o := mqtt.NewClientOptions().AddBroker(b.URL).SetClientID("inflight-sub").SetCleanSession(false).
		SetOrderMatters(false).SetAutoAckDisabled(true)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		if out := got.Add(1) - acked.Load(); out > most.Load() {
			most.Store(out)
		}
		queue <- m
	})
	sub := mqtt.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sub.Disconnect(10)
	if tok := sub.Subscribe("inflight/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	go func() {
		for m := range queue {
			time.Sleep(2 * time.Millisecond) // a commit
			m.Ack()
			acked.Add(1)
		}
	}()
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL).SetClientID("inflight-pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer pub.Disconnect(10)
	toks := make([]mqtt.Token, 0, total)
	for range total {
		toks = append(toks, pub.Publish("inflight/x", 1, false, []byte("m")))
	}
	for _, tok := range toks {
		tok.WaitTimeout(30 * time.Second)
	}
	for acked.Load() < total && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("INFLIGHT max_inflight_messages=%d: at most %d of %d messages outstanding (unacknowledged at the client)", limit, most.Load(), total)
	if most.Load() > limit {
		t.Logf("the broker does not hold back QoS 1 messages beyond its limit: clients need their own flow control")
	}
}
