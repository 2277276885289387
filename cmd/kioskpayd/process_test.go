package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/testrig"
)

// TestMain lets a test run this binary as the real daemon: with
// KIOSKPAYD_TEST_MAIN=1 the test binary is kioskpayd, signals and all.
func TestMain(m *testing.M) {
	if os.Getenv("KIOSKPAYD_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// daemonProcess starts this test binary as the real daemon with args.
func daemonProcess(t *testing.T, dir string, args ...string) *testrig.Daemon {
	t.Helper()
	d := &testrig.Daemon{Bin: os.Args[0], Args: args, Env: []string{"KIOSKPAYD_TEST_MAIN=1"}, Log: filepath.Join(dir, "daemon.log")}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill() })
	return d
}

// A real process: SIGTERM and SIGINT stop it cleanly with exit 0 and leave
// the offline status retained; a second daemon on the same state dir exits 1.
func TestSignalsStopCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t)
			status := e.prefix + "/status"
			sub := mqtttest.Subscribe(t, e.brokerURL, status)
			d := daemonProcess(t, t.TempDir(), "-config", e.path)
			if m := sub.Next(t, status, 20*time.Second); !bytes.Contains(m.Payload, []byte(`"online":true`)) {
				t.Fatalf("status %s", m.Payload)
			}

			second := daemonProcess(t, t.TempDir(), "-config", e.path)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if code, err := second.Wait(ctx); code != exitFatal {
				t.Fatalf("second daemon exit %d (%v), want 1:\n%s", code, err, second.LogText())
			}

			if code, err := d.Signal(sig, 30*time.Second); code != exitOK {
				t.Fatalf("exit %d (%v) after %s, want 0:\n%s", code, err, sig, d.LogText())
			}
			// Online updates may still be queued; the last word is offline.
			for {
				m := sub.Next(t, status, 5*time.Second)
				if string(m.Payload) == `{"online":false}` {
					break
				}
				if !bytes.Contains(m.Payload, []byte(`"online":true`)) {
					t.Fatalf("status after %s: %s", sig, m.Payload)
				}
			}
		})
	}
}

// Orders survive a restart: a payment made while the daemon was down is
// found after it comes back, and a command sent meanwhile is answered.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	sub := mqtttest.Subscribe(t, e.brokerURL, e.prefix+"/#")
	stop, stderr := start(t, []string{"-config", e.path})
	sub.Next(t, e.prefix+"/status", 15*time.Second)
	mqtttest.Publish(t, e.brokerURL, e.prefix+"/pay/create", []byte(`{"request_id":"c1","provider":"wxpay","data":{"out_trade_no":"resume_0001","total_fee":500,"subject":"Wash","type":"wash"}}`), false)
	if m := sub.Next(t, e.prefix+"/pay/reply", 20*time.Second); !bytes.Contains(m.Payload, []byte(`"code":0`)) {
		t.Fatalf("reply %s", m.Payload)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}

	resp, err := http.Post(e.sim.URL+"/_sim/pay", "application/json", strings.NewReader(`{"provider":"wxpay","out_trade_no":"resume_0001"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("sim pay: %v %v", resp, err)
	}
	resp.Body.Close()
	mqtttest.Publish(t, e.brokerURL, e.prefix+"/pay/query", []byte(`{"request_id":"q-while-down","out_trade_no":"resume_0001"}`), false)

	start(t, []string{"-config", e.path})
	var gotResult, gotQueryReply bool
	deadline := time.After(30 * time.Second)
	for !gotResult || !gotQueryReply {
		select {
		case m := <-sub.C:
			var v map[string]any
			json.Unmarshal(m.Payload, &v)
			switch m.Topic {
			case e.prefix + "/pay/result":
				if v["out_trade_no"] == "resume_0001" && v["status"] == "paid" {
					gotResult = true
				}
			case e.prefix + "/pay/reply":
				if v["request_id"] == "q-while-down" {
					gotQueryReply = true
				}
			}
		case <-deadline:
			t.Fatalf("after restart: result %v, reply to the queued query %v", gotResult, gotQueryReply)
		}
	}
}
