package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/qrtest"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// The suite's fixture: every mechanism (simulator, processes, controller,
// configs, binaries) is internal/testrig's; what is here binds it to a
// *testing.T and holds the suite's defaults.

// Shared by every test: the binaries under test, built once, and one set
// of simulator keys (RSA generation is slow).
var (
	binDir string
	keys   *paysim.Keys
	// keySecrets are the daemon-side secrets of keys: no log line may
	// contain any of them.
	keySecrets []string
	// gatewayMode runs every daemon with payment.backend = "gateway"
	// (KIOSKPAY_E2E_BACKEND=gateway): the merchant keys are with a paygate
	// process per test, the device holds none, and order numbers carry
	// the device's prefix, otnPrefix.
	gatewayMode bool
	otnPrefix   string
)

// EnvBackend selects the daemons' payment.backend: "local" (default) or
// "gateway".
const EnvBackend = "KIOSKPAY_E2E_BACKEND"

// topicPrefix is the devices' mqtt.topic_prefix, as in the config paysim
// writes.
const topicPrefix = "kiosk"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kioskpay-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	switch b := os.Getenv(EnvBackend); b {
	case "", "local":
	case "gateway":
		gatewayMode, otnPrefix = true, paysim.SimPrefix
		// Each test's paygate subscribes to every device's requests: on
		// a broker shared by the tests it would answer other tests'
		// devices. A broker per test, then.
		os.Unsetenv(mqtttest.EnvURL)
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want local or gateway\n", EnvBackend, b)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := testrig.BuildAll(ctx, dir, []string{"./cmd/kioskpayd", "./cmd/notifyrelay", "./cmd/kioskctl", "./cmd/paysim", "./cmd/kioskbench", "./cmd/fleetsim", "./cmd/paygate"}, "CGO_ENABLED=0"); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n", err)
		return 1
	}
	if keys, err = paysim.GenerateKeys(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keySecrets = testrig.KeySecrets(keys)
	return m.Run()
}

// ---- the test controller ----

// newController connects a recording controller for device (and no other:
// the broker may be shared by the tests); persistent keeps its session
// over broker restarts.
func newController(t *testing.T, brokerURL, device string, persistent bool, username, password string) *testrig.Controller {
	t.Helper()
	ctl := testrig.NewController(topicPrefix)
	ctl.Device, ctl.Record, ctl.CleanSession = device, true, !persistent
	ctl.Username, ctl.Password = username, password
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ctl.Connect(ctx, brokerURL, mqtttest.Unique("ctl-")); err != nil {
		t.Fatalf("controller connect %s: %v", brokerURL, err)
	}
	t.Cleanup(ctl.Close)
	return ctl
}

// waitFor returns the first message ctl recorded (since it connected)
// that matches, waiting up to d for it.
func waitFor(t testing.TB, ctl *testrig.Controller, d time.Duration, what string, match func(testrig.Message) bool) testrig.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := ctl.WaitMessage(ctx, what, match)
	if err != nil {
		t.Fatalf("within %s: %v", d, err)
	}
	return m
}

// send publishes a command (JSON-encoded, or raw bytes) to the device's
// suffix topic and waits for the PUBACK.
func (e *env) send(suffix string, payload any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.ctl.Publish(ctx, e.dev, suffix, payload); err != nil {
		e.t.Fatalf("publish %s: %v", suffix, err)
	}
}

func (e *env) waitFor(d time.Duration, what string, match func(testrig.Message) bool) testrig.Message {
	e.t.Helper()
	return waitFor(e.t, e.ctl, d, what, match)
}

// find returns every message so far that matches.
func (e *env) find(match func(testrig.Message) bool) []testrig.Message {
	return e.ctl.Messages(match)
}

// reply waits for the reply to request rid.
func (e *env) reply(rid string) testrig.Message {
	e.t.Helper()
	return e.waitFor(20*time.Second, "reply to "+rid, testrig.IsReply(rid))
}

// replies returns every reply to rid seen so far.
func (e *env) replies(rid string) []testrig.Message { return e.find(testrig.IsReply(rid)) }

func (e *env) result(otn, status string, d time.Duration) testrig.Message {
	e.t.Helper()
	return e.waitFor(d, status+" result of "+otn, testrig.IsResult(otn, status))
}

func (e *env) results(otn string) []testrig.Message { return e.find(testrig.IsResult(otn, "")) }

func (e *env) event(otn, to string, d time.Duration) testrig.Message {
	e.t.Helper()
	return e.waitFor(d, "event "+otn+" → "+to, testrig.IsEvent(otn, to))
}

