package display

import (
	"bufio"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
)

func newTestDisplay(t *testing.T, cfg Config) *Display {
	t.Helper()
	d, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestWebEndpoints(t *testing.T) {
	d := newTestDisplay(t, Config{Display: config.Display{Locale: "en"}, Now: func() time.Time { return testNow }})
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	resp, body := get("/healthz")
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get("/qr.png"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/qr.png on the idle screen: %d, want 404", resp.StatusCode)
	}

	d.Show(payScreen(wxCode, aliCode))
	resp, body = get("/state")
	var st webState
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/state: %v: %s", err, body)
	}
	if st.Kind != "pay" || st.Amount != "¥10.00" || st.AmountFen != 1000 || len(st.Codes) != 2 ||
		st.Codes[0].Content != wxContent || st.Codes[1].Label != "Alipay" || !st.Now.Equal(testNow) {
		t.Fatalf("/state = %+v", st)
	}
	for i, want := range []string{wxContent, aliContent} {
		resp, body := get("/qr.png?i=" + string(rune('0'+i)))
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("/qr.png?i=%d: %d %s", i, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		img, err := png.Decode(strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		wantCodes(t, decodeQR(t, img), want)
	}
	for path, code := range map[string]int{"/qr.png?i=2": 400, "/qr.png?i=x": 400, "/nope": 404} {
		if resp, _ := get(path); resp.StatusCode != code {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, code)
		}
	}
	resp, err := http.Post(srv.URL+"/state", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /state: %d", resp.StatusCode)
	}

	// The page embeds the state and loads nothing from elsewhere.
	resp, body = get("/")
	page := string(body)
	if resp.StatusCode != 200 || !strings.Contains(page, `"kind":"pay"`) || !strings.Contains(page, "EventSource") {
		t.Fatalf("page: %d, state or EventSource missing", resp.StatusCode)
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("page CSP %q", resp.Header.Get("Content-Security-Policy"))
	}
	// Outside the embedded state (whose QR contents are URLs).
	before, rest, _ := strings.Cut(page, `<script id="state"`)
	_, after, _ := strings.Cut(rest, "</script>")
	for _, ext := range []string{"http://", "https://", "//cdn", "@import", "src="} {
		if strings.Contains(before+after, ext) {
			t.Errorf("page refers to an external asset: %q", ext)
		}
	}
}

// TestWebSubjectEscaped: outside text cannot break out of the page's
// embedded JSON.
func TestWebSubjectEscaped(t *testing.T) {
	d := newTestDisplay(t, Config{})
	s := payScreen(wxCode)
	s.Subject = `</script><script>alert(1)</script>`
	d.Show(s)
	rec := httptest.NewRecorder()
	d.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if strings.Contains(rec.Body.String(), "<script>alert(1)") {
		t.Fatal("subject injected a script into the page")
	}
}

func TestWebEvents(t *testing.T) {
	d := newTestDisplay(t, Config{})
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan webState)
	retry := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "retry: ") {
				retry <- l
			}
			if data, ok := strings.CutPrefix(l, "data: "); ok {
				var st webState
				json.Unmarshal([]byte(data), &st)
				select {
				case events <- st:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	next := func() webState {
		select {
		case st := <-events:
			return st
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return webState{}
	}
	if st := next(); st.Kind != "idle" {
		t.Fatalf("first event %q, want the current (idle) screen", st.Kind)
	}
	if l := <-retry; l != "retry: 2000" {
		t.Fatalf("retry line %q", l)
	}
	d.Show(payScreen(aliCode))
	if st := next(); st.Kind != "pay" || st.Codes[0].Content != aliContent || len(st.Codes[0].Modules) == 0 {
		t.Fatalf("after Show(pay): %+v", st)
	}
	d.Show(Screen{Kind: Paid, Amount: 1000})
	if st := next(); st.Kind != "paid" || st.Amount != "¥10.00" {
		t.Fatalf("after Show(paid): %+v", st)
	}
}

// TestPNGAtomic: the PNG is replaced whole and no temporary file stays.
func TestPNGAtomic(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/sub/qr.png"
	o := &pngOutput{path: path, w: 300, h: 500, comp: newComposer(testFonts(t, false), "en")}
	f := &frame{Screen: payScreen(wxCode), seq: 1, start: testNow}
	for i := range 3 {
		if err := o.draw(f, testNow.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir + "/sub")
	if len(ents) != 1 || ents[0].Name() != "qr.png" {
		t.Fatalf("directory holds %v", ents)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, decodeQR(t, img), wxContent)
	// An unwritable place is an error, to be retried.
	bad := &pngOutput{path: "/proc/nope/qr.png", w: 100, h: 100, comp: newComposer(testFonts(t, false), "en")}
	if err := bad.draw(f, testNow); err == nil {
		t.Fatal("png written to an impossible path")
	}
}

// TestWebFollowsLocaleWithoutFont: a browser draws Chinese with its own
// fonts, so the page speaks the configured locale without font_file, and
// nothing warns about a font unless an output that draws its own text is
// configured; then the warning says what is missing.
func TestWebFollowsLocaleWithoutFont(t *testing.T) {
	for _, tc := range []struct {
		locale  config.Locale
		font    string
		outputs []config.Output
		lang    string
		warn    string // "" = no warning
	}{
		{"zh", "", []config.Output{config.OutputWeb}, "zh", ""},
		{"en", "", []config.Output{config.OutputWeb}, "en", ""},
		{"zh", "", []config.Output{config.OutputWeb, config.OutputPNG}, "zh", "no font_file set: the png output shows English"},
		{"zh", "", []config.Output{config.OutputTTY}, "zh", "no font_file set: the tty output shows English"},
	} {
		var logs strings.Builder
		d, err := New(Config{Display: config.Display{Outputs: tc.outputs, Locale: tc.locale, FontFile: tc.font, WebListen: "127.0.0.1:0", PNGPath: t.TempDir() + "/qr.png"}},
			slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(d.Handler())
		d.Show(payScreen(wxCode))
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		st := d.web.snapshot()
		want := textsOf(config.Locale(tc.lang))
		if st.Lang != tc.lang || st.Texts.PayTitle != want.PayTitle || st.Codes[0].Label != want.WxPay ||
			!strings.Contains(string(page), `<html lang="`+tc.lang+`">`) {
			t.Errorf("%s %v: page lang %q, texts %q/%q", tc.locale, tc.outputs, st.Lang, st.Texts.PayTitle, st.Codes[0].Label)
		}
		switch {
		case tc.warn == "" && strings.Contains(logs.String(), "WARN"):
			t.Errorf("%s %v: warned: %s", tc.locale, tc.outputs, logs.String())
		case tc.warn != "" && !strings.Contains(logs.String(), tc.warn):
			t.Errorf("%s %v: log %q, want %q", tc.locale, tc.outputs, logs.String(), tc.warn)
		}
	}
}
