package contract

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

var testLimits = Limits{MaxFee: 100000, DefaultExpire: 5 * time.Minute}

// order builds a valid data object and lets a test replace one field with a
// raw JSON value (or delete it with "").
func order(field, raw string) []byte {
	m := map[string]json.RawMessage{
		"out_trade_no": json.RawMessage(`"chair001_0001"`),
		"total_fee":    json.RawMessage(`1000`),
		"subject":      json.RawMessage(`"按摩 15 分钟"`),
		"type":         json.RawMessage(`"massage_15"`),
	}
	if field != "" {
		if raw == "" {
			delete(m, field)
		} else {
			m[field] = json.RawMessage(raw)
		}
	}
	b, _ := json.Marshal(m)
	return b
}

func TestParseOrderRequestValid(t *testing.T) {
	o, err := ParseOrderRequest([]byte(`{"out_trade_no":"chair001_0001","total_fee":1000,"subject":"按摩 15 分钟",
		"type":"massage_15","custom":{"seat": 3},"other":{"attach":"x","n":12345678901234567},"pid":"default",
		"expire_seconds":300,"openid":"ignored"}`), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if o.OutTradeNo != "chair001_0001" || o.TotalFee != 1000 || o.Subject != "按摩 15 分钟" || o.Type != "massage_15" {
		t.Errorf("decoded %+v", o)
	}
	if string(o.Custom) != `{"seat":3}` {
		t.Errorf("custom = %s", o.Custom)
	}
	if n, ok := o.Other["n"].(json.Number); !ok || n.String() != "12345678901234567" {
		t.Errorf("other.n = %#v, want the exact json.Number", o.Other["n"])
	}
	if o.PID != "default" || o.Expire != 5*time.Minute {
		t.Errorf("pid %q expire %v", o.PID, o.Expire)
	}
}

func TestParseOrderRequestDefaults(t *testing.T) {
	o, err := ParseOrderRequest(order("", ""), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if o.PID != "default" || o.Expire != testLimits.DefaultExpire || o.Custom != nil || o.Other != nil {
		t.Errorf("defaults: %+v", o)
	}
}

func TestParseOrderRequestRejects(t *testing.T) {
	tests := []struct {
		name, field, raw string
		wantField        string
		wantCode         ErrorName
	}{
		{"out_trade_no missing", "out_trade_no", "", "data.out_trade_no", ErrInvalidArgument},
		{"out_trade_no too short", "out_trade_no", `"abc12"`, "data.out_trade_no", ErrInvalidArgument},
		{"out_trade_no 6 ok boundary", "out_trade_no", `"abc123"`, "", ""},
		{"out_trade_no 32 ok boundary", "out_trade_no", `"` + strings.Repeat("a", 32) + `"`, "", ""},
		{"out_trade_no too long", "out_trade_no", `"` + strings.Repeat("a", 33) + `"`, "data.out_trade_no", ErrInvalidArgument},
		{"out_trade_no dash", "out_trade_no", `"chair-0001"`, "data.out_trade_no", ErrInvalidArgument},
		{"out_trade_no pipe", "out_trade_no", `"chair|0001"`, "data.out_trade_no", ErrInvalidArgument},
		{"out_trade_no non-ASCII", "out_trade_no", `"订单订单订单"`, "data.out_trade_no", ErrInvalidArgument},
		{"out_trade_no number", "out_trade_no", `123456`, "data.out_trade_no", ErrInvalidArgument},
		{"total_fee missing", "total_fee", "", "data.total_fee", ErrInvalidArgument},
		{"total_fee zero", "total_fee", `0`, "data.total_fee", ErrFeeOutOfRange},
		{"total_fee negative", "total_fee", `-100`, "data.total_fee", ErrFeeOutOfRange},
		{"total_fee float", "total_fee", `10.5`, "data.total_fee", ErrInvalidArgument},
		{"total_fee float integral", "total_fee", `10.0`, "data.total_fee", ErrInvalidArgument},
		{"total_fee exponent", "total_fee", `1e3`, "data.total_fee", ErrInvalidArgument},
		{"total_fee string", "total_fee", `"1000"`, "data.total_fee", ErrInvalidArgument},
		{"total_fee bool", "total_fee", `true`, "data.total_fee", ErrInvalidArgument},
		{"total_fee null", "total_fee", `null`, "data.total_fee", ErrInvalidArgument},
		{"total_fee over max", "total_fee", `100001`, "data.total_fee", ErrFeeOutOfRange},
		{"total_fee at max", "total_fee", `100000`, "", ""},
		{"total_fee overflow", "total_fee", `99999999999999999999`, "data.total_fee", ErrInvalidArgument},
		{"subject missing", "subject", "", "data.subject", ErrInvalidArgument},
		{"subject empty", "subject", `""`, "data.subject", ErrInvalidArgument},
		{"subject 127 CJK", "subject", `"` + strings.Repeat("按", 127) + `"`, "", ""},
		{"subject 128 CJK", "subject", `"` + strings.Repeat("按", 128) + `"`, "data.subject", ErrInvalidArgument},
		{"subject control char", "subject", `"a\nb"`, "data.subject", ErrInvalidArgument},
		{"type missing", "type", "", "data.type", ErrInvalidArgument},
		{"type upper", "type", `"Massage"`, "data.type", ErrInvalidArgument},
		{"type too long", "type", `"` + strings.Repeat("a", 33) + `"`, "data.type", ErrInvalidArgument},
		{"custom array", "custom", `[1,2]`, "data.custom", ErrInvalidArgument},
		{"custom too big", "custom", `{"k":"` + strings.Repeat("x", 4100) + `"}`, "data.custom", ErrInvalidArgument},
		{"custom null ok", "custom", `null`, "", ""},
		{"other string", "other", `"x"`, "data.other", ErrInvalidArgument},
		{"pid bad", "pid", `"a b"`, "data.pid", ErrInvalidArgument},
		{"pid number", "pid", `7`, "data.pid", ErrInvalidArgument},
		{"expire too short", "expire_seconds", `59`, "data.expire_seconds", ErrInvalidArgument},
		{"expire too long", "expire_seconds", `7201`, "data.expire_seconds", ErrInvalidArgument},
		{"expire float", "expire_seconds", `60.5`, "data.expire_seconds", ErrInvalidArgument},
		{"expire string", "expire_seconds", `"300"`, "data.expire_seconds", ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseOrderRequest(order(tt.field, tt.raw), testLimits)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("want *Error, got %v", err)
			}
			if fe.Field != tt.wantField || fe.Name != tt.wantCode {
				t.Errorf("got field %q code %q (%v), want %q %q", fe.Field, fe.Name, err, tt.wantField, tt.wantCode)
			}
		})
	}
}

