package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kioskpay/kioskpay/assemble"
	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/payment/gateway/wire"
)

// checkGateway makes a round trip to paygate over the device's broker
// identity: the request topic's ACL, a paygate replica on the shared
// subscription and the reply's way back.
func checkGateway(ctx context.Context, r *report, cfg *config.Config, broken brokenKeys) {
	if cfg.Payment.Backend != config.BackendGateway {
		return
	}
	name := "paygate " + wire.RequestTopic(cfg.MQTT.TopicPrefix, cfg.DeviceID)
	if bad := broken.under("mqtt", "device_id", "gateway", "payment.backend"); bad != "" {
		r.skip(name, bad)
		return
	}
	lo, err := assemble.LinkOptions(cfg, nil)
	if err != nil {
		r.fail(name, err.Error())
		return
	}
	conn, err := assemble.Gateway(cfg, lo, "-gw-doctor", nil)
	if err != nil {
		r.fail(name, err.Error())
		return
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, checkTimeout+cfg.Gateway.Timeout.Duration)
	defer cancel()
	start := time.Now()
	if err := conn.WaitConnected(cctx); err != nil {
		r.fail(name, err.Error())
		return
	}
	if err := conn.Ping(cctx); err != nil {
		r.fail(name, "no round trip: "+err.Error()+" (is paygate running, and may this device publish to its gw/req topic?)")
		return
	}
	r.ok(name, fmt.Sprintf("round trip in %s; merchant keys are at paygate", time.Since(start).Round(time.Millisecond)))
}
