package paygate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/gateway/wire"
)

// fakeProvider keeps orders and refunds like a provider would.
type fakeProvider struct {
	mu      sync.Mutex
	orders  map[string]payment.Status
	refunds map[string]payment.RefundStatus // by out_refund_no
	calls   []string
}

func newFake() *fakeProvider {
	return &fakeProvider{orders: map[string]payment.Status{}, refunds: map[string]payment.RefundStatus{}}
}

func (f *fakeProvider) Name() payment.ProviderName { return payment.WxPay }
func (f *fakeProvider) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}
func (f *fakeProvider) Create(_ context.Context, o payment.Order) (payment.Created, error) {
	f.record("create " + o.OutTradeNo)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orders[o.OutTradeNo] = payment.Status{State: payment.StateWaiting, Amount: payment.Amounts{Total: o.Total}}
	return payment.Created{CodeURL: "weixin://wxpay/bizpayurl?pr=" + o.OutTradeNo}, nil
}
func (f *fakeProvider) Query(_ context.Context, otn string) (payment.Status, error) {
	f.record("query " + otn)
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.orders[otn]
	if !ok {
		return s, &payment.RejectedError{Provider: payment.WxPay, Op: "query", Code: "ORDER_NOT_EXIST", Message: "no order"}
	}
	return s, nil
}
func (f *fakeProvider) Close(_ context.Context, otn string) (payment.Closed, error) {
	f.record("close " + otn)
	return payment.Closed{}, nil
}
func (f *fakeProvider) Refund(_ context.Context, r payment.RefundRequest) (payment.RefundStatus, error) {
	f.record("refund " + r.OutRefundNo)
	f.mu.Lock()
	defer f.mu.Unlock()
	rs := payment.RefundStatus{State: payment.RefundProcessing, Amount: r.Refund, RefundID: "r-" + r.OutRefundNo}
	f.refunds[r.OutRefundNo] = rs
	return rs, nil
}
func (f *fakeProvider) QueryRefund(_ context.Context, _, no string) (payment.RefundStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rs, ok := f.refunds[no]; ok {
		return rs, nil
	}
	return payment.RefundStatus{State: payment.RefundNotFound}, nil
}
func (f *fakeProvider) ParseNotify(_ context.Context, h http.Header, body []byte) (payment.Notification, error) {
	if h.Get("X-Valid") != "yes" {
		return payment.Notification{}, errors.New("bad signature")
	}
	return payment.Notification{Kind: payment.NotifyPayment, OutTradeNo: string(body)}, nil
}

func (f *fakeProvider) pay(otn string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.orders[otn]
	s.State, s.PaidAt = payment.StatePaid, at
	s.Amount.PayerTotal = s.Amount.Total - 100 // a coupon: never the refundable amount
	f.orders[otn] = s
}

func (f *fakeProvider) refundCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, "refund ") {
			n++
		}
	}
	return n
}

type testGate struct {
	*Gate
	prov  *fakeProvider
	audit string
	now   time.Time
}

