package contract

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// What a sender marshals, the decoders read back unchanged.
func TestPayloadsRoundTrip(t *testing.T) {
	enc := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c, err := DecodeCreate(enc(CreatePayload{RequestID: "r1", Provider: "any", NeedQRcode: true, TS: 5, Sig: SignCreate([]byte("k"), "chair001_0001", 1000, "massage_15", 5),
		Data: CreateData{OutTradeNo: "chair001_0001", TotalFee: 1000, Subject: "s", Type: "massage_15", Custom: json.RawMessage(`{"seat":3}`), PID: "p1", ExpireSeconds: 120}}), testLimits)
	if err != nil || c.RequestID != "r1" || c.Provider != "any" || c.Order.TotalFee != 1000 || string(c.Order.Custom) != `{"seat":3}` ||
		c.Order.PID != "p1" || c.Order.Expire != 2*time.Minute || c.Verify([]byte("k"), time.Unix(5, 0)) != nil {
		t.Fatalf("create %+v %v", c, err)
	}
	q, err := DecodeCancel(enc(OrderPayload{RequestID: "r2", OutTradeNo: "chair001_0001"}))
	if err != nil || q.OutTradeNo != "chair001_0001" || q.HasSig() {
		t.Fatalf("cancel %+v %v", q, err)
	}
	r, err := DecodeRefund(enc(RefundPayload{RequestID: "r3", OutTradeNo: "chair001_0001", RefundFee: 50, RefundDesc: "d", OutRefundNo: "R1"}))
	if err != nil || r.RefundFee != 50 || r.RefundDesc != "d" || r.OutRefundNo != "R1" {
		t.Fatalf("refund %+v %v", r, err)
	}
	a, err := DecodeAck(enc(AckPayload{RequestID: "r4", OutTradeNo: "chair001_0001", OK: false, Reason: "jam"}))
	if err != nil || a.OK || a.Reason != "jam" {
		t.Fatalf("ack %+v %v", a, err)
	}
	n, err := DecodeNotify(enc(NotifyPayload{RequestID: "r5", Provider: "alipay", Headers: map[string]string{"Content-Type": "x"}, Body: "a=b"}))
	if err != nil || n.Header.Get("content-type") != "x" || string(n.Body) != "a=b" {
		t.Fatalf("notify %+v %v", n, err)
	}
	o, err := DecodeOrders(enc(OrdersPayload{RequestID: "r6", State: "paid", Flag: FlagNoAck, Limit: 7, After: "chair001_0001"}))
	if err != nil || o.State != "paid" || o.Flag != FlagNoAck || o.Limit != 7 || o.After != "chair001_0001" {
		t.Fatalf("orders %+v %v", o, err)
	}
	rc, err := DecodeReconcile(enc(ReconcilePayload{RequestID: "r7", Since: "2025-01-02T15:04:05+08:00"}), time.Now())
	if err != nil || rc.Since.Unix() != 1735801445 {
		t.Fatalf("reconcile %+v %v", rc, err)
	}
}

// An *Error matches its name with errors.Is.
func TestErrorIsName(t *testing.T) {
	_, err := DecodeQuery([]byte(`{`))
	if !errors.Is(err, ErrBadJSON) || errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("%v", err)
	}
}
