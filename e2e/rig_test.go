package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/qrtest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/alisim"
	"github.com/kioskpay/kioskpay/payment/paysim/wxsim"
)

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
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/kioskpayd", "./cmd/notifyrelay", "./cmd/kioskctl", "./cmd/paysim", "./cmd/kioskbench", "./cmd/fleetsim", "./cmd/paygate")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		return 1
	}
	if keys, err = paysim.GenerateKeys(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keySecrets = append(pemSecrets(paysim.PrivatePEM(keys.AlipayApp)), pemSecrets(paysim.PrivatePEM(keys.WxMerchant))...)
	keySecrets = append(keySecrets, keys.WxAPIv3Key)
	return m.Run()
}

// pemSecrets returns the base64 lines of a PEM block (each one alone
// identifies the key) and its whole body.
func pemSecrets(pemText string) []string {
	var out []string
	var body strings.Builder
	for _, line := range strings.Split(pemText, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "-----") {
			continue
		}
		body.WriteString(line)
		if len(line) >= 16 {
			out = append(out, line)
		}
	}
	return append(out, body.String())
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- the test controller ----

// msg is one message seen on P/#.
type msg struct {
	Topic   string // suffix after P/
	Payload []byte
	At      time.Time
	M       map[string]any
}

func (m msg) str(key string) string {
	s, _ := m.M[key].(string)
	return s
}

func (m msg) num(key string) float64 {
	f, _ := m.M[key].(float64)
	return f
}

// controller is what a device controller sees: every message under P/, in
// arrival order, and a way to publish commands.
type controller struct {
	t      testing.TB
	prefix string
	c      mqtt.Client

	mu   sync.Mutex
	msgs []msg
	wake chan struct{}
}

func newController(t testing.TB, brokerURL, prefix string, persistent bool, username, password string) *controller {
	t.Helper()
	ctl := &controller{t: t, prefix: prefix, wake: make(chan struct{})}
	o := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(mqtttest.Unique("ctl-")).
		SetCleanSession(!persistent).SetOrderMatters(false).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second)
	o.SetUsername(username)
	o.SetPassword(password)
	o.SetTLSConfig(&tls.Config{InsecureSkipVerify: true})
	o.SetOnConnectHandler(func(c mqtt.Client) {
		// Subscribe on every (re)connect: a clean session forgets it.
		c.Subscribe(prefix+"/#", 1, ctl.onMessage)
	})
	ctl.c = mqtt.NewClient(o)
	tok := ctl.c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("controller connect %s: %v", brokerURL, tok.Error())
	}
	// The subscription is made in the handler; make sure it is in place
	// before the test publishes anything that expects an answer.
	sub := ctl.c.Subscribe(prefix+"/#", 1, ctl.onMessage)
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		t.Fatalf("controller subscribe: %v", sub.Error())
	}
	t.Cleanup(func() { ctl.c.Disconnect(50) })
	return ctl
}

func (ctl *controller) onMessage(_ mqtt.Client, m mqtt.Message) {
	suffix := strings.TrimPrefix(m.Topic(), ctl.prefix+"/")
	mm := msg{Topic: suffix, Payload: append([]byte(nil), m.Payload()...), At: time.Now()}
	_ = json.Unmarshal(mm.Payload, &mm.M)
	ctl.mu.Lock()
	ctl.msgs = append(ctl.msgs, mm)
	close(ctl.wake)
	ctl.wake = make(chan struct{})
	ctl.mu.Unlock()
}

// publish sends payload to P/suffix at QoS 1 and waits for the PUBACK.
func (ctl *controller) publish(suffix string, payload []byte) {
	ctl.t.Helper()
	tok := ctl.c.Publish(ctl.prefix+"/"+suffix, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		ctl.t.Fatalf("publish %s: %v", suffix, tok.Error())
	}
}

func (ctl *controller) send(suffix string, v any) {
	ctl.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		ctl.t.Fatal(err)
	}
	ctl.publish(suffix, b)
}

func (ctl *controller) snapshot() ([]msg, chan struct{}) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return append([]msg(nil), ctl.msgs...), ctl.wake
}

