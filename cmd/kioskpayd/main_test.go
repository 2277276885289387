package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/logging"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/store"
)

// env is a daemon configuration pointing at a test broker and a paysim.
type env struct {
	path      string
	dir       string
	brokerURL string
	sim       *testrig.Sim
	prefix    string
}

// newEnv writes paysim's key files and a daemon config that uses the test
// broker, a unique device id and a system-chosen web port.
func newEnv(t *testing.T) *env {
	t.Helper()
	sim, err := testrig.StartSim(simkeys.Get(t), testrig.SimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	dir := t.TempDir()
	base, err := sim.DaemonFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{path: filepath.Join(dir, "kioskpayd.toml"), dir: dir, brokerURL: mqtttest.Broker(t), sim: sim}
	dev := mqtttest.Unique("dev")
	e.prefix = "kiosk/" + dev
	if err := testrig.WriteConfig(e.path, base, map[string]any{
		"device_id":          dev,
		"mqtt.url":           e.brokerURL,
		"display.web_listen": "127.0.0.1:0",
		"display.locale":     "en",
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// edit replaces text in the config: for values WriteConfig cannot write,
// such as the broken ones whose error messages the tests check.
func (e *env) edit(t *testing.T, old, new string) {
	t.Helper()
	if err := testrig.EditConfig(e.path, old, new); err != nil {
		t.Fatal(err)
	}
}

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-version"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if out.String() != "kioskpayd dev\n" {
		t.Fatalf("output %q", out.String())
	}
}

// TestHelp: -h of the daemon and of doctor is a description, the usage
// and the exit codes on stdout, exit 0; stray words are refused with 2.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"-h"}, 0, "kioskpayd is the kioskpay payment daemon", ""},
		{[]string{"-help"}, 0, "Exit codes: 0 clean stop", ""},
		{[]string{"doctor", "-h"}, 0, "kioskpayd doctor checks a device's set-up", ""},
		{[]string{"doctor", "-help"}, 0, "Exit codes: 0 every check passed", ""},
		{[]string{"start"}, 2, "", `unexpected argument "start"`},
		{[]string{"-demo", "now"}, 2, "", `unexpected argument "now"`},
		{[]string{"doctor", "-config", "x", "now"}, 2, "", `unexpected argument "now"`},
		{[]string{"doctor"}, 2, "", "Run 'kioskpayd doctor -h' for usage."},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, nil, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.errs) {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q", tc.args, code, stdout.String(), stderr.String())
		}
	}
}

func TestBadConfigExits2(t *testing.T) {
	tests := []struct {
		name string
		prep func(t *testing.T, e *env) []string
		want string // stderr must contain it
	}{
		{"no -config", func(t *testing.T, e *env) []string { return nil }, "-config FILE is required"},
		{"unknown flag", func(t *testing.T, e *env) []string { return []string{"-bogus"} }, "bogus"},
		{"missing file", func(t *testing.T, e *env) []string { return []string{"-config", filepath.Join(e.dir, "nope.toml")} }, "nope.toml"},
		{"bad value", func(t *testing.T, e *env) []string {
			e.edit(t, `expire = "5m"`, `expire = "3h"`)
			return []string{"-config", e.path}
		}, "payment.expire"},
		{"unknown key", func(t *testing.T, e *env) []string {
			e.edit(t, `poll = "2s"`, "poll = \"2s\"\npol = \"1s\"")
			return []string{"-config", e.path}
		}, "payment.pol: unknown key"},
		{"world-readable key file", func(t *testing.T, e *env) []string {
			os.Chmod(filepath.Join(e.dir, "wxpay_apiclient_key.pem"), 0o644)
			return []string{"-config", e.path}
		}, "wxpay_apiclient_key.pem"},
		{"key file not a key", func(t *testing.T, e *env) []string {
			os.WriteFile(filepath.Join(e.dir, "alipay_public_key.pem"), []byte("hello"), 0o600)
			return []string{"-config", e.path}
		}, "merchants.default.alipay.alipay_public_key_file"},
		{"bad log level", func(t *testing.T, e *env) []string { return []string{"-log-level", "loud", "-config", e.path} }, "-log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.prep(t, e), nil, &out, &errOut)
			if code != exitBadConfig {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("stderr does not mention %q:\n%s", tt.want, errOut.String())
			}
		})
	}
}

func TestLockedStoreExits1(t *testing.T) {
	e := newEnv(t)
	db, err := store.Open(filepath.Join(e.dir, "state", "orders.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-config", e.path}, nil, &out, &errOut)
	if code != exitFatal {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "another process holds the database lock") {
		t.Fatalf("stderr:\n%s", errOut.String())
	}
}

// start runs the daemon in-process and returns a stop function that
// cancels it (as SIGTERM does) and returns the exit code.
func start(t *testing.T, args []string) (stop func() int, stderr *syncbuf.Buffer) {
	t.Helper()
	stderr = &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, nil, io.Discard, stderr) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("daemon did not stop; stderr:\n%s", stderr.String())
			}
		})
		return code
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", stderr.String())
		}
	})
	return stop, stderr
}

