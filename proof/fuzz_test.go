package proof

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/assemble"
	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/accounts"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/store"
)

// The fuzz targets feed every inbound payload kind to a whole engine (bbolt
// store, both real adapters, paysim over HTTP), not just to a decoder: each
// input must be recorded, answered with exactly one well-formed reply, and
// leave the engine able to answer the next one. A stall (no reply within
// the deadline) fails like a crash does.
//
//	go test -run '^$' -fuzz '^FuzzEngineCreate$' -fuzztime 30s ./proof

// fuzzEngine is one engine per fuzzing process, shared by every input.
type fuzzEngine struct {
	eng     *device.Engine
	sim     *testrig.Sim
	replies chan contract.Outgoing
	// notifications captured from paysim, valid for this process's keys
	mu      sync.Mutex
	notices [][]byte
}

var (
	fuzzOnce sync.Once
	fuzzEng  *fuzzEngine
	fuzzErr  error
)

func engineForFuzz(t testing.TB) *fuzzEngine {
	t.Helper()
	keys := simkeys.Get(t)
	fuzzOnce.Do(func() { fuzzEng, fuzzErr = startFuzzEngine(keys) })
	if fuzzErr != nil {
		t.Fatal(fuzzErr)
	}
	return fuzzEng
}

func startFuzzEngine(keys *paysim.Keys) (*fuzzEngine, error) {
	fe := &fuzzEngine{replies: make(chan contract.Outgoing, 1024)}
	var err error
	if fe.sim, err = testrig.StartSim(keys, testrig.SimOptions{RefundDelay: 100 * time.Millisecond}); err != nil {
		return nil, err
	}
	// Notifications land here and become seeds for FuzzEngineNotify.
	capture := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		prov := "wxpay"
		if strings.HasSuffix(r.URL.Path, "/alipay") {
			prov = "alipay"
		}
		headers := map[string]string{}
		for k := range r.Header {
			headers[k] = r.Header.Get(k)
		}
		env, _ := json.Marshal(map[string]any{"request_id": "n-1", "provider": prov, "headers": headers, "body": string(body)})
		fe.mu.Lock()
		fe.notices = append(fe.notices, env)
		fe.mu.Unlock()
		if prov == "alipay" {
			io.WriteString(w, "success")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	dir, err := os.MkdirTemp("", "proof-fuzz-")
	if err != nil {
		return nil, err
	}
	base, err := fe.sim.DaemonFiles(filepath.Join(dir, "keys"))
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "kioskpayd.toml")
	if err := testrig.WriteConfig(cfgPath, base, map[string]any{
		"device_id": "fuzz", "state_dir": filepath.Join(dir, "state"), "display.outputs": []string{},
		"payment.notify_url": capture.URL, "payment.poll": "200ms", "unlock.ack_timeout": "2s",
	}); err != nil {
		return nil, err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	providers, err := accounts.Providers(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	db, err := store.Open(filepath.Join(cfg.StateDir, "orders.db"), store.Options{})
	if err != nil {
		return nil, err
	}
	ec := assemble.EngineConfig(cfg, providers)
	ec.Logger = log
	fe.eng, err = device.New(db, ec)
	if err != nil {
		return nil, err
	}
	go fe.eng.Run(context.Background())
	go fe.drain()
	return fe, nil
}

// drain plays the link: publish (here: hand over replies) and confirm.
func (fe *fuzzEngine) drain() {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-fe.eng.OutboxChanged():
		case <-tick.C:
		}
		due, err := fe.eng.Due(time.Now())
		if err != nil {
			continue
		}
		for _, o := range due {
			if o.Topic == contract.TopicReply {
				fe.replies <- o
			}
			_ = fe.eng.Published(o.ID)
		}
	}
}

// roundTrip records payload on topic and returns the reply it caused.
func (fe *fuzzEngine) roundTrip(t testing.TB, topic string, payload []byte) map[string]json.RawMessage {
	for len(fe.replies) > 0 { // stragglers of earlier inputs
		<-fe.replies
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fe.eng.Accept(ctx, topic, payload); err != nil {
		t.Fatalf("Accept(%s, %q): %v", topic, payload, err)
	}
	want := contract.ActionForTopic(topic)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case o := <-fe.replies:
			var m map[string]json.RawMessage
			if err := json.Unmarshal(o.Payload, &m); err != nil {
				t.Fatalf("reply is not a JSON object: %q", o.Payload)
			}
			var action string
			_ = json.Unmarshal(m["action"], &action)
			if action != want {
				continue // a reply to an earlier input, late
			}
			for _, k := range []string{"request_id", "action", "code", "msg"} {
				if _, ok := m[k]; !ok {
					t.Fatalf("reply without %q: %s", k, o.Payload)
				}
			}
			var code int
			if err := json.Unmarshal(m["code"], &code); err != nil {
				t.Fatalf("reply code not a number: %s", o.Payload)
			}
			if code != 0 {
				var name string
				_ = json.Unmarshal(m["error"], &name)
				if name == "" {
					t.Fatalf("refusal without an error name: %s", o.Payload)
				}
				if name == string(contract.ErrInternal) {
					t.Fatalf("INTERNAL for %s %q: %s", topic, payload, o.Payload)
				}
			}
			return m
		case <-deadline:
			t.Fatalf("no %s reply within 20s for %q: the engine stalled", want, payload)
		}
	}
}

