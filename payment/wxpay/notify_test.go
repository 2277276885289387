package wxpay_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/wxsim"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

func txPlain(k *paysim.Keys, outTradeNo string, paid int64) []byte {
	b, _ := json.Marshal(map[string]any{
		"appid": k.WxAppID, "mchid": k.WxMchID, "out_trade_no": outTradeNo,
		"transaction_id": "4200000000000000000000000001", "trade_type": "NATIVE", "trade_state": "SUCCESS",
		"trade_state_desc": "支付成功", "bank_type": "OTHERS", "success_time": "2026-01-02T10:14:09+08:00",
		"payer":  map[string]any{"openid": "oUser"},
		"amount": map[string]any{"total": 1250, "payer_total": paid, "currency": "CNY", "payer_currency": "CNY"},
	})
	return b
}

func refundPlain(k *paysim.Keys, status string) []byte {
	b, _ := json.Marshal(map[string]any{
		"mchid": k.WxMchID, "out_trade_no": "ORDER_1", "transaction_id": "4200000000000000000000000001",
		"out_refund_no": "ORDER_1R", "refund_id": "50000000000000000000000000001", "refund_status": status,
		"success_time": "2026-01-02T10:20:00+08:00", "user_received_account": "支付用户零钱",
		"amount": map[string]any{"total": 1250, "refund": 1250, "payer_total": 1250, "payer_refund": 1250},
	})
	return b
}

