package display

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// browser is a headless Chromium driven over the DevTools protocol: just
// enough of it (navigate, evaluate, screenshot) to see what a kiosk
// browser shows.
type browser struct {
	t    testing.TB
	cmd  *exec.Cmd
	ws   *websocket.Conn
	mu   sync.Mutex
	next int
}

func chromiumPath(t testing.TB) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not found: apt-get install -y chromium to test the web display in a real browser")
	return ""
}

func startBrowser(t testing.TB) *browser {
	t.Helper()
	bin := chromiumPath(t)
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--no-first-run", "--disable-component-update",
		"--hide-scrollbars", "--remote-allow-origins=*", "--remote-debugging-port=0",
		"--user-data-dir="+t.TempDir(), "about:blank")
	// Own process group: the browser's helpers go when the test ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, cmd: cmd}
	t.Cleanup(b.stop)
	re := regexp.MustCompile(`DevTools listening on (ws://[^\s]+)`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	var browserURL string
	select {
	case browserURL = <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not start its DevTools server within 30s")
	}
	// The page target of the initial about:blank tab.
	host := strings.SplitN(strings.TrimPrefix(browserURL, "ws://"), "/", 2)[0]
	var pageWS string
	deadline := time.Now().Add(10 * time.Second)
	for pageWS == "" && time.Now().Before(deadline) {
		resp, err := http.Get("http://" + host + "/json/list")
		if err == nil {
			var targets []struct{ Type, WebSocketDebuggerURL string }
			json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
			for _, tg := range targets {
				if tg.Type == "page" {
					pageWS = tg.WebSocketDebuggerURL
				}
			}
		}
		if pageWS == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if pageWS == "" {
		t.Fatal("no page target in chromium")
	}
	b.ws, _, err = websocket.DefaultDialer.Dial(pageWS, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *browser) stop() {
	if b.ws != nil {
		b.ws.Close()
	}
	if b.cmd.Process != nil {
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		b.cmd.Wait()
	}
}

// call sends one DevTools command and returns its result, skipping the
// events that arrive in between.
func (b *browser) call(method string, params any) json.RawMessage {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	id := b.next
	if err := b.ws.WriteJSON(map[string]any{"id": id, "method": method, "params": params}); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	b.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := b.ws.ReadJSON(&msg); err != nil {
			b.t.Fatalf("%s: %v", method, err)
		}
		if msg.ID != id {
			continue
		}
		if msg.Error != nil {
			b.t.Fatalf("%s: %s", method, msg.Error.Message)
		}
		return msg.Result
	}
}

func (b *browser) viewport(w, h int) {
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{
		"width": w, "height": h, "deviceScaleFactor": 1, "mobile": false})
}

func (b *browser) navigate(url string) {
	b.call("Page.navigate", map[string]any{"url": url})
}

// eval returns the string value of a JavaScript expression.
func (b *browser) eval(expr string) string {
	res := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
	}
	json.Unmarshal(res, &r)
	if r.Result.Value == nil {
		return ""
	}
	return fmt.Sprint(r.Result.Value)
}

// waitFor polls expr until it evaluates to want.
func (b *browser) waitFor(expr, want string) {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	got := ""
	for time.Now().Before(deadline) {
		if got = b.eval(expr); got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("%s = %q, want %q", expr, got, want)
}

func (b *browser) screenshot() image.Image {
	b.t.Helper()
	res := b.call("Page.captureScreenshot", map[string]any{"format": "png"})
	var r struct{ Data string }
	json.Unmarshal(res, &r)
	raw, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		b.t.Fatal(err)
	}
	return img
}

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

			b := startBrowser(t)
			b.viewport(tc.w, tc.h)
			b.navigate("http://" + addr + "/")
			b.waitFor("document.body.dataset.kind", "idle")
			b.waitFor("document.body.dataset.sse", "open")
			preview(t, "web_idle_"+tc.name, b.screenshot())

			s := payScreen(tc.codes...)
			s.ExpiresAt = time.Now().Add(5 * time.Minute)
			d.Show(s)
			b.waitFor("document.body.dataset.kind", "pay")
			if got := b.eval(`document.getElementById("amount").textContent`); got != "¥10.00" {
				t.Errorf("amount on page %q", got)
			}
			if got := b.eval(`document.getElementById("cd").textContent`); !regexp.MustCompile(`^[45]:\d\d$`).MatchString(got) {
				t.Errorf("countdown on page %q", got)
			}
			shot := b.screenshot()
			preview(t, "web_pay_"+tc.name, shot)
			wantCodes(t, decodeQR(t, shot), tc.want...)

			d.Show(Screen{Kind: Paid, Amount: 1000, OutTradeNo: s.OutTradeNo})
			b.waitFor("document.body.dataset.kind", "paid")
			if got := b.eval(`document.getElementById("stitle").textContent`); got != textsZH.PaidTitle && got != textsEN.PaidTitle {
				t.Errorf("paid title %q", got)
			}
			shot = b.screenshot()
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