var fuzzSeq struct {
	sync.Mutex
	n int
}

func fuzzOTN() string {
	fuzzSeq.Lock()
	defer fuzzSeq.Unlock()
	fuzzSeq.n++
	return fmt.Sprintf("fz%d_%d", os.Getpid(), fuzzSeq.n)
}

// seedOrder creates (and optionally pays) a real order so that cancel,
// query, refund and ack seeds name an order the engine knows.
func (fe *fuzzEngine) seedOrder(t testing.TB, pay bool) string {
	otn := fuzzOTN()
	m := fe.roundTrip(t, contract.TopicCreate, fmt.Appendf(nil, `{"request_id":"seed","provider":"wxpay","data":{"out_trade_no":%q,"total_fee":100,"subject":"fuzz","type":"fuzz"}}`, otn))
	if string(m["code"]) != "0" {
		return otn
	}
	if pay {
		_ = fe.sim.Pay(payment.WxPay, otn, 0)
	}
	return otn
}

func fuzzTopic(f *testing.F, topic string) {
	fe := engineForFuzz(f)
	for _, s := range commonSeeds {
		f.Add([]byte(s))
	}
	for _, s := range staticSeeds[f.Name()] {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		fe.roundTrip(t, topic, payload)
	})
}

var commonSeeds = []string{
	``, `{}`, `[]`, `null`, `"x"`, `{"request_id":1}`, `{"request_id":"` + strings.Repeat("r", 200) + `"}`,
	"{\"request_id\":\"\xff\"}", `{"out_trade_no":"abc_123456"}`, `{"out_trade_no":"bad no"}`,
	`{"out_trade_no":"abc_123456","ts":-1,"sig":"zz"}`,
}

// staticSeeds are each target's fixed seeds; TestWriteCorpus commits them
// as testdata/fuzz files.
var staticSeeds = map[string][]string{
	"FuzzEngineCreate": {
		`{"request_id":"r-1","provider":"wxpay","needQRcode":true,"data":{"out_trade_no":"fzseed_000001","total_fee":1000,"subject":"按摩 15 分钟","type":"massage_15","custom":{"seat":3},"other":{},"pid":"default","expire_seconds":300}}`,
		`{"request_id":"r-2","provider":"any","data":{"out_trade_no":"fzseed_000002","total_fee":1,"subject":"s","type":"t"}}`,
		`{"request_id":"r-3","provider":"alipay","isPC":true,"data":{"out_trade_no":"fzseed_000003","total_fee":99999,"subject":"s","type":"t","other":{"timeout_express":"5m"}}}`,
		`{"data":{"out_trade_no":"fzseed_000004","total_fee":1000.5,"subject":"s","type":"t"}}`,
		`{"data":{"out_trade_no":"fzseed_000005","total_fee":"1000","subject":"","type":"T"}}`,
		`{"provider":"paypal","data":{}}`,
		`{"data":{"out_trade_no":"fzseed_000006","total_fee":100,"subject":"s","type":"t","pid":"nobody"}}`,
		`{"data":{"out_trade_no":"fzseed_000007","total_fee":100,"subject":"s","type":"t","other":{"amount":{"total":1}}}}`,
	},
	"FuzzEngineCancel": {
		`{"out_trade_no":"nosuch_order1"}`,
	},
	"FuzzEngineQuery":  {},
	"FuzzEngineRefund": {},
	"FuzzEngineAck":    {},
	"FuzzEngineNotify": {
		`{"provider":"wxpay","headers":{"Wechatpay-Timestamp":"1","Wechatpay-Signature":"x"},"body":"{}"}`,
		`{"provider":"alipay","headers":{"Content-Type":["application/x-www-form-urlencoded"]},"body":"notify_type=trade_status_sync&sign=abc"}`,
		`{"provider":"unionpay","body":"x"}`,
	},
	"FuzzConfig": {
		"device_id = \"x\"\n[merchants.default.alipay]\napp_id = \"1\"\nprivate_key_file = \"k\"\nalipay_public_key_file = \"p\"\n",
		"device_id = \"x\"\n[payment]\nexpire = 300\npoll = \"1ms\"\n",
		"device_id = \"x\"\n[catalog]\nmassage_15 = 1000\nbad = -1\n",
		"device_id = \"x\"\n[display]\noutputs = [\"fb\", \"fb\"]\nrotate = 45\n",
		"device_id = \"x\"\n[mqtt]\nurl = \"mqtt://[::1\"\ntopic_prefix = \"a/+/b\"\n",
	},
}