func newTestGate(t *testing.T) *testGate {
	t.Helper()
	fee := payment.Fen(2000)
	rate, burst := 1.0, 3
	ps := PolicySet{
		Default: DefaultConfig().Policy.Default,
		Groups: map[string]Group{
			"chairs": {Match: []string{"chair-*"}, Override: Override{Catalog: map[string]payment.Fen{"massage_15": 1500}, MaxFee: &fee}},
			"slow":   {Match: []string{"slow-*"}, Override: Override{Rate: &rate, Burst: &burst}},
		},
		Devices: map[string]DevicePolicy{"vend_9": {Prefix: "V9"}},
	}
	dir := t.TempDir()
	a, err := OpenAudit(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	tg := &testGate{prov: newFake(), audit: filepath.Join(dir, "audit.jsonl"), now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	tg.Gate = &Gate{Policy: &ps, Accounts: Accounts{"default": {payment.WxPay: tg.prov}}, Audit: a, Replica: "r1", Now: func() time.Time { return tg.now }}
	return tg
}

func (tg *testGate) lastAudit(t *testing.T) Record {
	t.Helper()
	f, err := os.Open(tg.audit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
	}
	return last
}

func create(otn string, total payment.Fen, typ string) wire.Request {
	return wire.Request{ID: "c-" + otn, Op: wire.OpCreate, PID: "default", Provider: payment.WxPay, Order: &wire.Order{
		OutTradeNo: otn, Total: total, Subject: "Massage", Type: typ, ExpireAt: time.Date(2026, 1, 1, 12, 5, 0, 0, time.UTC)}}
}

func refund(otn, no string, total, amount payment.Fen) wire.Request {
	return wire.Request{ID: "r-" + no, Op: wire.OpRefund, PID: "default", Provider: payment.WxPay, Refund: &wire.Refund{
		OutTradeNo: otn, OutRefundNo: no, Total: total, Refund: amount}}
}

// refused asserts a definite refusal with code whose message names the rule,
// and that the audit log's last line records it.
func (tg *testGate) refused(t *testing.T, rep wire.Reply, code wire.Code, rule string) {
	t.Helper()
	if rep.Error != code {
		t.Fatalf("reply %+v: want error %s", rep, code)
	}
	if !strings.HasPrefix(rep.Msg, rule+":") {
		t.Errorf("message %q does not name the rule %q", rep.Msg, rule)
	}
	rec := tg.lastAudit(t)
	want := Refused
	if !code.Definite() {
		want = Unknown
	}
	if rec.Decision != want || rec.Code != string(code) || rec.Msg != rep.Msg || rec.RequestID != rep.ID {
		t.Errorf("audit %+v does not record the refusal %+v", rec, rep)
	}
}

func TestPolicyCreate(t *testing.T) {
	tg := newTestGate(t)
	ctx := context.Background()
	p := DerivedPrefix("chair-1")
	if p != "chair_11__" {
		t.Fatalf("derived prefix %q", p)
	}
	if rep := tg.Handle(ctx, "chair-1", create(p+"0001", 1500, "massage_15")); rep.Error != "" || rep.CodeURL == "" {
		t.Fatalf("allowed create: %+v", rep)
	}
	if rec := tg.lastAudit(t); rec.Decision != Allowed || rec.Device != "chair-1" || rec.Amount != 1500 {
		t.Errorf("audit %+v", rec)
	}
	tg.refused(t, tg.Handle(ctx, "chair-1", create(p+"0002", 1400, "massage_15")), wire.ErrPolicyCatalog, "catalog")
	tg.refused(t, tg.Handle(ctx, "chair-1", create(p+"0003", 1500, "massage_99")), wire.ErrPolicyCatalog, "catalog")
	tg.refused(t, tg.Handle(ctx, "kiosk-2", create(DerivedPrefix("kiosk-2")+"01", DefaultMaxFee+1, "")), wire.ErrPolicyMaxFee, "max_fee")
	// Another device's prefix, and no prefix at all.
	tg.refused(t, tg.Handle(ctx, "kiosk-2", create(p+"0004", 1500, "massage_15")), wire.ErrPolicyPrefix, "prefix")
	tg.refused(t, tg.Handle(ctx, "kiosk-2", create("plain_0001", 100, "")), wire.ErrPolicyPrefix, "prefix")
	// A configured prefix replaces the derived one.
	tg.refused(t, tg.Handle(ctx, "vend_9", create(DerivedPrefix("vend_9")+"01", 100, "")), wire.ErrPolicyPrefix, "prefix")
	if rep := tg.Handle(ctx, "vend_9", create("_V9_0001", 100, "")); rep.Error != "" {
		t.Fatalf("configured prefix: %+v", rep)
	}
	for _, c := range tg.prov.calls {
		if strings.Contains(c, "0002") || strings.Contains(c, "0003") || strings.Contains(c, "0004") || strings.Contains(c, "plain") {
			t.Errorf("a refused create reached the provider: %s", c)
		}
	}
}

func TestPolicyRefund(t *testing.T) {
	tg := newTestGate(t)
	ctx := context.Background()
	a, b := DerivedPrefix("dev-a")+"0001", DerivedPrefix("dev-b")+"0001"
	for dev, otn := range map[string]string{"dev-a": a, "dev-b": b} {
		if rep := tg.Handle(ctx, dev, create(otn, 1000, "")); rep.Error != "" {
			t.Fatal(rep)
		}
		tg.prov.pay(otn, tg.now)
	}
	tg.now = tg.now.Add(time.Minute)

	// Another device's order.
	tg.refused(t, tg.Handle(ctx, "dev-a", refund(b, b+"R1", 1000, 1000)), wire.ErrPolicyPrefix, "prefix")
	// Not one of the automatic refund numbers.
	tg.refused(t, tg.Handle(ctx, "dev-a", refund(a, "operator_1", 1000, 10)), wire.ErrPolicyRefundNo, "refund number")
	tg.refused(t, tg.Handle(ctx, "dev-a", refund(a, a+"R9", 1000, 10)), wire.ErrPolicyRefundNo, "refund number")
	// A total other than the provider's.
	tg.refused(t, tg.Handle(ctx, "dev-a", refund(a, a+"R1", 2000, 1500)), wire.ErrPolicyRefundAmount, "refund amount")
	// Above the total; the provider's payer_total (900) is not the limit.
	tg.refused(t, tg.Handle(ctx, "dev-a", refund(a, a+"R1", 1000, 1001)), wire.ErrPolicyRefundAmount, "refund amount")
	if rep := tg.Handle(ctx, "dev-a", refund(a, a+"R1", 1000, 600)); rep.Error != "" {
		t.Fatalf("partial refund: %+v", rep)
	}
	if rep := tg.Handle(ctx, "dev-a", refund(a, a+"R1", 1000, 600)); rep.Error != "" {
		t.Fatalf("repeated refund (provider dedupes): %+v", rep)
	}
	// 400 left: a second refund of 500 is above what is refundable.
	tg.refused(t, tg.Handle(ctx, "dev-a", refund(a, a+"R2", 1000, 500)), wire.ErrPolicyRefundAmount, "refund amount")
	if rep := tg.Handle(ctx, "dev-a", refund(a, a+"R2", 1000, 400)); rep.Error != "" {
		t.Fatalf("the rest: %+v", rep)
	}
	// Outside the window: refused, but a retry of an existing refund is not.
	tg.now = tg.now.Add(DefaultRefundWindow)
	tg.refused(t, tg.Handle(ctx, "dev-b", refund(b, b+"R1", 1000, 1000)), wire.ErrPolicyRefundWindow, "refund window")
	if rep := tg.Handle(ctx, "dev-a", refund(a, a+"R2", 1000, 400)); rep.Error != "" {
		t.Fatalf("retry after the window: %+v", rep)
	}
	if n := tg.prov.refundCalls(); n != 4 {
		t.Errorf("%d refunds reached the provider, want 4 (R1 twice, R2 twice)", n)
	}
}

func TestPolicyRateLimit(t *testing.T) {
	tg := newTestGate(t)
	ctx := context.Background()
	ping := wire.Request{ID: "p", Op: wire.OpPing}
	for i := 0; i < 3; i++ {
		if rep := tg.Handle(ctx, "slow-1", ping); rep.Error != "" {
			t.Fatalf("within burst: %+v", rep)
		}
	}
	rep := tg.Handle(ctx, "slow-1", ping)
	tg.refused(t, rep, wire.ErrRateLimited, "rate limit")
	if rep.Error.Definite() {
		t.Error("a rate limit must be an unknown outcome for the device (it retries)")
	}
	// Another device has its own bucket; time refills this one.
	if rep := tg.Handle(ctx, "slow-2", ping); rep.Error != "" {
		t.Fatalf("other device: %+v", rep)
	}
	tg.now = tg.now.Add(time.Second)
	if rep := tg.Handle(ctx, "slow-1", ping); rep.Error != "" {
		t.Fatalf("after refill: %+v", rep)
	}
}

// A device cannot name another device in the payload: there is no field for
// it (unknown fields are refused), and everything is checked against the
// device of the topic.
func TestSpoofedDeviceGainsNothing(t *testing.T) {
	tg := newTestGate(t)
	ctx := context.Background()
	victim := DerivedPrefix("victim") + "0001"
	tg.Handle(ctx, "victim", create(victim, 1000, ""))
	tg.prov.pay(victim, tg.now)
	payload := `{"id":"x","op":"refund","pid":"default","provider":"wxpay","device_id":"victim","device":"victim",` +
		`"refund":{"out_trade_no":"` + victim + `","out_refund_no":"` + victim + `R1","total":1000,"refund":1000}}`
	if _, err := wire.DecodeRequest([]byte(payload)); !errors.Is(err, wire.ErrBadRequest) {
		t.Fatalf("a payload naming a device decoded: %v", err)
	}
	req := refund(victim, victim+"R1", 1000, 1000)
	tg.refused(t, tg.Handle(ctx, "thief", req), wire.ErrPolicyPrefix, "prefix")
	if rec := tg.lastAudit(t); rec.Device != "thief" {
		t.Errorf("audited as %q, want the topic's device", rec.Device)
	}
	// Notifications of the victim's orders do not verify for the thief.
	n := wire.Request{ID: "n", Op: wire.OpNotify, PID: "default", Provider: payment.WxPay, Notify: &wire.Notify{Headers: map[string][]string{"X-Valid": {"yes"}}, Body: victim}}
	tg.refused(t, tg.Handle(ctx, "thief", n), wire.ErrPolicyPrefix, "prefix")
	if tg.prov.refundCalls() != 0 {
		t.Error("the thief's refund reached the provider")
	}
}

func TestPrefixesNeverOverlap(t *testing.T) {
	ps := &PolicySet{Devices: map[string]DevicePolicy{"c7": {Prefix: "C7"}, "x": {Prefix: "C77"}}}
	ids := []string{"a", "a_", "a-", "a_0", "a__", "_a", "-a", "a_1", "a-1", "c7", "x", "C7", "ab", "a_b", "a-b", "0", "1", "_0", "_1", "__", "--", "_-", "-_"}
	for _, x := range ids {
		px := ps.Prefix(x)
		if d, ok := ps.DeviceOf(px + "0001"); !ok || d != x {
			t.Errorf("DeviceOf(%q) = %q, %v; want %q", px+"0001", d, ok, x)
		}
		for _, y := range ids {
			if x == y {
				continue
			}
			if py := ps.Prefix(y); strings.HasPrefix(px, py) || strings.HasPrefix(py, px) {
				t.Errorf("prefixes of %q (%q) and %q (%q) overlap", x, px, y, py)
			}
		}
	}
}

func FuzzPrefix(f *testing.F) {
	f.Add("chair-1", "chair_1")
	f.Add("a_", "a-")
	f.Fuzz(func(t *testing.T, x, y string) {
		if !contract.ValidDeviceID(x) || !contract.ValidDeviceID(y) || x == y {
			return
		}
		px, py := DerivedPrefix(x), DerivedPrefix(y)
		if strings.HasPrefix(px, py) || strings.HasPrefix(py, px) {
			t.Fatalf("derived prefixes of %q (%q) and %q (%q) overlap", x, px, y, py)
		}
		if d, ok := (&PolicySet{}).DeviceOf(px + "1"); !ok || d != x {
			t.Fatalf("DeviceOf(%q) = %q, %v", px+"1", d, ok)
		}
	})
}

func TestPolicyFor(t *testing.T) {
	fee := payment.Fen(5)
	ps := PolicySet{
		Default: DefaultConfig().Policy.Default,
		Groups:  map[string]Group{"a": {Match: []string{"chair-*"}, Override: Override{MaxFee: &fee}}},
		Devices: map[string]DevicePolicy{"chair-9": {Override: Override{Catalog: map[string]payment.Fen{"x": 5}}}},
	}
	if p := ps.PolicyFor("chair-9"); p.MaxFee != 5 || p.Catalog["x"] != 5 || p.RefundWindow.Duration != DefaultRefundWindow {
		t.Errorf("chair-9: %+v", p)
	}
	if p := ps.PolicyFor("vend-1"); p.MaxFee != DefaultMaxFee || p.Catalog != nil {
		t.Errorf("vend-1: %+v", p)
	}
}

func TestConfigErrorsNameKeys(t *testing.T) {
	_, err := ParseConfig([]byte(`
[policy.default]
max_fee = 0
[policy.devices.d1]
prefix = "1bad"
[policy.devices.d2]
prefix = "P"
[policy.devices.d3]
prefix = "P"
group = "nope"
[bogus]
x = 1
`), t.TempDir())
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"policy.default.max_fee", "policy.devices.d1.prefix", "policy.devices.d3.prefix", "policy.devices.d3.group", "bogus", "merchants"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Errorf("errors are not *config.Error: %T", err)
	}
}
