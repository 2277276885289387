package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/device/fleetsim"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
)

// testBroker returns a broker URL and a topic prefix unique to the test: a
// real broker when KIOSKPAY_TEST_MQTT_URL is set, else an in-process mochi.
func testBroker(t *testing.T) (url, prefix string) {
	t.Helper()
	prefix = "kt" + randomHex(4)
	return mqtttest.Broker(t), prefix
}

// testClient connects a plain paho client for the test's own publishing
// and subscribing.
func testClient(t *testing.T, url, id string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(id + "-" + randomHex(3)).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t *testing.T, c mqtt.Client, topic string, retained bool, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// newFakeDevice connects a simulated device (fleetsim: the daemon's own
// decoders and wire types, orders in memory) reporting version 1.2.3.
func newFakeDevice(t *testing.T, url, prefix, id string) *fleetsim.Device {
	t.Helper()
	// paho calls back on goroutines of its own: nothing is logged once the
	// test is over (cleanups run last-in first-out, so after d.Close).
	var mu sync.Mutex
	over := false
	t.Cleanup(func() { mu.Lock(); over = true; mu.Unlock() })
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !over {
			t.Logf(format, args...)
		}
	}
	d, err := fleetsim.Connect(testCtx(t), fleetsim.Conn{Brokers: []string{url}, Logf: logf},
		fleetsim.DeviceOptions{ID: id, Prefix: prefix, Version: "1.2.3", StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// runResult is what one kioskctl invocation produced.
type runResult struct {
	code           int
	stdout, stderr string
}

// kioskctl runs the CLI in-process with args and env.
func kioskctl(ctx context.Context, env map[string]string, args ...string) runResult {
	var out, errb syncbuf.Buffer
	m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	code := m.Run(ctx, args)
	return runResult{code, out.String(), errb.String()}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func contains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, s)
		}
	}
}