func TestParseOrderRequestNotAnObject(t *testing.T) {
	for _, in := range []string{``, `null`, `[]`, `"x"`, `{`, `{"total_fee":1000`} {
		var fe *Error
		if _, err := ParseOrderRequest([]byte(in), testLimits); !errors.As(err, &fe) || fe.Field != "data" {
			t.Errorf("%q: got %v, want a data error", in, err)
		}
	}
}

func FuzzParseOrderRequest(f *testing.F) {
	f.Add(order("", ""))
	f.Add([]byte(`{"out_trade_no":"chair001_0001","total_fee":1000,"subject":"s","type":"t","custom":{"a":[1,{"b":null}]},"other":{"attach":"x"},"expire_seconds":60}`))
	f.Add([]byte(`{"total_fee":1e400}`))
	f.Add([]byte(`{"out_trade_no":"\u0000\u0000\u0000\u0000\u0000\u0000","total_fee":-0}`))
	f.Add([]byte("{\"subject\":\"\xff\xfe\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := ParseOrderRequest(data, testLimits)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "data") {
				t.Fatalf("error %v is not a *Error naming a data field", err)
			}
			return
		}
		// Whatever is accepted must satisfy every rule both providers enforce.
		if !payment.ValidOutTradeNo(o.OutTradeNo) || o.TotalFee < 1 || o.TotalFee > testLimits.MaxFee {
			t.Fatalf("accepted invalid order %+v", o)
		}
		if o.Expire < MinExpire || o.Expire > MaxExpire || o.Subject == "" || o.PID == "" {
			t.Fatalf("accepted invalid order %+v", o)
		}
		if len(o.Custom) > MaxCustomBytes {
			t.Fatalf("custom of %d bytes accepted", len(o.Custom))
		}
	})
}