// none fails if a message matching arrives within d.
func (e *env) none(d time.Duration, what string, match func(testrig.Message) bool) {
	e.t.Helper()
	time.Sleep(d) // a bounded observation window, not synchronisation
	if got := e.find(match); len(got) > 0 {
		e.t.Fatalf("unexpected %s: %s", what, got[0].Payload)
	}
}

// checkSeqs asserts the contract's result rules for one order
// (testrig.CheckSeqs).
func (e *env) checkSeqs(otn string) {
	e.t.Helper()
	if err := testrig.CheckSeqs(e.results(otn)); err != nil {
		e.t.Fatal(err)
	}
}

// ---- signatures, as a controller computes them (docs/contract.md §3.5) ----

func hmacHex(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(m.Sum(nil))
}

// verifyResult is the controller's check before unlocking.
func verifyResult(key []byte, r testrig.Message) bool {
	want := hmacHex(key, r.Str("out_trade_no"), r.Str("status"),
		strconv.FormatInt(int64(r.Num("total_fee")), 10), strconv.FormatInt(int64(r.Num("seq")), 10),
		strconv.FormatInt(int64(r.Num("ts")), 10))
	return hmac.Equal([]byte(want), []byte(r.Str("sig")))
}

// ---- the daemon under test ----

// daemonOpts are the config values a test changes; zero values keep the
// suite's defaults.
type daemonOpts struct {
	provider   string // payment.provider (default "any")
	expire     string // payment.expire (default "5m")
	poll       string // payment.poll (default "300ms")
	maxFee     int
	notifyURL  string
	ackTimeout string // unlock.ack_timeout (default "30s")
	onNoAck    string
	resultKey  bool // write a result_key_file
	signed     bool // require_signed_requests
	catalog    map[string]int
	brokerURL  string // default: a fresh broker for the test
	username   string
	password   string // written to mqtt.password_file
	persistent bool   // the controller keeps its session (broker restarts)
	web        bool   // also serve the web display (env.webAddr)
	// realism adjusts paysim's realistic behaviour (default: paysim's).
	realism func(*paysim.Realism)
	// retry is the daemon's stuck bound, "<attempts>/<slow>" (see
	// device.EnvTestRetry); "" keeps the production default.
	retry string
}

// env is one device under test: a paysim, a broker, the daemon's config
// and state dir, the daemon process and a controller on the device's
// topics.
type env struct {
	t         *testing.T
	sim       *testrig.Sim
	brokerURL string
	dir       string
	cfgPath   string
	// base is the daemon config paysim writes (its gateway shape in
	// gateway mode) and conf the overrides cfgPath was written with.
	base    []byte
	conf    map[string]any
	dev     string
	key     []byte // result HMAC key, when configured
	webAddr string // the web display's host:port, with daemonOpts.web
	ctl     *testrig.Controller
	d       *testrig.Daemon
	gate    *testrig.Daemon // paygate, in gateway mode
}

func newEnv(t *testing.T, o daemonOpts) *env {
	t.Helper()
	sim, err := testrig.StartSim(keys, testrig.SimOptions{
		NotifyRetry: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond, time.Second},
		TimeoutHold: 5 * time.Second,
		Realism:     o.realism,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)

	e := &env{t: t, sim: sim, brokerURL: o.brokerURL, dir: t.TempDir()}
	if e.brokerURL == "" {
		e.brokerURL = mqtttest.Broker(t)
	}
	e.dev = mqtttest.Unique("e2e")
	var secrets []string
	if gatewayMode {
		e.base = e.startPaygate(o)
	} else if e.base, err = sim.DaemonFiles(filepath.Join(e.dir, "keys")); err != nil {
		t.Fatal(err)
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&o.provider, "any")
	def(&o.expire, "5m")
	def(&o.poll, "300ms")
	def(&o.ackTimeout, "30s")
	def(&o.onNoAck, "refund")
	if o.maxFee == 0 {
		o.maxFee = 100000
	}
	e.conf = map[string]any{
		"device_id":          e.dev,
		"state_dir":          filepath.Join(e.dir, "state"),
		"mqtt.url":           e.brokerURL,
		"mqtt.topic_prefix":  topicPrefix,
		"payment.provider":   o.provider,
		"payment.expire":     o.expire,
		"payment.max_fee":    o.maxFee,
		"payment.poll":       o.poll,
		"unlock.ack_timeout": o.ackTimeout,
		"unlock.on_no_ack":   o.onNoAck,
		"display.outputs":    []string{"png"},
		"display.png_path":   filepath.Join(e.dir, "qr.png"),
		"display.web_listen": nil,
		"display.locale":     "en",
	}
	if o.password != "" {
		pw := filepath.Join(e.dir, "mqtt_password")
		writeSecret(t, pw, o.password+"\n")
		e.conf["mqtt.username"], e.conf["mqtt.password_file"] = o.username, pw
		secrets = append(secrets, o.password)
	}
	if o.resultKey || o.signed {
		e.key = []byte(testrig.RandomHex(32))
		kf := filepath.Join(e.dir, "result_key")
		writeSecret(t, kf, string(e.key)+"\n")
		e.conf["unlock.result_key_file"], e.conf["unlock.require_signed_requests"] = kf, o.signed
		secrets = append(secrets, string(e.key))
	}
	if len(o.catalog) > 0 {
		e.conf["catalog"] = o.catalog
	}
	if o.notifyURL != "" {
		e.conf["payment.notify_url"] = o.notifyURL
	}
	if o.web {
		e.webAddr = freeAddr(t)
		e.conf["display.outputs"], e.conf["display.web_listen"] = []string{"png", "web"}, e.webAddr
	}
	e.cfgPath = filepath.Join(e.dir, "kioskpayd.toml")
	e.writeConfig(e.cfgPath, nil)
	e.ctl = newController(t, e.brokerURL, e.dev, o.persistent, o.username, o.password)
	// Debug level: the secret check then covers everything the daemon can
	// log.
	e.d = newProcess(t, "kioskpayd", secrets, "-config", e.cfgPath, "-log-level", "debug")
	if o.retry != "" {
		e.d.Env = append(e.d.Env, device.EnvTestRetry+"="+o.retry)
	}
	e.start()
	return e
}

