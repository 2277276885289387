package e2e

import (
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/browsertest"
	"github.com/kioskpay/kioskpay/internal/qrtest"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/payment"
)

// TestWebDisplayInChromium is what the customer sees on a kiosk browser: a
// real headless Chromium shows the daemon's web display; an order placed
// over MQTT arrives on the page over Server-Sent Events (no reload), both
// QR codes in a screenshot decode to the providers' codes, and a payment
// turns the page to the paid screen.
func TestWebDisplayInChromium(t *testing.T) {
	t.Parallel()
	qrtest.Zbar(t)
	e := newEnv(t, daemonOpts{web: true, provider: "any"})
	b := browsertest.Start(t)
	b.Viewport(720, 1280)
	b.Navigate("http://" + e.webAddr + "/")
	b.WaitFor("document.body.dataset.kind", "idle")
	b.WaitFor("document.body.dataset.sse", "open")

	otn := otnPrefix + "web_" + testrig.RandomHex(4)
	rep := e.create("w1", otn, 1550, "any")
	info, _ := rep.Fields["orderInfo"].(map[string]any)
	wx, _ := info["code_url"].(string)
	ali, _ := info["qr_code"].(string)
	b.WaitFor("document.body.dataset.kind", "pay")
	if got := b.Eval(`document.getElementById("amount").textContent`); got != "¥15.50" {
		t.Errorf("amount on the page %q, want ¥15.50", got)
	}
	qrtest.Want(t, qrtest.Decode(t, b.Screenshot()), wx, ali)

	e.pay(payment.WxPay, otn, 0)
	e.result(otn, "paid", 20*time.Second)
	b.WaitFor("document.body.dataset.kind", "paid")
	if got := qrtest.Decode(t, b.Screenshot()); len(got) != 0 {
		t.Errorf("the paid screen still shows QR codes %q", got)
	}
}
