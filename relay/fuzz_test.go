package relay

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/kioskpay/kioskpay/contract"
)

// recordingPublisher keeps what the relay published.
type recordingPublisher struct{ msgs [][]byte }

func (p *recordingPublisher) Publish(_ context.Context, _ string, b []byte) error {
	p.msgs = append(p.msgs, b)
	return nil
}
func (p *recordingPublisher) Connected() bool { return true }

// FuzzRelay feeds arbitrary requests to the relay: it must never panic, must
// publish only when it answers success, and whatever it publishes must be
// an envelope the daemon decodes to exactly the body received.
func FuzzRelay(f *testing.F) {
	f.Add("chair-001", "wxpay", "application/json", "1554208460", []byte(`{"id":"EV-1","resource":{}}`))
	f.Add("vend_7", "alipay", "application/x-www-form-urlencoded", "", []byte("a=b&sign=x%2B"))
	f.Add("../x", "wxpay", "", "", []byte("{}"))
	f.Add("d", "alipay", "text/plain", "", []byte{0xff, 0x00})
	f.Add("d", "wxpay", "", "\x00", []byte("\u2028\"\\"))
	f.Fuzz(func(t *testing.T, dev, provider, ctype, ts string, body []byte) {
		pub := &recordingPublisher{}
		relay := &Relay{Prefix: "kiosk", Pub: pub, MaxBody: 32 << 10, Logger: slog.New(slog.DiscardHandler)}
		target := "/notify/" + url.PathEscape(dev) + "/" + url.PathEscape(provider)
		req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Wechatpay-Timestamp", ts)
		w := httptest.NewRecorder()
		relay.Handler().ServeHTTP(w, req)
		ok := w.Code == http.StatusNoContent || (w.Code == http.StatusOK && w.Body.String() == "success")
		if !ok {
			if len(pub.msgs) != 0 {
				t.Fatalf("published but answered %d", w.Code)
			}
			return
		}
		if len(pub.msgs) != 1 {
			t.Fatalf("answered success after %d publishes", len(pub.msgs))
		}
		n, err := contract.DecodeNotify(pub.msgs[0])
		if err != nil {
			t.Fatalf("published an envelope the daemon refuses: %v", err)
		}
		if !bytes.Equal(n.Body, body) || string(n.Provider) != provider {
			t.Fatalf("envelope changed the notification: %+v", n)
		}
	})
}
