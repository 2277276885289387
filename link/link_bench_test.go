package link

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
)

// BenchmarkDrain measures outbox throughput: each entry is published at
// QoS 1 and confirmed only after its PUBACK, one at a time.
func BenchmarkDrain(b *testing.B) {
	url := mqtttest.Broker(b)
	id := mqtttest.Unique("bench")
	eng := newFakeEngine()
	eng.publishedC = make(chan uint64, b.N+10)
	l, err := New(Options{URLs: []string{url}, ClientID: id, Prefix: "kptest/" + id, Logger: slog.New(slog.DiscardHandler)}, eng)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-l.Ready()
	payload := []byte(`{"out_trade_no":"bench_000001","status":"paid","total_fee":1000}`)
	b.ResetTimer()
	for i := range b.N {
		eng.mu.Lock()
		eng.outbox = append(eng.outbox, contract.Outgoing{ID: uint64(i + 1), Topic: "pay/result", Payload: payload})
		eng.mu.Unlock()
	}
	select {
	case eng.outboxC <- struct{}{}:
	default:
	}
	for range b.N {
		select {
		case <-eng.publishedC:
		case <-time.After(30 * time.Second):
			b.Fatal("drain stalled")
		}
	}
}

// BenchmarkInbound measures broker-to-Accept latency for commands.
func BenchmarkInbound(b *testing.B) {
	url := mqtttest.Broker(b)
	id := mqtttest.Unique("bench")
	prefix := "kptest/" + id
	eng := newFakeEngine()
	eng.acceptedC = make(chan accepted, b.N+10)
	l, err := New(Options{URLs: []string{url}, ClientID: id, Prefix: prefix, Logger: slog.New(slog.DiscardHandler)}, eng)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-l.Ready()
	sub := mqtttest.Subscribe(b, url, "kptest/unused/"+id)
	b.ResetTimer()
	for i := range b.N {
		t := sub.Client.Publish(prefix+"/pay/query", 1, false, fmt.Appendf(nil, `{"i":%d}`, i))
		if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			b.Fatal("publish failed")
		}
		<-eng.acceptedC
	}
}
