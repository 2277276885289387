package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
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

func daemonProcess(t *testing.T, args ...string) (*exec.Cmd, *syncbuf.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "KIOSKPAYD_TEST_MAIN=1")
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &stderr
}

func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatal("process did not exit")
		return -1
	}
}

// A real process: SIGTERM and SIGINT stop it cleanly with exit 0 and leave
// the offline status retained; a second daemon on the same state dir exits 1.
func TestSignalsStopCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t)
			status := e.prefix + "/status"
			sub := mqtttest.Subscribe(t, e.brokerURL, status)
			cmd, stderr := daemonProcess(t, "-config", e.path)
			if m := sub.Next(t, status, 20*time.Second); !bytes.Contains(m.Payload, []byte(`"online":true`)) {
				t.Fatalf("status %s", m.Payload)
			}

			second, secondErr := daemonProcess(t, "-config", e.path)
			if code := exitCode(t, second); code != exitFatal {
				t.Fatalf("second daemon exit %d, want 1:\n%s", code, secondErr.String())
			}

			cmd.Process.Signal(sig)
			if code := exitCode(t, cmd); code != exitOK {
				t.Fatalf("exit %d after %s, want 0:\n%s", code, sig, stderr.String())
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

	resp, err := http.Post(e.simURL+"/_sim/pay", "application/json", strings.NewReader(`{"provider":"wxpay","out_trade_no":"resume_0001"}`))
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
