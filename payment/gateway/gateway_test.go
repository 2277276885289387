package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/paygate"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/gateway"
)

// stub answers like a provider with one paid order.
type stub struct{ slow chan struct{} }

func (s *stub) Name() payment.ProviderName { return payment.WxPay }
func (s *stub) Create(_ context.Context, o payment.Order) (payment.Created, error) {
	if o.Subject == "refuse" {
		return payment.Created{}, &payment.RejectedError{Provider: payment.WxPay, Op: "create", Code: "INVALID_REQUEST", Message: "no"}
	}
	if o.Subject == "fail" {
		return payment.Created{}, errors.New("connection reset")
	}
	return payment.Created{CodeURL: "weixin://x/" + o.OutTradeNo}, nil
}
func (s *stub) Query(ctx context.Context, otn string) (payment.Status, error) {
	if s.slow != nil {
		select {
		case <-s.slow:
		case <-ctx.Done():
		}
	}
	return payment.Status{State: payment.StatePaid, Amount: payment.Amounts{Total: 100, PayerTotal: 90}, TransactionID: "t1", PaidAt: time.Now()}, nil
}
func (s *stub) Close(context.Context, string) (payment.Closed, error) {
	return payment.Closed{Paid: true}, nil
}
func (s *stub) Refund(_ context.Context, r payment.RefundRequest) (payment.RefundStatus, error) {
	return payment.RefundStatus{State: payment.RefundProcessing, Amount: r.Refund}, nil
}
func (s *stub) QueryRefund(context.Context, string, string) (payment.RefundStatus, error) {
	return payment.RefundStatus{State: payment.RefundNotFound}, nil
}
func (s *stub) ParseNotify(context.Context, http.Header, []byte) (payment.Notification, error) {
	return payment.Notification{}, errors.New("bad signature")
}

func setup(t *testing.T, prov payment.Provider, timeout time.Duration) (*gateway.Conn, map[string]map[payment.ProviderName]payment.Provider) {
	t.Helper()
	url := mqtttest.Broker(t)
	prefix := mqtttest.Unique("gwt")
	audit, err := paygate.OpenAudit(filepath.Join(t.TempDir(), "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { audit.Close() })
	ps := paygate.DefaultConfig().Policy
	srv := &paygate.Server{TopicPrefix: prefix, Gate: &paygate.Gate{
		Policy: &ps, Accounts: paygate.Accounts{"default": {payment.WxPay: prov}}, Audit: audit, Replica: "t",
	}}
	srv.Connect(mqttclient.Config{Brokers: mqttclient.NewBrokers([]string{url}), ClientID: mqtttest.Unique("paygate")})
	t.Cleanup(srv.Close)
	conn, err := gateway.Dial(gateway.Options{Broker: mqttclient.Config{Brokers: mqttclient.NewBrokers([]string{url}), ClientID: mqtttest.Unique("dev-gw")}, TopicPrefix: prefix, DeviceID: "dev-1", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The first ping also waits for paygate's subscription.
	for {
		if err := conn.Ping(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("no round trip: %v", err)
		}
	}
	return conn, conn.Providers(map[string][]payment.ProviderName{"default": {payment.WxPay, payment.Alipay}})
}

func TestProviderThroughPaygate(t *testing.T) {
	_, accounts := setup(t, &stub{}, 5*time.Second)
	p := accounts["default"][payment.WxPay]
	ctx := context.Background()
	otn := paygate.DerivedPrefix("dev-1") + "0001"

	c, err := p.Create(ctx, payment.Order{OutTradeNo: otn, Total: 100, Subject: "s", ExpireAt: time.Now().Add(time.Minute)})
	if err != nil || c.CodeURL != "weixin://x/"+otn {
		t.Fatalf("create: %+v %v", c, err)
	}
	st, err := p.Query(ctx, otn)
	if err != nil || st.State != payment.StatePaid || st.Amount.Total != 100 || st.Amount.PayerTotal != 90 || st.PaidAt.IsZero() {
		t.Fatalf("query: %+v %v", st, err)
	}
	cl, err := p.Close(ctx, otn)
	if err != nil || !cl.Paid {
		t.Fatalf("close: %+v %v", cl, err)
	}
	rs, err := p.Refund(ctx, payment.RefundRequest{OutTradeNo: otn, OutRefundNo: otn + "R1", Total: 100, Refund: 100})
	if err != nil || rs.State != payment.RefundProcessing || rs.Amount != 100 {
		t.Fatalf("refund: %+v %v", rs, err)
	}

	// A provider's refusal stays definite, with the provider's code.
	_, err = p.Create(ctx, payment.Order{OutTradeNo: otn + "2", Total: 100, Subject: "refuse", ExpireAt: time.Now().Add(time.Minute)})
	if !payment.IsRejected(err, "INVALID_REQUEST") {
		t.Errorf("provider refusal: %v", err)
	}
	// A provider failure stays unknown.
	_, err = p.Create(ctx, payment.Order{OutTradeNo: otn + "3", Total: 100, Subject: "fail", ExpireAt: time.Now().Add(time.Minute)})
	if err == nil || !payment.IsUnknown(err) {
		t.Errorf("provider failure: %v", err)
	}
	// A policy refusal is definite and names the rule.
	_, err = p.Query(ctx, "someone_elses_order")
	if !payment.IsRejected(err, "PAYGATE_POLICY_PREFIX") {
		t.Errorf("policy refusal: %v", err)
	}
	// A provider paygate has no account for.
	_, err = accounts["default"][payment.Alipay].Query(ctx, otn)
	if !payment.IsRejected(err, "PAYGATE_UNSUPPORTED_PROVIDER") {
		t.Errorf("unsupported provider: %v", err)
	}
	// Notifications paygate cannot verify are errors.
	if _, err := p.ParseNotify(ctx, http.Header{}, []byte("{}")); err == nil {
		t.Error("forged notification verified")
	}
}

// No reply in time is an unknown outcome, never a definite answer.
func TestTimeoutIsUnknown(t *testing.T) {
	s := &stub{slow: make(chan struct{})}
	defer close(s.slow)
	_, accounts := setup(t, s, time.Second)
	_, err := accounts["default"][payment.WxPay].Query(context.Background(), paygate.DerivedPrefix("dev-1")+"0001")
	if err == nil || !payment.IsUnknown(err) {
		t.Fatalf("timeout: %v", err)
	}
}

func TestNoBrokerIsUnknown(t *testing.T) {
	conn, err := gateway.Dial(gateway.Options{Broker: mqttclient.Config{Brokers: mqttclient.NewBrokers([]string{"tcp://127.0.0.1:1"}), ClientID: "x"}, TopicPrefix: "k", DeviceID: "d", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := conn.Providers(map[string][]payment.ProviderName{"default": {payment.WxPay}})["default"][payment.WxPay]
	_, err = p.Query(context.Background(), "abcdef")
	if !errors.Is(err, gateway.ErrNotConnected) || !payment.IsUnknown(err) {
		t.Fatalf("no broker: %v", err)
	}
}