func TestCleanStopPublishesOffline(t *testing.T) {
	e := newEnv(t)
	status := e.prefix + "/status"
	sub := mqtttest.Subscribe(t, e.brokerURL, status)
	stop, stderr := start(t, []string{"-config", e.path})
	m := sub.Next(t, status, 15*time.Second)
	var st map[string]any
	if err := json.Unmarshal(m.Payload, &st); err != nil || st["online"] != true || st["clock_synced"] != true {
		t.Fatalf("status %s (%v)", m.Payload, err)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr.String())
	}
	late := mqtttest.Subscribe(t, e.brokerURL, status)
	if m := late.Next(t, status, 5*time.Second); string(m.Payload) != `{"online":false}` || !m.Retained {
		t.Fatalf("retained status after stop: %s (retained %v)", m.Payload, m.Retained)
	}
	// Logs are JSON lines when stderr is not a terminal, and carry no secret.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("log line is not JSON: %q", line)
		}
	}
	if strings.Contains(stderr.String(), simkeys.Get(t).WxAPIv3Key) || strings.Contains(stderr.String(), "PRIVATE KEY") {
		t.Fatal("logs contain key material")
	}
}

// The full path over MQTT: create → reply with a QR → the simulator's
// buyer pays → a paid result.
func TestDaemonCreatePay(t *testing.T) {
	e := newEnv(t)
	sub := mqtttest.Subscribe(t, e.brokerURL, e.prefix+"/#")
	start(t, []string{"-config", e.path})
	sub.Next(t, e.prefix+"/status", 15*time.Second)
	createAndPay(t, e.brokerURL, e.prefix, e.sim.URL, sub, "wxpay", "daemon_0001")
}

func createAndPay(t *testing.T, brokerURL, prefix, simURL string, sub *mqtttest.Subscriber, provider, no string) {
	t.Helper()
	req := `{"request_id":"r-1","provider":"` + provider + `","data":{"out_trade_no":"` + no + `","total_fee":1000,"subject":"Massage 15 min","type":"massage_15"}}`
	t0 := time.Now()
	mqtttest.Publish(t, brokerURL, prefix+"/pay/create", []byte(req), false)
	var reply struct {
		RequestID   string            `json:"request_id"`
		Code        int               `json:"code"`
		Msg         string            `json:"msg"`
		OrderInfo   map[string]string `json:"orderInfo"`
		QRCodeImage string            `json:"qrcodeImage"`
	}
	m := sub.Next(t, prefix+"/pay/reply", 20*time.Second)
	if err := json.Unmarshal(m.Payload, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.Code != 0 || reply.RequestID != "r-1" || !strings.HasPrefix(reply.QRCodeImage, "data:image/png;base64,") {
		t.Fatalf("reply %s", m.Payload)
	}
	t.Logf("create → reply with QR: %s", time.Since(t0))
	t1 := time.Now()
	resp, err := http.Post(simURL+"/_sim/pay", "application/json", strings.NewReader(`{"provider":"`+provider+`","out_trade_no":"`+no+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("sim pay: %d %s", resp.StatusCode, body)
	}
	var result struct {
		OutTradeNo string `json:"out_trade_no"`
		Status     string `json:"status"`
		TotalFee   int64  `json:"total_fee"`
	}
	m = sub.Next(t, prefix+"/pay/result", 20*time.Second)
	if err := json.Unmarshal(m.Payload, &result); err != nil {
		t.Fatal(err)
	}
	if result.OutTradeNo != no || result.Status != "paid" || result.TotalFee != 1000 {
		t.Fatalf("result %s", m.Payload)
	}
	t.Logf("buyer pays → paid result (polling, no notify relay): %s", time.Since(t1))
}

func TestDemo(t *testing.T) {
	for _, backend := range []config.Backend{config.BackendLocal, config.BackendGateway} {
		t.Run(string(backend), func(t *testing.T) { testDemo(t, backend) })
	}
}

// testDemo runs the demo with payment.backend = backend, places and pays an
// order the way its instructions say, and stops it.
func testDemo(t *testing.T, backend config.Backend) {
	ready := make(chan demoEnv, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runDemoWith(ctx, nil, &out, &errOut, logging.New(&errOut, slog.LevelInfo), &demoHooks{backend: backend, ready: func(e demoEnv) { ready <- e }})
	}()
	var e demoEnv
	select {
	case e = <-ready:
	case code := <-done:
		t.Fatalf("demo exited %d:\n%s", code, errOut.String())
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not become ready")
	}
	for _, want := range []string{e.BrokerURL, e.SimURL, e.WebURL, "mosquitto_pub", "mosquitto_sub", "/_sim/pay", "go run ./cmd/kioskctl"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("instructions lack %q:\n%s", want, out.String())
		}
	}
	if e.Gateway != (backend == config.BackendGateway) || e.Gateway && !strings.Contains(out.String(), "-out-trade-no "+e.OTNPrefix) {
		t.Errorf("%s demo: env %+v, instructions:\n%s", backend, e, out.String())
	}
	sub := mqtttest.Subscribe(t, e.BrokerURL, e.Prefix+"/#")
	createAndPay(t, e.BrokerURL, e.Prefix, e.SimURL, sub, "alipay", e.OTNPrefix+"demo_0001")

	// The web display serves the current screen.
	resp, err := http.Get(e.WebURL + "state")
	if err != nil {
		t.Fatal(err)
	}
	state, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(state, []byte("demo_0001")) {
		t.Errorf("web /state: %d %s", resp.StatusCode, state)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("demo exited %d:\n%s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("demo did not stop; its goroutines:\n%s", buf[:runtime.Stack(buf, true)])
	}
	if _, err := os.Stat(e.Dir); !os.IsNotExist(err) {
		t.Errorf("demo directory %s not removed: %v", e.Dir, err)
	}
}
