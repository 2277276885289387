// Package browsertest drives a real headless Chromium for tests of what a
// kiosk browser shows: the web display, loaded as a customer's screen would
// load it.
package browsertest

import (
	"bufio"
	"bytes"
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

// Browser is a headless Chromium driven over the DevTools protocol: just
// enough of it (navigate, evaluate, screenshot) to see what a kiosk
// browser shows.
type Browser struct {
	t    testing.TB
	cmd  *exec.Cmd
	ws   *websocket.Conn
	mu   sync.Mutex
	next int
}

// ChromiumPath returns the browser binary, skipping the test without one.
func ChromiumPath(t testing.TB) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not found: apt-get install -y chromium to test the web display in a real browser")
	return ""
}

// Start launches a headless Chromium on an empty page; it is killed when
// the test ends.
func Start(t testing.TB) *Browser {
	t.Helper()
	bin := ChromiumPath(t)
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
	b := &Browser{t: t, cmd: cmd}
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

func (b *Browser) stop() {
	if b.ws != nil {
		b.ws.Close()
	}
	if b.cmd.Process != nil {
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		b.cmd.Wait()
	}
}

// Call sends one DevTools command and returns its result, skipping the
// events that arrive in between.
func (b *Browser) Call(method string, params any) json.RawMessage {
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

// Viewport sets the page size in CSS pixels.
func (b *Browser) Viewport(w, h int) {
	b.Call("Emulation.setDeviceMetricsOverride", map[string]any{
		"width": w, "height": h, "deviceScaleFactor": 1, "mobile": false})
}

// Navigate loads url.
func (b *Browser) Navigate(url string) {
	b.Call("Page.navigate", map[string]any{"url": url})
}

// Eval returns the string value of a JavaScript expression.
func (b *Browser) Eval(expr string) string {
	res := b.Call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
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

// WaitFor polls expr until it evaluates to want, failing after 15 s.
func (b *Browser) WaitFor(expr, want string) {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	got := ""
	for time.Now().Before(deadline) {
		if got = b.Eval(expr); got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("%s = %q, want %q", expr, got, want)
}

// Screenshot captures the page as an image.
func (b *Browser) Screenshot() image.Image {
	b.t.Helper()
	res := b.Call("Page.captureScreenshot", map[string]any{"format": "png"})
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
