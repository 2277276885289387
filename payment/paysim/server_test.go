package paysim

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

var testKeys struct {
	once sync.Once
	k    *Keys
	err  error
}

// keys shares one key set among the package's tests.
func keys(t testing.TB) *Keys {
	t.Helper()
	testKeys.once.Do(func() { testKeys.k, testKeys.err = GenerateKeys() })
	if testKeys.err != nil {
		t.Fatal(testKeys.err)
	}
	return testKeys.k
}

// realism returns Options.Realism: the defaults changed by f.
func realism(f func(*Realism)) *Realism {
	r := DefaultRealism()
	f(&r)
	return &r
}

func TestRealismValidate(t *testing.T) {
	k := keys(t)
	for _, tc := range []struct {
		name string
		f    func(*Realism)
		want string // "" = valid
	}{
		{"defaults", func(*Realism) {}, ""},
		{"never", func(r *Realism) { r.WxRefundMax = Never }, ""},
		{"immediate", func(r *Realism) { r.WxRefundMin, r.WxRefundMax = 0, 0 }, ""},
		{"negative min", func(r *Realism) { r.WxRefundMin = -time.Second }, "WxRefundMin"},
		{"max below min", func(r *Realism) { r.WxRefundMin, r.WxRefundMax = 2*time.Second, time.Second }, "WxRefundMax"},
		{"negative window", func(r *Realism) { r.AlipayRefundWindow = -time.Hour }, "AlipayRefundWindow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := realism(tc.f)
			_, err := New(Options{Keys: k, Realism: r})
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("New: %v, want an error naming %q", err, tc.want)
			}
			s, _ := New(Options{Keys: k})
			defer s.Close()
			if err := s.SetRealism(*r); (err == nil) != (tc.want == "") {
				t.Fatalf("SetRealism: %v", err)
			}
			if tc.want == "" && s.Realism() != *r {
				t.Fatalf("Realism() = %+v after SetRealism(%+v)", s.Realism(), *r)
			}
		})
	}
	if d := DefaultRealism(); d.WxRefundMin != time.Second || d.WxRefundMax != 10*time.Second || d.AlipayRefundWindow != 365*24*time.Hour ||
		!d.AlipayZeroQueryAmounts || !d.WxStrictRefundTotal {
		t.Fatalf("DefaultRealism() = %+v", d)
	}
}

// logSink records log lines and reports the one that ends a delivery.
type logSink struct {
	mu      sync.Mutex
	records []slog.Record
	givenUp chan struct{}
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logSink) WithGroup(string) slog.Handler            { return l }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.records = append(l.records, r)
	l.mu.Unlock()
	if r.Message == "notification given up" {
		l.givenUp <- struct{}{}
	}
	return nil
}

