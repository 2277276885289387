package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/internal/testrig"
)

func TestFleet(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix := mqtttest.Unique("fs")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-broker", url, "-prefix", prefix, "-devices", "20", "-online", "5", "-versions", "1.0,2.0"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "ready\n") {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	sub := mqtttest.Subscribe(t, url, prefix+"/+/status")
	online, versions := 0, map[string]int{}
	for i := 0; i < 20; i++ {
		m := sub.Next(t, "", 5*time.Second)
		var s contract.Status
		if err := json.Unmarshal(m.Payload, &s); err != nil || !m.Retained {
			t.Fatalf("status %s %s retained=%v: %v", m.Topic, m.Payload, m.Retained, err)
		}
		if s.Online {
			online++
			versions[s.Version]++
		}
	}
	if online != 5 || versions["1.0"] != 3 || versions["2.0"] != 2 {
		t.Fatalf("online %d, versions %v", online, versions)
	}

	// An online device answers a create like kioskpayd; an offline one
	// does not.
	replies := mqtttest.Subscribe(t, url, prefix+"/+/pay/reply")
	create := `{"request_id":"r1","provider":"wxpay","data":{"out_trade_no":"fs_000001","total_fee":100,"subject":"x","type":"t"}}`
	mqtttest.Publish(t, url, prefix+"/sim-000001/pay/create", []byte(create), false)
	m := replies.Next(t, prefix+"/sim-000001/pay/reply", 5*time.Second)
	var r contract.CreateReply
	if err := json.Unmarshal(m.Payload, &r); err != nil || r.Code != 0 || r.OrderInfo.CodeURL == "" || r.OutTradeNo != "fs_000001" {
		t.Fatalf("create reply %s", m.Payload)
	}
	mqtttest.Publish(t, url, prefix+"/sim-000001/pay/create", []byte(`{"request_id":"r2","data":{}}`), false)
	if m := replies.Next(t, prefix+"/sim-000001/pay/reply", 5*time.Second); !strings.Contains(string(m.Payload), `"error":"INVALID_ARGUMENT"`) {
		t.Fatalf("bad create answered %s", m.Payload)
	}
	mqtttest.Publish(t, url, prefix+"/sim-000010/pay/create", []byte(create), false)
	replies.None(t, prefix+"/sim-000010/pay/reply", 300*time.Millisecond)

	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	// Stopping deletes what it published: a new subscriber gets nothing.
	late := mqtttest.Subscribe(t, url, prefix+"/+/status")
	late.None(t, "", 300*time.Millisecond)
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-online", "5", "-devices", "2"},
		{"-broker", "tcp://a:1,ssl://b:2"},
		{"-id-format", "sim"},
		{"stray"},
	} {
		var stderr syncbuf.Buffer
		if code := run(context.Background(), args, new(syncbuf.Buffer), &stderr); code != 2 || !strings.Contains(stderr.String(), "fleetsim -h") {
			t.Errorf("run(%q) = %d, %q; want a usage error", args, code, stderr.String())
		}
	}
}

// SIGKILLed, the process leaves the connected devices to their Last Wills:
// the broker marks them offline.
func TestKillLeavesLastWills(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the fleetsim binary; run without -short")
	}
	url := mqtttest.Broker(t)
	prefix := mqtttest.Unique("fs")
	bin := filepath.Join(t.TempDir(), "fleetsim")
	if err := testrig.Build(context.Background(), "./cmd/fleetsim", bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-broker", url, "-prefix", prefix, "-devices", "3", "-online", "3")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("fleetsim said %q, %v", line, err)
	}
	sub := mqtttest.Subscribe(t, url, prefix+"/+/status")
	for i := 0; i < 3; i++ {
		sub.Until(t, "", 5*time.Second, mqtttest.Contains(`"online":true`))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	offline := map[string]bool{}
	for len(offline) < 3 {
		m := sub.Until(t, "", 10*time.Second, mqtttest.Equals(string(contract.OfflineStatus())))
		offline[m.Topic] = true
	}
	// Clear what the Wills left behind on a shared broker.
	for topic := range offline {
		mqtttest.Publish(t, url, topic, nil, true)
	}
}