// resign signs body with key the way WeChat signs notifications.
func resign(t testing.TB, h http.Header, body []byte, key *rsa.PrivateKey, ts time.Time) {
	t.Helper()
	nonce := "n" + strconv.FormatInt(time.Now().UnixNano(), 36)
	tss := strconv.FormatInt(ts.Unix(), 10)
	sum := sha256.Sum256([]byte(tss + "\n" + nonce + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	h.Set("Wechatpay-Timestamp", tss)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(sig))
}

// notifyFixture returns the WeChat Pay simulator that builds the
// notifications, an adapter and the keys they share.
func notifyFixture(t testing.TB) (*wxsim.Sim, *wxpay.Client, *paysim.Keys) {
	t.Helper()
	k := simkeys.Get(t)
	sim, err := paysim.New(paysim.Options{Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	c, err := wxpay.New(baseConfig(k))
	if err != nil {
		t.Fatal(err)
	}
	return wxsim.Register(sim), c, k
}

func TestParseNotifyValid(t *testing.T) {
	sim, c, k := notifyFixture(t)
	ctx := context.Background()

	h, body, err := sim.Notification("transaction", txPlain(k, "ORDER_1", 1250), "")
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.ParseNotify(ctx, h, body)
	if err != nil {
		t.Fatal(err)
	}
	want := payment.Notification{Kind: payment.NotifyPayment, OutTradeNo: "ORDER_1", State: payment.StatePaid, Amount: payment.Amounts{Total: 1250, PayerTotal: 1250, Receipt: 1250}, TransactionID: "4200000000000000000000000001", ID: n.ID}
	if n != want || n.ID == "" {
		t.Fatalf("payment notification = %+v, want %+v", n, want)
	}

	// Header names arrive lower-cased through a relay.
	lower := http.Header{}
	for k, v := range h {
		lower[strings.ToLower(k)] = v
	}
	if _, err := c.ParseNotify(ctx, lower, body); err != nil {
		t.Fatalf("lower-case header names: %v", err)
	}

	for status, want := range map[string]payment.RefundState{"SUCCESS": payment.RefundSuccess, "CLOSED": payment.RefundClosed, "ABNORMAL": payment.RefundAbnormal} {
		h, body, err := sim.Notification("refund", refundPlain(k, status), "")
		if err != nil {
			t.Fatal(err)
		}
		n, err := c.ParseNotify(ctx, h, body)
		if err != nil {
			t.Fatalf("refund %s: %v", status, err)
		}
		if n.Kind != payment.NotifyRefund || n.OutTradeNo != "ORDER_1" || n.OutRefundNo != "ORDER_1R" || n.RefundState != want {
			t.Fatalf("refund %s notification = %+v", status, n)
		}
	}
}

func TestParseNotifyRejectsForgeries(t *testing.T) {
	sim, c, k := notifyFixture(t)
	other, err := paysim.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	otherKeyCfg := baseConfig(k)
	otherKeyCfg.APIv3Key = other.WxAPIv3Key
	otherAPIv3, err := wxpay.New(otherKeyCfg)
	if err != nil {
		t.Fatal(err)
	}
	valid := func() (http.Header, []byte) {
		h, b, err := sim.Notification("transaction", txPlain(k, "ORDER_1", 1250), "")
		if err != nil {
			t.Fatal(err)
		}
		return h, b
	}
	editCiphertext := func(b []byte) []byte {
		var env map[string]any
		_ = json.Unmarshal(b, &env)
		res := env["resource"].(map[string]any)
		ct, _ := base64.StdEncoding.DecodeString(res["ciphertext"].(string))
		ct[5] ^= 1
		res["ciphertext"] = base64.StdEncoding.EncodeToString(ct)
		out, _ := json.Marshal(env)
		return out
	}

	cases := []struct {
		name   string
		client *wxpay.Client
		build  func() (http.Header, []byte)
	}{
		{"bad signature", c, func() (http.Header, []byte) {
			h, b, _ := sim.Notification("transaction", txPlain(k, "ORDER_1", 1250), paysim.FaultBadSign)
			return h, b
		}},
		{"stale timestamp", c, func() (http.Header, []byte) {
			h, b, _ := sim.Notification("transaction", txPlain(k, "ORDER_1", 1250), paysim.FaultStaleTS)
			return h, b
		}},
		{"future timestamp", c, func() (http.Header, []byte) {
			h, b := valid()
			resign(t, h, b, k.WxPlatform, time.Now().Add(6*time.Minute))
			return h, b
		}},
		{"signed with another key", c, func() (http.Header, []byte) {
			h, b := valid()
			resign(t, h, b, other.WxPlatform, time.Now())
			return h, b
		}},
		{"body edited after signing", c, func() (http.Header, []byte) {
			h, b := valid()
			return h, bytes.Replace(b, []byte("TRANSACTION.SUCCESS"), []byte("TRANSACTION.SUCCESX"), 1)
		}},
		{"ciphertext edited and re-signed", c, func() (http.Header, []byte) {
			h, b := valid()
			b = editCiphertext(b)
			resign(t, h, b, k.WxPlatform, time.Now())
			return h, b
		}},
		{"wrong APIv3 key", otherAPIv3, valid},
		{"wrong serial", c, func() (http.Header, []byte) {
			h, b := valid()
			h.Set("Wechatpay-Serial", "PUB_KEY_ID_0000000000000000000000000000000009")
			return h, b
		}},
		{"missing signature", c, func() (http.Header, []byte) {
			h, b := valid()
			h.Del("Wechatpay-Signature")
			return h, b
		}},
		{"unknown signature type", c, func() (http.Header, []byte) {
			h, b := valid()
			h.Set("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3")
			return h, b
		}},
		{"other merchant's payment", c, func() (http.Header, []byte) {
			plain := txPlain(k, "ORDER_1", 1250)
			plain = bytes.Replace(plain, []byte(k.WxMchID), []byte("1999999999"), 1)
			h, b, _ := sim.Notification("transaction", plain, "")
			return h, b
		}},
		{"success event with NOTPAY state", c, func() (http.Header, []byte) {
			plain := bytes.Replace(txPlain(k, "ORDER_1", 1250), []byte(`"trade_state":"SUCCESS"`), []byte(`"trade_state":"NOTPAY"`), 1)
			h, b, _ := sim.Notification("transaction", plain, "")
			return h, b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, b := tc.build()
			n, err := tc.client.ParseNotify(context.Background(), h, b)
			if err == nil {
				t.Fatalf("accepted: %+v", n)
			}
			t.Log(err)
			if strings.Contains(err.Error(), k.WxAPIv3Key) {
				t.Fatal("error leaks the APIv3 key")
			}
		})
	}
}

// FuzzParseNotify feeds ParseNotify arbitrary bodies and header values. It
// must never panic, and must never accept anything it did not verify.
func FuzzParseNotify(f *testing.F) {
	sim, c, k := notifyFixture(f)
	h, body, err := sim.Notification("transaction", txPlain(k, "ORDER_1", 1250), "")
	if err != nil {
		f.Fatal(err)
	}
	rh, rbody, err := sim.Notification("refund", refundPlain(k, "SUCCESS"), "")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body, h.Get("Wechatpay-Timestamp"), h.Get("Wechatpay-Nonce"), h.Get("Wechatpay-Signature"))
	f.Add(rbody, rh.Get("Wechatpay-Timestamp"), rh.Get("Wechatpay-Nonce"), rh.Get("Wechatpay-Signature"))
	f.Add([]byte(`{"resource":null}`), "0", "", "")
	f.Add([]byte(`{"id":"x","resource":{"algorithm":"AEAD_AES_256_GCM","nonce":"123456789012","ciphertext":"AAAA"}}`), "1", "n", "c2ln")
	f.Fuzz(func(t *testing.T, b []byte, ts, nonce, sig string) {
		hdr := http.Header{}
		hdr.Set("Wechatpay-Serial", k.WxPublicKeyID)
		hdr.Set("Wechatpay-Timestamp", ts)
		hdr.Set("Wechatpay-Nonce", nonce)
		hdr.Set("Wechatpay-Signature", sig)
		n, err := c.ParseNotify(context.Background(), hdr, b)
		if err != nil {
			return
		}
		// Only the unmodified seeds can verify.
		if !bytes.Equal(b, body) && !bytes.Equal(b, rbody) {
			t.Fatalf("accepted a body that was never signed: %q", b)
		}
		if n.OutTradeNo == "" || n.Kind == 0 {
			t.Fatalf("accepted notification lacks fields: %+v", n)
		}
	})
}
