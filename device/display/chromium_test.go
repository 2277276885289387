package display

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/browsertest"
)

// TestWebInChromium loads the page in a real headless Chromium, then
// changes the screen with Show: the update must arrive over Server-Sent
// Events (no reload), the QR codes in the screenshot must decode, and the
// paid screen must follow.
func TestWebInChromium(t *testing.T) {
	zbar(t)
	for _, tc := range []struct {
		name  string
		w, h  int
		codes []Code
		want  []string
	}{
		{"portrait_any", 600, 1000, []Code{wxCode, aliCode}, []string{wxContent, aliContent}},
		{"landscape_wxpay", 1024, 600, []Code{wxCode}, []string{wxContent}},
		{"landscape_any", 1024, 600, []Code{wxCode, aliCode}, []string{wxContent, aliContent}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(Config{Outputs: []string{OutputWeb}, WebListen: "127.0.0.1:0", Locale: "zh",
				FontFile: cjkFontIfPresent()}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			defer func() { cancel(); <-done }()
			addr := waitAddr(t, d)

			b := browsertest.Start(t)
			b.Viewport(tc.w, tc.h)
			b.Navigate("http://" + addr + "/")
			b.WaitFor("document.body.dataset.kind", "idle")
			b.WaitFor("document.body.dataset.sse", "open")
			preview(t, "web_idle_"+tc.name, b.Screenshot())

			s := payScreen(tc.codes...)
			s.ExpiresAt = time.Now().Add(5 * time.Minute)
			d.Show(s)
			b.WaitFor("document.body.dataset.kind", "pay")
			if got := b.Eval(`document.getElementById("amount").textContent`); got != "¥10.00" {
				t.Errorf("amount on page %q", got)
			}
			if got := b.Eval(`document.getElementById("cd").textContent`); !regexp.MustCompile(`^[45]:\d\d$`).MatchString(got) {
				t.Errorf("countdown on page %q", got)
			}
			shot := b.Screenshot()
			preview(t, "web_pay_"+tc.name, shot)
			wantCodes(t, decodeQR(t, shot), tc.want...)

			d.Show(Screen{Kind: Paid, Amount: 1000, OutTradeNo: s.OutTradeNo})
			b.WaitFor("document.body.dataset.kind", "paid")
			if got := b.Eval(`document.getElementById("stitle").textContent`); got != textsZH.PaidTitle && got != textsEN.PaidTitle {
				t.Errorf("paid title %q", got)
			}
			shot = b.Screenshot()
			preview(t, "web_paid_"+tc.name, shot)
			if got := decodeQR(t, shot); len(got) != 0 {
				t.Errorf("paid screen still shows a QR code: %q", got)
			}
		})
	}
}

func waitAddr(t testing.TB, d *Display) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if a := d.WebAddr(); a != "" {
			return a
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("web output did not start listening")
	return ""
}