// Quiet by default (issue 14): API calls log at debug level, and a
// notification URL that never answers is reported once at info level, its
// retries at debug level.
func TestQuietLogs(t *testing.T) {
	logs := &logSink{givenUp: make(chan struct{}, 4)}
	s, err := New(Options{Keys: keys(t), Logger: slog.New(logs), NotifyRetry: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const dead = "http://127.0.0.1:1/notify/sim-1/wxpay" // nothing listens on port 1
	for _, no := range []string{"LOGS_1", "LOGS_2"} {
		s.Deliver("test "+no, dead, func() (*http.Request, error) {
			return http.NewRequest(http.MethodPost, dead, strings.NewReader(no))
		}, func(*http.Response, []byte) bool { return true })
		<-logs.givenUp
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	var info []string
	failures := 0
	for _, r := range logs.records {
		if strings.HasPrefix(r.Message, "notification not delivered") {
			failures++
		}
		if r.Level >= slog.LevelInfo {
			info = append(info, r.Message)
		}
	}
	if failures != 8 || len(info) != 1 || !strings.HasPrefix(info[0], "notification not delivered") {
		t.Fatalf("%d failed attempts logged, %d at info or above (%q): want 8 and exactly one", failures, len(info), info)
	}
}

// fakeProvider answers Scan with a fixed error and records Pay.
type fakeProvider struct {
	http.Handler
	name    payment.ProviderName
	scanErr error
	paid    []string
}

func (f *fakeProvider) Name() payment.ProviderName { return f.name }
func (f *fakeProvider) Pattern() string            { return "/" + string(f.name) + "/" }
func (f *fakeProvider) Scan(string) error          { return f.scanErr }
func (f *fakeProvider) Pay(no string, _ Payment) error {
	f.paid = append(f.paid, no)
	return nil
}
func (f *fakeProvider) RefundComplete(string) error           { return nil }
func (f *fakeProvider) RefundFail(string, RefundStatus) error { return nil }
func (f *fakeProvider) Orders() []OrderInfo                   { return nil }

// ScanAt without a provider scans at every provider: it fails only when
// none has the order, or with the first other error, whatever the order
// the providers were registered in.
func TestScanEveryProvider(t *testing.T) {
	noOrder := ErrNoOrder
	refused := errors.New("refused")
	for _, tc := range []struct {
		name        string
		ali, wx     error
		wantNoOrder bool
		want        error
	}{
		{"neither has it", noOrder, noOrder, true, nil},
		{"one has it", noOrder, nil, false, nil},
		{"the other has it", nil, noOrder, false, nil},
		{"one refuses", noOrder, refused, false, refused},
		{"alipay's refusal first", refused, errors.New("later"), false, refused},
	} {
		for _, order := range [][]payment.ProviderName{{payment.WxPay, payment.Alipay}, {payment.Alipay, payment.WxPay}} {
			s, err := New(Options{Keys: keys(t)})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range order {
				p := &fakeProvider{name: n, scanErr: tc.ali, Handler: http.NotFoundHandler()}
				if n == payment.WxPay {
					p.scanErr = tc.wx
				}
				s.Register(p)
			}
			err = s.Scan("O_1")
			if tc.wantNoOrder != errors.Is(err, ErrNoOrder) || (!tc.wantNoOrder && err != tc.want) {
				t.Errorf("%s (registered %v): Scan = %v", tc.name, order, err)
			}
			s.Close()
		}
	}
}

// The hooks dispatch to the provider named; a provider of the contract
// that is not registered is a 409, a name outside it a 400.
func TestRegisterAndDispatch(t *testing.T) {
	s, err := New(Options{Keys: keys(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wx := &fakeProvider{name: payment.WxPay, Handler: http.NotFoundHandler()}
	s.Register(wx)
	if err := s.Pay(payment.WxPay, "O_1", 0); err != nil || len(wx.paid) != 1 {
		t.Fatalf("Pay: %v, paid %v", err, wx.paid)
	}
	if err := s.Pay(payment.Alipay, "O_1", 0); err == nil || !strings.Contains(err.Error(), `unknown provider "alipay"`) {
		t.Fatalf("Pay at an unregistered provider: %v", err)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/_sim/orders", nil))
	if got := strings.TrimSpace(w.Body.String()); got != "[]" {
		t.Errorf("/_sim/orders without orders: %s, want []", got)
	}
	for body, want := range map[string]int{
		`{"provider":"wxpay","out_trade_no":"O_2"}`:    http.StatusOK,
		`{"provider":"alipay","out_trade_no":"O_2"}`:   http.StatusConflict,
		`{"provider":"unionpay","out_trade_no":"O_2"}`: http.StatusBadRequest,
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/_sim/pay", strings.NewReader(body)))
		if w.Code != want {
			t.Errorf("/_sim/pay %s: %d %s, want %d", body, w.Code, w.Body, want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering wxpay twice did not panic")
		}
	}()
	s.Register(&fakeProvider{name: payment.WxPay, Handler: http.NotFoundHandler()})
}

// The usage text names every kind, and whose answer it is, in one order.
func TestFaultKinds(t *testing.T) {
	const want = "5xx, timeout, bad_sign, stale_ts, rate_limit, 202 (wxpay), 20000 (alipay), system_error (alipay)"
	if got := describeFaultKinds(); got != want {
		t.Fatalf("describeFaultKinds() = %q, want %q", got, want)
	}
	if kinds := FaultKinds(); len(kinds) != 8 || kinds[0] != Fault5xx || kinds[7] != FaultSystemError {
		t.Fatalf("FaultKinds() = %q", kinds)
	}
	if _, ok := FaultKind("503").Only(); ok {
		t.Fatal(`FaultKind("503").Only() is ok`)
	}
	if err := (Fault{Kind: "503"}).Validate(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Validate of an unknown kind: %v", err)
	}
}
