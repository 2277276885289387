package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
)

// With require_signed_requests the device only takes signed commands, and
// a controller can tell a genuine result from a forged or altered one with
// the HMAC check of docs/contract.md §3.5 (verifyResult, a few lines).
func TestSignedMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, daemonOpts{provider: "wxpay", signed: true, catalog: map[string]int{"massage_15": 600}})
	sign := func(otn string, fee int, typ string, ts int64) string {
		return hmacHex(e.key, otn, strconv.Itoa(fee), typ, strconv.FormatInt(ts, 10))
	}
	signedCreate := func(rid, otn string, fee int, ts int64, sig string) testrig.Message {
		req := createReq(rid, otn, fee, "", nil)
		if ts != 0 {
			req["ts"] = ts
		}
		if sig != "" {
			req["sig"] = sig
		}
		e.send("pay/create", req)
		return e.reply(rid)
	}
	now := time.Now().Unix()
	otn := otnPrefix + "signed_" + testrig.RandomHex(3)

	for _, c := range []struct {
		name, rid string
		fee       int
		ts        int64
		sig       string
		err       string
		field     string
	}{
		{"unsigned", "s1", 600, 0, "", "SIGNATURE_INVALID", "sig"},
		{"wrong key", "s2", 600, now, hmacHex([]byte("not-the-key"), otn, "600", "massage_15", strconv.FormatInt(now, 10)), "SIGNATURE_INVALID", "sig"},
		{"signed for another amount", "s3", 600, now, sign(otn, 1, "massage_15", now), "SIGNATURE_INVALID", "sig"},
		// A good signature on a ts outside the window: a create too old
		// (or too far ahead) to act on, refused without executing it.
		{"stale", "s4", 600, now - 400, sign(otn, 600, "massage_15", now-400), "COMMAND_STALE", "ts"},
		{"from the future", "s5", 600, now + 400, sign(otn, 600, "massage_15", now+400), "COMMAND_STALE", "ts"},
		{"stale and forged", "s7", 600, now - 400, sign(otn, 601, "massage_15", now-400), "SIGNATURE_INVALID", "sig"},
		{"price outside the catalog", "s6", 700, now, sign(otn, 700, "massage_15", now), "PRICE_MISMATCH", "data.total_fee"},
	} {
		r := signedCreate(c.rid, otn, c.fee, c.ts, c.sig)
		if r.Str("error") != c.err || r.Str("field") != c.field {
			t.Errorf("%s: %s, want %s on %s", c.name, r.Payload, c.err, c.field)
		}
	}
	if _, ok := e.sim.Order(payment.WxPay, otn); ok {
		t.Fatalf("a refused request reached the provider")
	}

	if r := signedCreate("ok", otn, 600, now, sign(otn, 600, "massage_15", now)); r.Num("code") != 0 {
		t.Fatalf("signed create refused: %s", r.Payload)
	}
	e.pay(payment.WxPay, otn, 0)
	real := e.result(otn, "paid", 20*time.Second)
	if !verifyResult(e.key, real) {
		t.Fatalf("genuine result does not verify: %s", real.Payload)
	}

	// Forgeries anyone on the bus can publish: the controller's check
	// rejects each one.
	forged := []map[string]any{}
	var tampered map[string]any
	json.Unmarshal(real.Payload, &tampered)
	tampered["total_fee"] = 1 // same sig, other amount
	forged = append(forged, tampered)
	var other map[string]any
	json.Unmarshal(real.Payload, &other)
	other["out_trade_no"] = "signed_other" // replayed onto another order
	forged = append(forged, other)
	forged = append(forged, map[string]any{"out_trade_no": "signed_fake", "status": "paid", "pay_type": "wxpay_native",
		"total_fee": 600, "transaction_id": "4200", "seq": 999, "ts": now, "sig": strings.Repeat("ab", 32)})
	forged = append(forged, map[string]any{"out_trade_no": "signed_nosig", "status": "paid", "total_fee": 600, "seq": 998, "ts": now})
	for i, f := range forged {
		e.send("pay/result", f)
		got := e.waitFor(10*time.Second, "forged result", func(m testrig.Message) bool {
			return m.Topic == "pay/result" && m.Num("seq") == mustNum(f["seq"]) && m.Str("out_trade_no") == f["out_trade_no"] && mustNum(m.Fields["total_fee"]) == mustNum(f["total_fee"])
		})
		if verifyResult(e.key, got) {
			t.Errorf("forgery %d verifies: %s", i, got.Payload)
		}
	}

	// Commands about money must be signed too: an unsigned ack is refused
	// and changes nothing; the signed one delivers.
	e.send("unlock/ack", map[string]any{"request_id": "a1", "out_trade_no": otn, "ok": true})
	if r := e.reply("a1"); r.Str("error") != "SIGNATURE_INVALID" {
		t.Errorf("unsigned ack: %s", r.Payload)
	}
	e.ack(otn, true)
	e.event(otn, "delivered", 10*time.Second)
}

func mustNum(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case int:
		return float64(n)
	case int64:
		return float64(n)
	case uint64:
		return float64(n)
	}
	return -1
}