func FuzzEngineCreate(f *testing.F) {
	fuzzTopic(f, contract.TopicCreate)
}

func FuzzEngineCancel(f *testing.F) {
	fe := engineForFuzz(f)
	otn := fe.seedOrder(f, false)
	f.Add([]byte(`{"request_id":"c-1","out_trade_no":"` + otn + `"}`))
	fuzzTopic(f, contract.TopicCancel)
}

func FuzzEngineQuery(f *testing.F) {
	fe := engineForFuzz(f)
	otn := fe.seedOrder(f, true)
	f.Add([]byte(`{"request_id":"q-1","out_trade_no":"` + otn + `"}`))
	fuzzTopic(f, contract.TopicQuery)
}

func FuzzEngineRefund(f *testing.F) {
	fe := engineForFuzz(f)
	otn := fe.seedOrder(f, true)
	f.Add([]byte(`{"request_id":"f-1","out_trade_no":"` + otn + `","refund_fee":50,"refund_desc":"partial","out_refund_no":"` + otn + `_r1"}`))
	f.Add([]byte(`{"out_trade_no":"` + otn + `","refund_fee":0}`))
	f.Add([]byte(`{"out_trade_no":"` + otn + `","refund_fee":100000000000}`))
	f.Add([]byte(`{"out_trade_no":"` + otn + `","out_refund_no":"bad refund no"}`))
	fuzzTopic(f, contract.TopicRefund)
}

func FuzzEngineAck(f *testing.F) {
	fe := engineForFuzz(f)
	otn := fe.seedOrder(f, true)
	f.Add([]byte(`{"request_id":"a-1","out_trade_no":"` + otn + `","ok":true}`))
	f.Add([]byte(`{"out_trade_no":"` + otn + `","ok":false,"reason":"motor jammed"}`))
	f.Add([]byte(`{"out_trade_no":"` + otn + `"}`))
	f.Add([]byte(`{"out_trade_no":"` + otn + `","ok":"yes"}`))
	fuzzTopic(f, contract.TopicAck)
}

func FuzzEngineNotify(f *testing.F) {
	fe := engineForFuzz(f)
	for _, p := range []payment.ProviderName{payment.WxPay, payment.Alipay} {
		otn := fuzzOTN()
		fe.roundTrip(f, contract.TopicCreate, fmt.Appendf(nil, `{"provider":%q,"data":{"out_trade_no":%q,"total_fee":100,"subject":"fuzz","type":"fuzz"}}`, p, otn))
		_ = fe.sim.Pay(p, otn, 0)
	}
	// Real, validly signed notifications for this process's keys.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		fe.mu.Lock()
		n := len(fe.notices)
		fe.mu.Unlock()
		if n >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	fe.mu.Lock()
	for _, n := range fe.notices {
		f.Add(n)
	}
	fe.mu.Unlock()
	fuzzTopic(f, contract.TopicNotify)
}

// FuzzConfig: the config parser must never panic, and whatever it accepts
// must build providers (or refuse with an error) without panicking.
func FuzzConfig(f *testing.F) {
	sim := StartSimForSeeds(f)
	dir := f.TempDir()
	base, err := sim.DaemonFiles(filepath.Join(dir, "keys"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(base)
	for _, s := range staticSeeds[f.Name()] {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, filepath.Join(dir, "keys"))
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		_, _ = accounts.Providers(cfg, slog.New(slog.DiscardHandler))
	})
}

// StartSimForSeeds starts a throw-away simulator for seed material.
func StartSimForSeeds(f *testing.F) *testrig.Sim {
	s, err := testrig.StartSim(simkeys.Get(f), testrig.SimOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	return s
}

// TestWriteCorpus writes the static seeds as committed corpus files
// (KIOSKPAY_WRITE_CORPUS=1); go test runs them as regression inputs.
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("KIOSKPAY_WRITE_CORPUS") == "" {
		t.Skip("set KIOSKPAY_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	for target, seeds := range staticSeeds {
		all := seeds
		if target != "FuzzConfig" {
			all = append(append([]string(nil), commonSeeds...), seeds...)
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range all {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(s) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