// writeConfig writes a daemon config to path: the test's, with extra
// overrides on top.
func (e *env) writeConfig(path string, extra map[string]any) {
	e.t.Helper()
	o := make(map[string]any, len(e.conf)+len(extra))
	for k, v := range e.conf {
		o[k] = v
	}
	for k, v := range extra {
		o[k] = v
	}
	if err := testrig.WriteConfig(path, e.base, o); err != nil {
		e.t.Fatal(err)
	}
}

// startPaygate writes paysim's gateway files into a directory of
// paygate's own, starts paygate there with the merchant keys and a policy
// for the test's device, and returns the daemon's base config: one with
// payment.backend = "gateway" that names no merchant key file.
func (e *env) startPaygate(o daemonOpts) []byte {
	t := e.t
	t.Helper()
	gwDir := filepath.Join(e.dir, "paygate")
	if _, err := e.sim.DaemonFiles(gwDir); err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(filepath.Join(gwDir, "paygate.toml"))
	if err != nil {
		t.Fatal(err)
	}
	notify := freeAddr(t)
	conf := map[string]any{
		"mqtt.url":          e.brokerURL,
		"mqtt.topic_prefix": topicPrefix,
		"notify.listen":     notify,
		"notify.public_url": "http://" + notify,
		// The test's device in place of sim-1, with sim-1's configured
		// prefix: its order numbers start with otnPrefix.
		"policy.devices": map[string]any{e.dev: map[string]any{"prefix": strings.Trim(paysim.SimPrefix, "_")}},
	}
	var secrets []string
	if o.password != "" {
		pw := filepath.Join(gwDir, "mqtt_password")
		writeSecret(t, pw, o.password+"\n")
		conf["mqtt.username"], conf["mqtt.password_file"] = o.username, pw
		secrets = append(secrets, o.password)
	}
	cfg := filepath.Join(gwDir, "paygate.toml")
	if err := testrig.WriteConfig(cfg, base, conf); err != nil {
		t.Fatal(err)
	}
	e.gate = newProcess(t, "paygate", secrets, "-config", cfg, "-log-level", "debug")
	start(t, e.gate, `"paygate subscribed"`)
	d, err := os.ReadFile(filepath.Join(gwDir, "kioskpayd-gateway.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func writeSecret(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// createReq is a create request in the seed's shape.
func createReq(rid, otn string, fee int, provider string, extra map[string]any) map[string]any {
	data := map[string]any{
		"out_trade_no": otn, "total_fee": fee, "subject": "Massage 15 min",
		"type": "massage_15", "custom": map[string]any{"seat": 3, "note": "e2e"},
	}
	for k, v := range extra {
		data[k] = v
	}
	r := map[string]any{"request_id": rid, "needQRcode": true, "data": data}
	if provider != "" {
		r["provider"] = provider
	}
	return r
}

// create sends a create and returns its successful reply.
func (e *env) create(rid, otn string, fee int, provider string) testrig.Message {
	e.t.Helper()
	e.send("pay/create", createReq(rid, otn, fee, provider, nil))
	r := e.reply(rid)
	if r.Num("code") != 0 {
		e.t.Fatalf("create %s refused: %s", otn, r.Payload)
	}
	return r
}

func (e *env) ack(otn string, ok bool) {
	e.t.Helper()
	m := map[string]any{"request_id": "ack-" + otn + "-" + testrig.RandomHex(3), "out_trade_no": otn, "ok": ok}
	if !ok {
		m["reason"] = "motor jammed"
	}
	if e.key != nil {
		ts := time.Now().Unix()
		a := "0"
		if ok {
			a = "1"
		}
		m["ts"], m["sig"] = ts, hmacHex(e.key, otn, a, "unlock/ack", strconv.FormatInt(ts, 10))
	}
	e.send("unlock/ack", m)
	if r := e.reply(m["request_id"].(string)); r.Num("code") != 0 {
		e.t.Fatalf("ack refused: %s", r.Payload)
	}
}

func (e *env) pay(p payment.ProviderName, otn string, amount payment.Fen) {
	e.t.Helper()
	if err := e.sim.Pay(p, otn, amount); err != nil {
		e.t.Fatalf("sim pay %s %s: %v", p, otn, err)
	}
}

// simOrder returns paysim's view of an order.
func (e *env) simOrder(p payment.ProviderName, otn string) paysim.OrderInfo {
	o, _ := e.sim.Order(p, otn)
	return o
}

// waitSim waits until paysim's order satisfies cond. WeChat refunds stay
// PROCESSING until completed, as at the real provider; completeRefunds
// does that.
func (e *env) waitSim(p payment.ProviderName, otn, what string, d time.Duration, completeRefunds bool, cond func(paysim.OrderInfo) bool) paysim.OrderInfo {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	o, err := e.sim.WaitOrder(ctx, p, otn, completeRefunds, cond)
	if err != nil {
		e.t.Fatalf("%s did not happen within %s: %v\ncontroller saw:\n%s", what, d, err, e.ctl.Dump())
	}
	return o
}

// healthy proves the daemon still takes and answers orders.
func (e *env) healthy(p payment.ProviderName) {
	e.t.Helper()
	otn := otnPrefix + "health_" + testrig.RandomHex(4)
	e.create("health-"+testrig.RandomHex(4), otn, 100, string(p))
	e.pay(p, otn, 0)
	e.result(otn, "paid", 20*time.Second)
	e.ack(otn, true)
	e.event(otn, "delivered", 10*time.Second)
}

// ---- processes ----

// newProcess describes the built binary name, run with args and its log
// in the test's directory. At cleanup it is killed and its whole log, over
// every run, checked: no secret (keySecrets and secrets) and no panic.
func newProcess(t *testing.T, name string, secrets []string, args ...string) *testrig.Daemon {
	t.Helper()
	p := &testrig.Daemon{Bin: filepath.Join(binDir, name), Args: args, Log: filepath.Join(t.TempDir(), name+".log")}
	secrets = withKeySecrets(secrets)
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		log := p.LogText()
		if err := testrig.CheckLog(log, secrets); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if t.Failed() {
			if len(log) > 20000 {
				log = "…" + log[len(log)-20000:]
			}
			t.Logf("%s log:\n%s", name, log)
		}
	})
	return p
}

// withKeySecrets returns keySecrets and secrets: what a process of the
// test must not log.
func withKeySecrets(secrets []string) []string {
	return append(append([]string(nil), keySecrets...), secrets...)
}

// start runs p and waits until its log contains ready.
func start(t *testing.T, p *testrig.Daemon, ready string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.StartReady(ctx, ready); err != nil {
		t.Fatal(err)
	}
}

// start starts the daemon (again) on its state dir.
func (e *env) start() {
	e.t.Helper()
	start(e.t, e.d, `"kioskpayd ready"`)
}

// kill is a power cut: SIGKILL, nothing flushed.
func (e *env) kill() {
	e.t.Helper()
	if err := e.d.Kill(); err != nil {
		e.t.Fatal(err)
	}
}

// stop is a clean stop; it fails the test unless the exit code is 0.
func (e *env) stop() {
	e.t.Helper()
	if code, err := e.d.Stop(30 * time.Second); err != nil || code != 0 {
		e.t.Errorf("kioskpayd exit %d after SIGTERM (%v):\n%s", code, err, e.d.LogText())
	}
}

// decodeQR decodes a PNG with zbarimg, the independent reader; "" when it
// finds no code.
func decodeQR(t *testing.T, png []byte) string {
	t.Helper()
	return strings.Join(qrtest.DecodePNG(t, png), "\n")
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := testrig.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func dataURLPNG(t *testing.T, u string) []byte {
	t.Helper()
	const prefix = "data:image/png;base64,"
	if !strings.HasPrefix(u, prefix) {
		t.Fatalf("qrcodeImage %.40q is not a PNG data URL", u)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(u, prefix))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
