package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// The whole happy path for each provider, checked field by field as a
// controller would: create → a QR that a standard reader decodes to the
// provider's code → pay → a signed paid result → ack → delivered.
func TestPaidDelivered(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		provider payment.ProviderName
		payType  string
		codeKey  string
		prefix   string
	}{
		{payment.WxPay, "wxpay_native", "code_url", "weixin://"},
		{payment.Alipay, "alipay_precreate", "qr_code", "https://qr.alipay.com/"},
	} {
		t.Run(string(tc.provider), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, daemonOpts{resultKey: true})
			otn := otnPrefix + "paid_" + string(tc.provider) + "_" + testrig.RandomHex(3)
			rep := e.create("c1", otn, 1250, string(tc.provider))

			info, _ := rep.Fields["orderInfo"].(map[string]any)
			code, _ := info[tc.codeKey].(string)
			if !strings.HasPrefix(code, tc.prefix) {
				t.Fatalf("orderInfo.%s = %q, want a %s… code: %s", tc.codeKey, code, tc.prefix, rep.Payload)
			}
			for k, want := range map[string]any{"action": "create", "out_trade_no": otn, "pay_type": tc.payType, "needQRcode": true, "total_fee": 1250.0} {
				if rep.Fields[k] != want {
					t.Errorf("reply %s = %v, want %v", k, rep.Fields[k], want)
				}
			}
			if exp, err := time.Parse(time.RFC3339, rep.Str("expires_at")); err != nil || time.Until(exp) < 4*time.Minute || time.Until(exp) > 6*time.Minute {
				t.Errorf("expires_at %q: want about 5 minutes from now", rep.Str("expires_at"))
			}
			if got := decodeQR(t, dataURLPNG(t, rep.Str("qrcodeImage"))); got != code {
				t.Fatalf("qrcodeImage decodes to %q, want orderInfo.%s %q", got, tc.codeKey, code)
			}
			// The QR on the device's own display must decode to the same code.
			waitDisplay(t, filepath.Join(e.dir, "qr.png"), code)

			if tc.provider == payment.Alipay {
				if err := e.sim.Scan(otn); err != nil {
					t.Fatal(err)
				}
			}
			e.pay(tc.provider, otn, 0)
			res := e.result(otn, "paid", 20*time.Second)
			sim := e.simOrder(tc.provider, otn)
			for k, want := range map[string]any{
				"out_trade_no": otn, "status": "paid", "pay_type": tc.payType, "total_fee": 1250.0,
				"transaction_id": sim.TransactionID, "type": "massage_15",
			} {
				if res.Fields[k] != want {
					t.Errorf("result %s = %v, want %v", k, res.Fields[k], want)
				}
			}
			if sim.TransactionID == "" {
				t.Errorf("paysim has no transaction id: %+v", sim)
			}
			var custom map[string]any
			_ = json.Unmarshal(mustJSON(res.Fields["custom"]), &custom)
			if custom["seat"] != 3.0 || custom["note"] != "e2e" {
				t.Errorf("custom not echoed: %s", res.Payload)
			}
			if at, err := time.Parse(time.RFC3339, res.Str("paid_at")); err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Minute {
				t.Errorf("paid_at %q is not a recent RFC 3339 time", res.Str("paid_at"))
			}
			if ts := int64(res.Num("ts")); ts < time.Now().Add(-time.Minute).Unix() || ts > time.Now().Add(time.Minute).Unix() {
				t.Errorf("ts %d is not now", ts)
			}
			if res.Num("seq") < 1 {
				t.Errorf("seq %v", res.Fields["seq"])
			}
			if !verifyResult(e.key, res) {
				t.Errorf("result signature does not verify: %s", res.Payload)
			}

			e.ack(otn, true)
			ev := e.event(otn, "delivered", 10*time.Second)
			if ev.Str("from") != "paid" {
				t.Errorf("delivered event %s", ev.Payload)
			}
			// Acked: no more re-publications, and never a second outcome.
			e.checkSeqs(otn)
			if o := e.simOrder(tc.provider, otn); o.Refunded != 0 {
				t.Errorf("delivered order refunded at paysim: %+v", o)
			}
		})
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// waitDisplay waits until the png display output shows a QR code that
// decodes to want (it shows the idle screen first).
func waitDisplay(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	got := ""
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			if got = decodeQR(t, b); got == want {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("display %s shows %q, want %q", path, got, want)
}

var _ = paysim.OrderInfo{}
