package wxpay_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/corpus"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

// wxExchange is one HTTP answer of WeChat Pay as a case records it.
type wxExchange struct {
	// Request is "METHOD /path" of the call the adapter must make.
	Request string `json:"request"`
	Status  int    `json:"status"`
	// Body is the JSON answer; BodyText a non-JSON one. Both empty: no
	// body (204, or a 202 without one).
	Body     json.RawMessage   `json:"body,omitempty"`
	BodyText string            `json:"body_text,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
	// Unsigned leaves out the Wechatpay-* signature headers, as WeChat
	// does on 4xx/5xx answers (which the SDK does not verify).
	Unsigned bool `json:"unsigned,omitempty"`
}

// wxNotification is a notification as WeChat POSTs it, with the resource
// in plain text: the test encrypts it with the APIv3 key.
type wxNotification struct {
	ID           string          `json:"id"`
	CreateTime   string          `json:"create_time"`
	EventType    string          `json:"event_type"`
	Summary      string          `json:"summary"`
	OriginalType string          `json:"original_type"`
	Resource     json.RawMessage `json:"resource"`
}

// TestCorpus replays every case under testdata/ through the adapter: the
// real SDK talks to a server that answers exactly what the case recorded,
// re-signed with the test platform key.
func TestCorpus(t *testing.T) {
	k := simkeys.Get(t)
	cases := corpus.Load(t, "testdata")
	corpus.Covered(t, cases, 30)
	for _, c := range cases {
		t.Run(strings.TrimSuffix(c.File, ".json"), func(t *testing.T) {
			cfg := baseConfig(k)
			if v := c.Merchant["appid"]; v != "" {
				cfg.AppID = v
			}
			if v := c.Merchant["mchid"]; v != "" {
				cfg.MchID = v
			}
			if c.Call.API == "notify" {
				client, err := wxpay.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				h, body := wxNotify(t, k, c.Notification)
				corpus.Run(t, c, client, h, body)
				return
			}
			srv := wxReplay(t, k, c.Exchanges)
			cfg.APIBase = srv.URL
			cfg.Timeout = 5 * time.Second
			client, err := wxpay.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			corpus.Run(t, c, client, nil, nil)
			srv.Check(t)
		})
	}
}

// wxReplay serves the recorded answers in order and checks each request
// goes where the case says.
func wxReplay(t *testing.T, k *paysim.Keys, raw []json.RawMessage) *corpus.Replay {
	t.Helper()
	var exchanges []wxExchange
	for _, r := range raw {
		exchanges = append(exchanges, corpus.Decode[wxExchange](t, r))
	}
	return corpus.Serve(t, len(exchanges), func(w http.ResponseWriter, r *http.Request, i int) []string {
		e := exchanges[i]
		var errs []string
		if got := r.Method + " " + r.URL.Path; e.Request != "" && got != e.Request {
			errs = append(errs, "request "+got+", the case recorded "+e.Request)
		}
		var body []byte
		switch {
		case len(e.Body) > 0:
			var b bytes.Buffer
			if err := json.Compact(&b, e.Body); err != nil {
				errs = append(errs, err.Error())
			}
			body = b.Bytes()
		case e.BodyText != "":
			body = []byte(e.BodyText)
		}
		if !e.Unsigned {
			h := http.Header{}
			resign(t, h, body, k.WxPlatform, time.Now())
			for name, v := range h {
				w.Header()[name] = v
			}
			w.Header().Set("Wechatpay-Serial", k.WxPublicKeyID)
		}
		w.Header().Set("Request-Id", "08F1D8C2A60610F30118A8B4C56A2088A4C6D0B8")
		if body != nil && e.BodyText == "" {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
		}
		for name, v := range e.Headers {
			w.Header().Set(name, v)
		}
		w.WriteHeader(e.Status)
		_, _ = w.Write(body)
		return errs
	})
}

// wxNotify builds the notification WeChat would POST: the resource
// encrypted with AES-256-GCM under the APIv3 key, the body signed with the
// platform key.
func wxNotify(t *testing.T, k *paysim.Keys, raw json.RawMessage) (http.Header, []byte) {
	t.Helper()
	n := corpus.Decode[wxNotification](t, raw)
	var plain bytes.Buffer
	if err := json.Compact(&plain, n.Resource); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher([]byte(k.WxAPIv3Key))
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 12)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	for i := range nonce {
		nonce[i] = alphabet[int(nonce[i])%len(alphabet)]
	}
	sealed := gcm.Seal(nil, nonce, plain.Bytes(), []byte(n.OriginalType))
	body, err := json.Marshal(map[string]any{
		"id": n.ID, "create_time": n.CreateTime, "resource_type": "encrypt-resource",
		"event_type": n.EventType, "summary": n.Summary,
		"resource": map[string]string{
			"original_type": n.OriginalType, "algorithm": "AEAD_AES_256_GCM",
			"ciphertext": base64.StdEncoding.EncodeToString(sealed), "associated_data": n.OriginalType, "nonce": string(nonce),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	resign(t, h, body, k.WxPlatform, time.Now())
	h.Set("Wechatpay-Serial", k.WxPublicKeyID)
	h.Set("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
	h.Set("Content-Type", "application/json")
	return h, body
}
