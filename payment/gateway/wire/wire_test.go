package wire

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

func TestTopics(t *testing.T) {
	if got := RequestFilter("kiosk"); got != "$share/paygate/kiosk/+/gw/req" {
		t.Errorf("filter %q", got)
	}
	for topic, want := range map[string]string{
		"kiosk/chair-1/gw/req":     "chair-1",
		"kiosk/a/b/gw/req":         "",
		"kiosk/chair-1/gw/reply":   "",
		"other/chair-1/gw/req":     "",
		"kiosk/+/gw/req":           "",
		"kiosk//gw/req":            "",
		"fleet/kiosk/dev_1/gw/req": "",
	} {
		got, ok := DeviceOf("kiosk", topic)
		if got != want || ok != (want != "") {
			t.Errorf("DeviceOf(%q) = %q, %v; want %q", topic, got, ok, want)
		}
	}
	if d, ok := DeviceOf("fleet/kiosk", "fleet/kiosk/dev_1/gw/req"); !ok || d != "dev_1" {
		t.Errorf("multi-level prefix: %q %v", d, ok)
	}
}

func TestDecodeRequest(t *testing.T) {
	good := Request{ID: "1", Op: OpCreate, PID: "default", Provider: payment.WxPay, Order: &Order{
		OutTradeNo: "abc__0001", Total: 100, Subject: "s", Type: "massage_15", ExpireAt: time.Now(),
		Other: map[string]any{"attach": "x", "n": json.Number("12345678901234567890")}}}
	r, err := DecodeRequest(Encode(good))
	if err != nil {
		t.Fatal(err)
	}
	if r.Order.Other["n"] != json.Number("12345678901234567890") {
		t.Errorf("other lost precision: %v", r.Order.Other["n"])
	}
	for name, payload := range map[string]string{
		"not json":      `{`,
		"trailing":      `{"id":"1","op":"ping"} {}`,
		"unknown field": `{"id":"1","op":"ping","device_id":"x"}`,
		"no id":         `{"op":"ping"}`,
		"unknown op":    `{"id":"1","op":"drain","pid":"default","provider":"wxpay"}`,
		"bad otn":       `{"id":"1","op":"query","pid":"default","provider":"wxpay","out_trade_no":"a-b-c-d"}`,
		"create w/o":    `{"id":"1","op":"create","pid":"default","provider":"wxpay"}`,
		"zero refund":   `{"id":"1","op":"refund","pid":"default","provider":"wxpay","refund":{"out_trade_no":"abc123","out_refund_no":"abc123R1","total":1,"refund":0}}`,
		"string total":  `{"id":"1","op":"refund","pid":"default","provider":"wxpay","refund":{"out_trade_no":"abc123","out_refund_no":"abc123R1","total":"1","refund":1}}`,
		"bad provider":  `{"id":"1","op":"query","pid":"default","provider":"paypal","out_trade_no":"abc123"}`,
		"notify w/o":    `{"id":"1","op":"verify_notify","pid":"default","provider":"alipay"}`,
	} {
		r, err := DecodeRequest([]byte(payload))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrUnsupportedProvider) {
			t.Errorf("%s: error %v is not a wire code", name, err)
		}
		if name != "not json" && name != "no id" && r.ID != "1" {
			t.Errorf("%s: id %q not recovered for the refusal", name, r.ID)
		}
	}
}

func TestCodes(t *testing.T) {
	rep := Reply{ID: "1", Error: ErrPolicyPrefix, Msg: "prefix: no"}
	err := rep.Err()
	if !errors.Is(err, ErrPolicyPrefix) || !ErrPolicyPrefix.Definite() {
		t.Errorf("%v", err)
	}
	for _, c := range []Code{ErrRateLimited, ErrProviderUnavailable, ErrInternal} {
		if c.Definite() {
			t.Errorf("%s is definite", c)
		}
	}
	if (&Reply{ID: "1"}).Err() != nil {
		t.Error("success has an error")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"id":"1","op":"ping"}`))
	f.Add(Encode(Request{ID: "2", Op: OpRefund, PID: "p", Provider: payment.Alipay, Refund: &Refund{OutTradeNo: "abcdef", OutRefundNo: "abcdefR1", Total: 2, Refund: 1}}))
	f.Add([]byte(`{"id":"3","op":"verify_notify","pid":"p","provider":"wxpay","notify":{"headers":{"A":["b"]},"body":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		// What decodes is valid and survives a round trip.
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded but invalid: %v", err)
		}
		if _, err := DecodeRequest(Encode(r)); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"id":"1","status":{"state":3,"amount":{"Total":100}}}`))
	f.Add([]byte(`{"id":"1","error":"POLICY_PREFIX","msg":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err != nil {
			return
		}
		if r.ID == "" {
			t.Fatal("reply without id accepted")
		}
		_ = r.Err()
	})
}
