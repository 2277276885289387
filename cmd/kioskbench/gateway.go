package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/paygate"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/gateway"
)

// GatewayFigures are the gateway shape's figures, to set beside the local
// ones (create_ms, detect_relay_ms).
type GatewayFigures struct {
	// Create is publish → reply for a daemon whose provider calls go
	// through one paygate replica.
	Create Stat `json:"create_ms"`
	// Detect is pay → paid result, the notification going provider →
	// paygate → device, confirmed by a query through paygate.
	Detect Stat `json:"detect_notify_ms"`
	// RPS is provider queries per second one replica answered for Clients
	// devices calling at once (each its own connection and prefix), over
	// Window seconds; Failed counts calls without an answer.
	RPS     float64 `json:"requests_per_sec_per_replica"`
	Clients int     `json:"rps_clients"`
	Window  float64 `json:"rps_window_sec"`
	Calls   int64   `json:"rps_calls"`
	Failed  int64   `json:"rps_failed"`
}

// measureGateway starts one paygate replica on the rig and a daemon using
// it, times creates and notified payments as measureCreate and
// measureDetect do for local keys, then loads the replica with queries.
func (b *bench) measureGateway(ctx context.Context, rep *Report) error {
	// Orders back to back, and a load test: far above what one device
	// asks in service, so the per-device rate limit is lifted.
	if err := b.rig.StartGates(ctx, 1, map[string]any{"policy.default.rate": 100000.0, "policy.default.burst": 100000}); err != nil {
		return err
	}
	const dev = "gw-1"
	b.mu.Lock()
	if b.prefixes == nil {
		b.prefixes = map[string]string{}
	}
	b.prefixes[dev] = paygate.DerivedPrefix(dev)
	b.mu.Unlock()
	d, err := b.startDaemon(ctx, b.rig.GatewayDaemon, dev, nil)
	if err != nil {
		return err
	}
	b.gwD = d
	g := &GatewayFigures{}
	rep.Gateway = g
	var lat []time.Duration
	for i := 0; i < b.o.creates; i++ {
		otn := b.otnFor(dev)
		results := b.expect(otn)
		o, err := b.create(ctx, dev, otn, 1000, 0)
		if err == nil {
			err = b.cancelAndWait(ctx, dev, otn, results)
		}
		b.forget(otn)
		if err != nil {
			return err
		}
		lat = append(lat, o.created)
	}
	g.Create = statOf(lat)
	det, err := b.detectLoop(ctx, dev, b.rig.Sim, 100*time.Millisecond, 3*time.Second)
	if err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	g.Detect = statOf(det)
	return b.gatewayLoad(ctx, g, 32, 10*time.Second)
}

// gatewayLoad has clients devices, each with its own connection, create
// one order through paygate and then query it as fast as answers come for
// window.
func (b *bench) gatewayLoad(ctx context.Context, g *GatewayFigures, clients int, window time.Duration) error {
	var provs []payment.Provider
	var otns []string
	for i := range clients {
		dev := fmt.Sprintf("load-%d", i)
		conn, err := gateway.Dial(gateway.Options{Broker: mqttclient.Config{Brokers: mqttclient.NewBrokers([]string{b.rig.URL}), ClientID: "kioskbench-" + dev}, TopicPrefix: b.rig.Prefix, DeviceID: dev, Timeout: 10 * time.Second})
		if err != nil {
			return err
		}
		defer conn.Close()
		p := conn.Providers(map[string][]payment.ProviderName{"default": {payment.WxPay}})["default"][payment.WxPay]
		otn := paygate.DerivedPrefix(dev) + b.otn()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = p.Create(cctx, payment.Order{OutTradeNo: otn, Total: 100, Subject: "load", ExpireAt: time.Now().Add(10 * time.Minute)})
		cancel()
		if err != nil {
			return fmt.Errorf("load create: %w", err)
		}
		provs, otns = append(provs, p), append(otns, otn)
	}
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(window)
	for i := range provs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				if _, err := provs[i].Query(ctx, otns[i]); err != nil {
					failed.Add(1)
					continue
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	g.Clients, g.Window, g.Calls, g.Failed = clients, took.Seconds(), calls.Load(), failed.Load()
	g.RPS = float64(g.Calls) / took.Seconds()
	return nil
}
