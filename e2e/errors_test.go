package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// Every error name of docs/contract.md §3.4 that a message can provoke, each from a real
// message published over the broker: exactly one reply per command, with
// the stable name, code and field, and the daemon healthy afterwards.
func TestErrorReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay", resultKey: true, catalog: map[string]int{"massage_15": 100, "wash": 500}})

	raw := func(s string) []byte { return []byte(s) }
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	create := func(rid, otn string, fee int, provider string, extra map[string]any) []byte {
		return js(createReq(rid, otn, fee, provider, extra))
	}
	now := time.Now().Unix()
	dup := otnPrefix + "dup_" + testrig.RandomHex(3)
	fin := otnPrefix + "fin_" + testrig.RandomHex(3)

	type tc struct {
		name    string
		topic   string
		payload []byte
		rid     string // "" when the request id cannot be read
		err     string // "" = success
		code    float64
		field   string
		setup   func()
		after   func(r testrig.Message)
	}
	cases := []tc{
		{name: "truncated JSON", topic: "pay/create", payload: raw(`{"request_id":"e1","data":{`), err: "BAD_JSON", code: 400},
		{name: "not an object", topic: "pay/query", payload: raw(`["e2"]`), err: "BAD_JSON", code: 400},
		{name: "not UTF-8", topic: "pay/create", payload: raw("{\"request_id\":\"e3\",\"data\":\"\xff\xfe\xfd\"}"), rid: "e3", err: "BAD_JSON", code: 400},
		{name: "latin-1 subject", topic: "pay/create", payload: raw("{\"request_id\":\"e3b\",\"data\":{\"subject\":\"caf\xe9\"}}"), rid: "e3b", err: "BAD_JSON", code: 400},
		{name: "over 16 KiB", topic: "pay/create", payload: raw(`{"request_id":"e4","pad":"` + strings.Repeat("x", 16<<10) + `"}`), rid: "e4", err: "PAYLOAD_TOO_LARGE", code: 400},
		{name: "empty payload", topic: "pay/create", payload: []byte{}, err: "BAD_JSON", code: 400},
		{name: "JSON null", topic: "pay/cancel", payload: raw(`null`), err: "BAD_JSON", code: 400},
		{name: "deep nesting", topic: "pay/create", payload: raw(strings.Repeat("[", 8000) + strings.Repeat("]", 8000)), err: "BAD_JSON", code: 400},
		{name: "deep nesting, unbalanced", topic: "pay/create", payload: raw(strings.Repeat(`{"a":`, 3000)), err: "BAD_JSON", code: 400},
		{name: "exactly 16 KiB", topic: "pay/query", payload: padTo(`{"request_id":"e4a","out_trade_no":"nosuch_0002","pad":"`, `"}`, 16<<10), rid: "e4a", err: "ORDER_NOT_FOUND", code: 400},
		{name: "16 KiB + 1", topic: "pay/query", payload: padTo(`{"request_id":"e4b","out_trade_no":"nosuch_0002","pad":"`, `"}`, 16<<10+1), rid: "e4b", err: "PAYLOAD_TOO_LARGE", code: 400},
		{name: "bad out_trade_no", topic: "pay/create", payload: create("e5", "no!", 100, "", nil), rid: "e5", err: "INVALID_ARGUMENT", code: 400, field: "data.out_trade_no"},
		{name: "fee as string", topic: "pay/create", payload: raw(`{"request_id":"e6","data":{"out_trade_no":"abc_12345","total_fee":"100","subject":"s","type":"massage_15"}}`), rid: "e6", err: "INVALID_ARGUMENT", code: 400, field: "data.total_fee"},
		{name: "fee as float", topic: "pay/create", payload: raw(`{"request_id":"e7","data":{"out_trade_no":"abc_12345","total_fee":100.0,"subject":"s","type":"massage_15"}}`), rid: "e7", err: "INVALID_ARGUMENT", code: 400, field: "data.total_fee"},
		{name: "no subject", topic: "pay/create", payload: raw(`{"request_id":"e8","data":{"out_trade_no":"abc_12345","total_fee":100,"type":"massage_15"}}`), rid: "e8", err: "INVALID_ARGUMENT", code: 400, field: "data.subject"},
		{name: "ack without ok", topic: "unlock/ack", payload: raw(`{"request_id":"e9","out_trade_no":"abc_12345"}`), rid: "e9", err: "INVALID_ARGUMENT", code: 400, field: "ok"},
		{name: "notify without body", topic: "pay/notify", payload: raw(`{"request_id":"e10","provider":"wxpay","headers":{}}`), rid: "e10", err: "INVALID_ARGUMENT", code: 400, field: "body"},
		{name: "unknown provider", topic: "pay/create", payload: create("e11", "abc_12345", 100, "paypal", nil), rid: "e11", err: "UNSUPPORTED_PROVIDER", code: 400, field: "provider"},
		{name: "notify from an unknown provider", topic: "pay/notify", payload: raw(`{"request_id":"e12","provider":"unionpay","body":"x"}`), rid: "e12", err: "UNSUPPORTED_PROVIDER", code: 400},
		{name: "unknown merchant", topic: "pay/create", payload: create("e13", "abc_12345", 100, "", map[string]any{"pid": "nope"}), rid: "e13", err: "UNKNOWN_MERCHANT", code: 400, field: "data.pid"},
		{name: "fee above max", topic: "pay/create", payload: create("e14", "abc_12345", 100001, "", nil), rid: "e14", err: "FEE_OUT_OF_RANGE", code: 400, field: "data.total_fee"},
		{name: "fee zero", topic: "pay/create", payload: create("e15", "abc_12345", 0, "", nil), rid: "e15", err: "FEE_OUT_OF_RANGE", code: 400, field: "data.total_fee"},
		{name: "catalog price", topic: "pay/create", payload: create("e16", "abc_12345", 200, "", nil), rid: "e16", err: "PRICE_MISMATCH", code: 400, field: "data.total_fee"},
		{name: "type not in catalog", topic: "pay/create", payload: create("e17", "abc_12345", 100, "", map[string]any{"type": "vip_99"}), rid: "e17", err: "PRICE_MISMATCH", code: 400, field: "data.type"},
		{name: "query unknown order", topic: "pay/query", payload: raw(`{"request_id":"e18","out_trade_no":"nosuch_0001"}`), rid: "e18", err: "ORDER_NOT_FOUND", code: 400},
		{name: "cancel unknown order", topic: "pay/cancel", payload: raw(`{"request_id":"e19","out_trade_no":"nosuch_0001"}`), rid: "e19", err: "ORDER_NOT_FOUND", code: 400},
		{name: "bad signature", topic: "pay/create", payload: create("e20", "abc_12345", 100, "", nil), rid: "e20", err: "SIGNATURE_INVALID", code: 400, field: "sig"},
		{name: "forged notification", topic: "pay/notify", payload: js(map[string]any{"request_id": "e21", "provider": "wxpay",
			"headers": map[string]string{"Wechatpay-Serial": keys.WxPublicKeyID, "Wechatpay-Signature": "Zm9yZ2Vk", "Wechatpay-Timestamp": "1700000000", "Wechatpay-Nonce": "n"},
			"body":    `{"id":"x","event_type":"TRANSACTION.SUCCESS","resource":{"ciphertext":"AAAA","nonce":"n","associated_data":"transaction"}}`}),
			rid: "e21", err: "SIGNATURE_INVALID", code: 400},
		{name: "pending order", topic: "pay/create", payload: create("e22", dup, 100, "", nil), rid: "e22"},
		{name: "re-create, other subject", topic: "pay/create", payload: create("e23", dup, 100, "", map[string]any{"subject": "Other"}), rid: "e23", err: "DUPLICATE_CONFLICT", code: 409},
		{name: "cancel it", topic: "pay/cancel", payload: js(map[string]any{"request_id": "e24", "out_trade_no": dup}), rid: "e24",
			after: func(testrig.Message) { e.result(dup, "cancelled", 20*time.Second) }},
		{name: "cancel an ended order", topic: "pay/cancel", payload: js(map[string]any{"request_id": "e25", "out_trade_no": dup}), rid: "e25", err: "ORDER_FINISHED", code: 409},
		{name: "create an ended order", topic: "pay/create", payload: create("e26", dup, 100, "", nil), rid: "e26", err: "ORDER_FINISHED", code: 409},
		{name: "provider down", topic: "pay/create", payload: create("e27", fin, 100, "", nil), rid: "e27", err: "PROVIDER_UNAVAILABLE", code: 503,
			setup: func() {
				if err := e.sim.InjectFault(paysim.Fault{Provider: payment.WxPay, API: "native", Kind: paysim.Fault5xx}); err != nil {
					t.Fatal(err)
				}
			},
			after: func(testrig.Message) { e.sim.ClearFaults() }},
		{name: "provider refuses", topic: "pay/create", payload: create("e28", otnPrefix+"rej_"+testrig.RandomHex(3), 100, "alipay", map[string]any{"subject": "A/B=C"}), rid: "e28", err: "PROVIDER_REJECTED", code: 409},
	}
	// The signed-request case: a syntactically valid but wrong sig.
	for i := range cases {
		if cases[i].rid == "e20" {
			var m map[string]any
			json.Unmarshal(cases[i].payload, &m)
			m["ts"], m["sig"] = now, strings.Repeat("ab", 32)
			cases[i].payload = js(m)
		}
	}

	sent := 0
	for _, c := range cases {
		if c.setup != nil {
			c.setup()
		}
		before := len(e.find(isReply))
		e.send(c.topic, c.payload)
		sent++
		r := e.waitFor(20*time.Second, "reply to "+c.name, func(m testrig.Message) bool {
			return isReply(m) && len(e.find(isReply)) > before
		})
		r = e.find(isReply)[before]
		if r.Str("request_id") != c.rid {
			t.Errorf("%s: reply for request %q, want %q: %s", c.name, r.Str("request_id"), c.rid, r.Payload)
		}
		if r.Str("error") != c.err || r.Num("code") != c.code {
			t.Errorf("%s: got error %q code %v, want %q %v: %s", c.name, r.Str("error"), r.Num("code"), c.err, c.code, r.Payload)
		}
		if c.field != "" && r.Str("field") != c.field {
			t.Errorf("%s: field %q, want %q: %s", c.name, r.Str("field"), c.field, r.Payload)
		}
		if c.err != "" && r.Str("msg") == "" {
			t.Errorf("%s: no human msg: %s", c.name, r.Payload)
		}
		if c.after != nil {
			c.after(r)
		}
	}
	// Nothing was left half-done: the refused provider orders are closed or
	// never existed, and no refused create produced a QR.
	if o, ok := e.sim.Order(payment.WxPay, "abc_12345"); ok {
		t.Errorf("a refused create reached the provider: %+v", o)
	}

	// The daemon is healthy: a normal order still goes through.
	e.healthy(payment.WxPay)

	// Exactly one reply per command (late duplicates would show up here).
	time.Sleep(500 * time.Millisecond)
	replies := e.find(isReply)
	healthReplies := len(e.find(func(m testrig.Message) bool {
		// relay-: the health order's notification, which paygate
		// forwards in gateway mode.
		rid := m.Str("request_id")
		return isReply(m) && (strings.HasPrefix(rid, "health-") || strings.HasPrefix(rid, "ack-") || strings.HasPrefix(rid, "relay-"))
	}))
	if got := len(replies) - healthReplies; got != sent {
		t.Errorf("%d replies to %d commands:\n%s", got, sent, e.ctl.Dump())
	}
}

func isReply(m testrig.Message) bool { return m.Topic == "pay/reply" }

// padTo builds head + x… + tail of exactly n bytes.
func padTo(head, tail string, n int) []byte {
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}
