package alipay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/kioskpay/kioskpay/internal/corpus"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// aliExchange is one gateway answer as a case records it.
type aliExchange struct {
	// Method is the API the adapter must call (the form's "method").
	Method string `json:"method"`
	// Response is the "<method>_response" node, exactly as the gateway
	// sends it; the test signs its bytes with the platform key.
	Response json.RawMessage `json:"response,omitempty"`
	// Node overrides the top-level key (e.g. "error_response").
	Node string `json:"node,omitempty"`
	// Unsigned leaves out "sign", as the gateway does on some errors.
	Unsigned bool `json:"unsigned,omitempty"`
	// Charset "gbk" sends the answer GBK-encoded (and signs those bytes).
	Charset string `json:"charset,omitempty"`
	// Raw is a whole non-JSON body (an HTML error page).
	Raw    string `json:"raw,omitempty"`
	Status int    `json:"status,omitempty"`
}

// aliNotification is an asynchronous notification's form, unsigned: the
// test signs it with the platform key (in Charset's bytes when gbk).
type aliNotification struct {
	Form    map[string]string `json:"form"`
	Charset string            `json:"charset,omitempty"`
}

func gbk(t *testing.T, s string) string {
	t.Helper()
	b, err := simplifiedchinese.GBK.NewEncoder().String(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCorpus replays every case under testdata/ through the adapter: the
// SDK talks to a gateway that answers exactly what the case recorded,
// re-signed with the test platform key.
func TestCorpus(t *testing.T) {
	cases := corpus.Load(t, "testdata")
	corpus.Covered(t, cases, 30)
	for _, c := range cases {
		t.Run(strings.TrimSuffix(c.File, ".json"), func(t *testing.T) {
			cfg := Config{
				AppID:              testKeys.AlipayAppID,
				PrivateKeyPEM:      paysim.PrivatePEM(testKeys.AlipayApp),
				AlipayPublicKeyPEM: paysim.PublicPEM(&testKeys.AlipayPlatform.PublicKey),
				Timeout:            5 * time.Second,
			}
			if v := c.Merchant["app_id"]; v != "" {
				cfg.AppID = v
			}
			if c.Call.API == "notify" {
				client, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				corpus.Run(t, c, client, nil, aliNotify(t, c.Notification))
				return
			}
			gw := aliReplay(t, c.Exchanges)
			cfg.Gateway = gw.URL + "/gateway.do"
			client, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			corpus.Run(t, c, client, nil, nil)
			gw.Check(t)
		})
	}
}

func aliReplay(t *testing.T, raw []json.RawMessage) *corpus.Replay {
	t.Helper()
	var exchanges []aliExchange
	for _, r := range raw {
		exchanges = append(exchanges, corpus.Decode[aliExchange](t, r))
	}
	return corpus.Serve(t, len(exchanges), func(w http.ResponseWriter, r *http.Request, i int) []string {
		e := exchanges[i]
		var errs []string
		method := r.Form.Get("method")
		if e.Method != method {
			errs = append(errs, fmt.Sprintf("call %s, the case recorded %s", method, e.Method))
		}
		var body []byte
		if e.Raw != "" {
			body = []byte(e.Raw)
		} else {
			var node bytes.Buffer
			if err := json.Compact(&node, e.Response); err != nil {
				errs = append(errs, err.Error())
			}
			inner := node.String()
			if e.Charset == "gbk" {
				inner = gbk(t, inner)
			}
			name := e.Node
			if name == "" {
				name = strings.ReplaceAll(method, ".", "_") + "_response"
			}
			body = fmt.Appendf(nil, "{%q:%s", name, inner)
			if !e.Unsigned {
				body = fmt.Appendf(body, ",%q:%q", "sign", platformSign([]byte(inner)))
			}
			body = append(body, '}')
		}
		charset := "utf-8"
		if e.Charset != "" {
			charset = e.Charset
		}
		w.Header().Set("Content-Type", "text/html;charset="+charset)
		if e.Status != 0 {
			w.WriteHeader(e.Status)
		}
		_, _ = w.Write(body)
		return errs
	})
}

// aliNotify builds the form body Alipay would POST, signed with the
// platform key over the values' bytes in the notification's charset.
func aliNotify(t *testing.T, raw json.RawMessage) []byte {
	t.Helper()
	n := corpus.Decode[aliNotification](t, raw)
	form := url.Values{}
	for k, v := range n.Form {
		if n.Charset == "gbk" {
			v = gbk(t, v)
		}
		form.Set(k, v)
	}
	return []byte(resign(form, testKeys.AlipayPlatform))
}