// find returns every message so far that matches.
func (ctl *controller) find(match func(msg) bool) []msg {
	all, _ := ctl.snapshot()
	var out []msg
	for _, m := range all {
		if match(m) {
			out = append(out, m)
		}
	}
	return out
}

// waitFor returns the first message (since the start) that matches, waiting
// up to d for it.
func (ctl *controller) waitFor(d time.Duration, what string, match func(msg) bool) msg {
	ctl.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		all, wake := ctl.snapshot()
		for _, m := range all {
			if match(m) {
				return m
			}
		}
		select {
		case <-wake:
		case <-deadline.C:
			ctl.t.Fatalf("no %s within %s; saw:\n%s", what, d, ctl.dump())
			return msg{}
		}
	}
}

func (ctl *controller) dump() string {
	all, _ := ctl.snapshot()
	var b strings.Builder
	for _, m := range all {
		if m.Topic == "status" {
			continue
		}
		fmt.Fprintf(&b, "  %s %s %s\n", m.At.Format("15:04:05.000"), m.Topic, truncate(m.Payload, 400))
	}
	return b.String()
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

// reply waits for the reply to request rid.
func (ctl *controller) reply(rid string) msg {
	ctl.t.Helper()
	return ctl.waitFor(20*time.Second, "reply to "+rid, func(m msg) bool {
		return m.Topic == "pay/reply" && m.str("request_id") == rid
	})
}

// replies returns every reply to rid seen so far.
func (ctl *controller) replies(rid string) []msg {
	return ctl.find(func(m msg) bool { return m.Topic == "pay/reply" && m.str("request_id") == rid })
}

func (ctl *controller) result(otn, status string, d time.Duration) msg {
	ctl.t.Helper()
	return ctl.waitFor(d, status+" result of "+otn, func(m msg) bool {
		return m.Topic == "pay/result" && m.str("out_trade_no") == otn && m.str("status") == status
	})
}

func (ctl *controller) results(otn string) []msg {
	return ctl.find(func(m msg) bool { return m.Topic == "pay/result" && m.str("out_trade_no") == otn })
}

func (ctl *controller) event(otn, to string, d time.Duration) msg {
	ctl.t.Helper()
	return ctl.waitFor(d, "event "+otn+" → "+to, func(m msg) bool {
		return m.Topic == "pay/event" && m.str("out_trade_no") == otn && m.str("to") == to
	})
}

// none fails if a message matching arrives within d.
func (ctl *controller) none(d time.Duration, what string, match func(msg) bool) {
	ctl.t.Helper()
	time.Sleep(d) // a bounded observation window, not synchronisation
	if got := ctl.find(match); len(got) > 0 {
		ctl.t.Fatalf("unexpected %s: %s", what, got[0].Payload)
	}
}

// checkSeqs asserts the contract's result rules for one order: each outcome is
// published with one seq only (re-publications repeat it byte for byte),
// and different outcomes never share a seq.
func checkSeqs(t testing.TB, results []msg) {
	t.Helper()
	seqOf := map[string]float64{}
	bodyOf := map[string]string{}
	owner := map[float64]string{}
	for _, r := range results {
		st, seq := r.str("status"), r.num("seq")
		if seq <= 0 {
			t.Fatalf("result without a seq: %s", r.Payload)
		}
		if s, ok := seqOf[st]; ok && s != seq {
			t.Fatalf("outcome %s published with two seqs, %v and %v", st, s, seq)
		}
		if b, ok := bodyOf[st]; ok && b != string(r.Payload) {
			t.Fatalf("outcome %s re-published with different bytes:\n%s\n%s", st, b, r.Payload)
		}
		if o, ok := owner[seq]; ok && o != st {
			t.Fatalf("seq %v used by %s and %s", seq, o, st)
		}
		seqOf[st], bodyOf[st], owner[seq] = seq, string(r.Payload), st
	}
}

// ---- signatures, as a controller computes them (docs/contract.md §3.5) ----

func hmacHex(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(m.Sum(nil))
}

// verifyResult is the controller's check before unlocking.
func verifyResult(key []byte, r msg) bool {
	want := hmacHex(key, r.str("out_trade_no"), r.str("status"),
		strconv.FormatInt(int64(r.num("total_fee")), 10), strconv.FormatInt(int64(r.num("seq")), 10),
		strconv.FormatInt(int64(r.num("ts")), 10))
	return hmac.Equal([]byte(want), []byte(r.str("sig")))
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
// and state dir, the daemon process and a controller on P/#.
type env struct {
	t         *testing.T
	sim       *paysim.Server
	wx        *wxsim.Sim // sim's WeChat Pay provider
	simURL    string
	brokerURL string
	dir       string
	cfgPath   string
	dev       string
	prefix    string
	key       []byte // result HMAC key, when configured
	webAddr   string // the web display's host:port, with daemonOpts.web
	ctl       *controller
	d         *daemon
	gate      *proc // paygate, in gateway mode
}

// startPaygate writes paysim's gateway files for the test's device,
// starts paygate with the merchant keys in a directory of its own, and
// returns the daemon's config: one with payment.backend = "gateway" in a
// directory that holds no merchant key file.
func (e *env) startPaygate(simURL string, o daemonOpts) string {
	t := e.t
	t.Helper()
	gwDir := filepath.Join(e.dir, "paygate")
	if _, err := keys.WriteDaemonFiles(gwDir, simURL); err != nil {
		t.Fatal(err)
	}
	gwCfg := filepath.Join(gwDir, "paygate.toml")
	b, err := os.ReadFile(gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	notify := freeAddr(t)
	q := strconv.Quote
	login := ""
	var secrets []string
	if o.password != "" {
		pw := filepath.Join(gwDir, "mqtt_password")
		writeSecret(t, pw, o.password+"\n")
		login = fmt.Sprintf("\nusername = %s\npassword_file = %s", q(o.username), q(pw))
		secrets = append(secrets, o.password)
	}
	for _, r := range [][2]string{
		{`url = "tcp://127.0.0.1:1883"`, `url = ` + q(e.brokerURL) + login},
		{`[policy.devices.sim-1]`, `[policy.devices.` + e.dev + `]`},
		{q(paysim.DefaultGatewayNotifyListen), q(notify)},
		{q("http://" + paysim.DefaultGatewayNotifyListen), q("http://" + notify)},
	} {
		if !bytes.Contains(b, []byte(r[0])) {
			t.Fatalf("paygate.toml has no %q:\n%s", r[0], b)
		}
		b = bytes.Replace(b, []byte(r[0]), []byte(r[1]), 1)
	}
	writeSecret(t, gwCfg, string(b))
	e.gate = newProc(t, "paygate", secrets, "-config", gwCfg, "-log-level", "debug")
	e.gate.start(`"paygate subscribed"`)
	d, err := os.ReadFile(filepath.Join(gwDir, "kioskpayd-gateway.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(e.dir, "kioskpayd.toml")
	writeSecret(t, cfg, strings.Replace(string(d), q(filepath.Join(gwDir, "state-gateway")), q(filepath.Join(e.dir, "state")), 1))
	return cfg
}

func newEnv(t *testing.T, o daemonOpts) *env {
	t.Helper()
	realism := paysim.DefaultRealism()
	if o.realism != nil {
		o.realism(&realism)
	}
	sim, err := paysim.New(paysim.Options{
		Keys:        keys,
		Realism:     &realism,
		NotifyRetry: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond, time.Second},
		TimeoutHold: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	wx := wxsim.Register(sim)
	alisim.Register(sim)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)

	e := &env{t: t, sim: sim, wx: wx, simURL: srv.URL, brokerURL: o.brokerURL, dir: t.TempDir()}
	if e.brokerURL == "" {
		e.brokerURL = mqtttest.Broker(t)
	}
	e.dev = mqtttest.Unique("e2e")
	e.prefix = "kiosk/" + e.dev
	if gatewayMode {
		e.cfgPath = e.startPaygate(srv.URL, o)
	} else if e.cfgPath, err = keys.WriteDaemonFiles(e.dir, srv.URL); err != nil {
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
	q := strconv.Quote
	mqttExtra := ""
	var secrets []string
	if o.password != "" {
		pw := filepath.Join(e.dir, "mqtt_password")
		writeSecret(t, pw, o.password+"\n")
		mqttExtra = fmt.Sprintf("\nusername = %s\npassword_file = %s", q(o.username), q(pw))
		secrets = append(secrets, o.password)
	}
	unlock := fmt.Sprintf("\n[unlock]\nack_timeout = %s\non_no_ack = %s\n", q(o.ackTimeout), q(o.onNoAck))
	if o.resultKey || o.signed {
		e.key = []byte(randomHex(32))
		kf := filepath.Join(e.dir, "result_key")
		writeSecret(t, kf, string(e.key)+"\n")
		unlock += fmt.Sprintf("result_key_file = %s\nrequire_signed_requests = %v\n", q(kf), o.signed)
		secrets = append(secrets, string(e.key))
	}
	catalog := ""
	if len(o.catalog) > 0 {
		catalog = "\n[catalog]\n"
		for typ, fee := range o.catalog {
			catalog += fmt.Sprintf("%s = %d\n", typ, fee)
		}
	}
	notify := ""
	if o.notifyURL != "" {
		notify = "\nnotify_url = " + q(o.notifyURL)
	}
	outputs, webListen := `outputs = ["png"]`, ""
	if o.web {
		e.webAddr = freeAddr(t)
		outputs, webListen = `outputs = ["png", "web"]`, "\nweb_listen = "+q(e.webAddr)
	}
	e.editConfig(
		`device_id = "sim-1"`, `device_id = `+q(e.dev),
		`url = "tcp://127.0.0.1:1883"`, `url = `+q(e.brokerURL),
		`topic_prefix = "kiosk"`, `topic_prefix = "kiosk"`+mqttExtra,
		`provider = "any"`, `provider = `+q(o.provider),
		`expire = "5m"`, `expire = `+q(o.expire),
		`max_fee = 100000`, `max_fee = `+strconv.Itoa(o.maxFee),
		`poll = "2s"`, `poll = `+q(o.poll)+notify,
		`outputs = ["web"]`, outputs,
		`web_listen = "127.0.0.1:8088"`, `png_path = `+q(filepath.Join(e.dir, "qr.png"))+webListen,
		`locale = "zh"`, `locale = "en"`,
		`sync_check = "none"`, `sync_check = "none"`+"\n"+unlock+catalog,
	)
	e.ctl = newController(t, e.brokerURL, e.prefix, o.persistent, o.username, o.password)
	e.d = newDaemon(t, e.cfgPath, secrets)
	if o.retry != "" {
		e.d.env = append(e.d.env, device.EnvTestRetry+"="+o.retry)
	}
	e.d.start()
	return e
}

func writeSecret(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// editConfig replaces each old string with its new one (pairs).
func (e *env) editConfig(pairs ...string) {
	e.t.Helper()
	b, err := os.ReadFile(e.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i < len(pairs); i += 2 {
		if !bytes.Contains(b, []byte(pairs[i])) {
			e.t.Fatalf("config has no %q:\n%s", pairs[i], b)
		}
		b = bytes.Replace(b, []byte(pairs[i]), []byte(pairs[i+1]), 1)
	}
	if err := os.WriteFile(e.cfgPath, b, 0o600); err != nil {
		e.t.Fatal(err)
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
func (e *env) create(rid, otn string, fee int, provider string) msg {
	e.t.Helper()
	e.ctl.send("pay/create", createReq(rid, otn, fee, provider, nil))
	r := e.ctl.reply(rid)
	if r.num("code") != 0 {
		e.t.Fatalf("create %s refused: %s", otn, r.Payload)
	}
	return r
}

func (e *env) ack(otn string, ok bool) {
	e.t.Helper()
	m := map[string]any{"request_id": "ack-" + otn + "-" + randomHex(3), "out_trade_no": otn, "ok": ok}
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
	e.ctl.send("unlock/ack", m)
	if r := e.ctl.reply(m["request_id"].(string)); r.num("code") != 0 {
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

// waitSim polls paysim until cond holds. WeChat refunds stay PROCESSING
// until completed, as at the real provider; completeRefunds does that.
func (e *env) waitSim(p payment.ProviderName, otn, what string, d time.Duration, completeRefunds bool, cond func(paysim.OrderInfo) bool) paysim.OrderInfo {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		o := e.simOrder(p, otn)
		if completeRefunds {
			for _, r := range o.Refunds {
				if r.Status == "PROCESSING" {
					_ = e.sim.RefundComplete(p, r.OutRefundNo)
				}
			}
		}
		if cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("paysim %s %s: %s did not happen within %s: %+v\ncontroller saw:\n%s", p, otn, what, d, o, e.ctl.dump())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// healthy proves the daemon still takes and answers orders.
func (e *env) healthy(p payment.ProviderName) {
	e.t.Helper()
	otn := otnPrefix + "health_" + randomHex(4)
	e.create("health-"+randomHex(4), otn, 100, string(p))
	e.pay(p, otn, 0)
	e.ctl.result(otn, "paid", 20*time.Second)
	e.ack(otn, true)
	e.ctl.event(otn, "delivered", 10*time.Second)
}

// ---- processes ----

// proc is a binary under test. Its whole stderr, over every run, is
// checked for secrets at cleanup.
type proc struct {
	t       testing.TB
	name    string
	args    []string
	env     []string // added to the environment
	secrets []string
	log     syncbuf.Buffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

func newProc(t testing.TB, name string, secrets []string, args ...string) *proc {
	p := &proc{t: t, name: name, args: args, secrets: append(append([]string(nil), keySecrets...), secrets...)}
	t.Cleanup(func() {
		p.kill()
		checkNoSecrets(t, p.name, p.log.String(), p.secrets)
		if t.Failed() {
			log := p.log.String()
			if len(log) > 20000 {
				log = "…" + log[len(log)-20000:]
			}
			t.Logf("%s log:\n%s", p.name, log)
		}
	})
	return p
}

// checkNoSecrets fails when a log holds a secret, or shows a contained
// panic (a handler that blew up is a bug even if the daemon survived).
func checkNoSecrets(t testing.TB, name, log string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(log, s) {
			t.Errorf("%s log contains a secret (%d chars starting %.6q…)", name, len(s), s)
		}
	}
	if strings.Contains(log, "panic") {
		t.Errorf("%s log mentions a panic:\n%s", name, log)
	}
}

// start runs the binary and waits until its log contains ready.
func (p *proc) start(ready string) {
	p.t.Helper()
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		p.t.Fatalf("%s already running", p.name)
	}
	from := p.log.Len()
	cmd := exec.Command(filepath.Join(binDir, p.name), p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stderr = &p.log
	cmd.Stdout = &p.log
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = -int(ws.Signal())
			}
		}
		p.mu.Lock()
		p.code = code
		p.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.log.String()[from:], ready) {
		select {
		case <-done:
			p.t.Fatalf("%s exited during start:\n%s", p.name, p.log.String()[from:])
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready within 30s:\n%s", p.name, p.log.String()[from:])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) signal(sig syscall.Signal) int {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return 0
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		p.t.Errorf("%s did not exit on %s", p.name, sig)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd = nil
	return p.code
}

// kill is a power cut: SIGKILL, nothing flushed.
func (p *proc) kill() { p.signal(syscall.SIGKILL) }

// stop is a clean stop; it fails the test unless the exit code is 0.
func (p *proc) stop() {
	p.t.Helper()
	if code := p.signal(syscall.SIGTERM); code != 0 {
		p.t.Errorf("%s exit %d after SIGTERM:\n%s", p.name, code, p.log.String())
	}
}

type daemon struct{ *proc }

func newDaemon(t testing.TB, cfgPath string, secrets []string) *daemon {
	// Debug level: the secret check then covers everything the daemon can
	// log.
	return &daemon{newProc(t, "kioskpayd", secrets, "-config", cfgPath, "-log-level", "debug")}
}

func (d *daemon) start() { d.proc.start(`"kioskpayd ready"`) }

// decodeQR decodes a PNG with zbarimg, the independent reader; "" when it
// finds no code.
func decodeQR(t *testing.T, png []byte) string {
	t.Helper()
	return strings.Join(qrtest.DecodePNG(t, png), "\n")
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
