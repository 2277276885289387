package display

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

//go:embed page.html
var pageHTML string

var pageTmpl = template.Must(template.New("page").Parse(pageHTML))

// webState is the /state document and the payload of every Server-Sent
// Event. The page renders it without asking anything else.
type webState struct {
	Seq        uint64    `json:"seq"`
	Kind       string    `json:"kind"`
	Lang       string    `json:"lang"`
	Now        time.Time `json:"now"` // server clock when sent, to correct the browser's
	Amount     string    `json:"amount,omitempty"`
	AmountFen  int64     `json:"amount_fen"`
	Subject    string    `json:"subject,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	OutTradeNo string    `json:"out_trade_no,omitempty"`
	Message    string    `json:"message,omitempty"`
	Codes      []webCode `json:"codes,omitempty"`
	Texts      *texts    `json:"texts"`
}

type webCode struct {
	Provider payment.ProviderName `json:"provider"`
	Label    string               `json:"label"`
	Color    string               `json:"color"`
	Content  string               `json:"content"`
	// Modules are the QR rows without quiet zone, "1" for dark, so that
	// the page draws the code itself at an integer scale.
	Modules []string `json:"modules,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func hexColour(c interface{ RGBA() (r, g, b, a uint32) }) string {
	r, g, b, _ := c.RGBA()
	return fmt.Sprintf("#%02X%02X%02X", r>>8, g>>8, b>>8)
}

// maxSSEClients bounds open event streams; a kiosk has one browser.
const maxSSEClients = 16

// webOutput holds the state the page shows and serves it (http.Handler).
type webOutput struct {
	tx  *texts
	now func() time.Time

	mu    sync.Mutex
	frame frame
	built bool // state is built from frame
	state webState
	subs  map[chan struct{}]struct{}
}

func newWebOutput(tx *texts, now func() time.Time) *webOutput {
	return &webOutput{tx: tx, now: now, subs: map[chan struct{}]struct{}{}}
}

// draw makes f the screen served and tells every event stream. It is
// cheap (Show calls it on the caller's goroutine): the state, with its QR
// modules, is built when first asked for.
func (w *webOutput) draw(f *frame, _ time.Time) {
	w.mu.Lock()
	w.frame, w.built = *f, false
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
}

func (w *webOutput) build(f *frame) webState {
	st := webState{
		Seq:        f.seq,
		Kind:       f.Kind.String(),
		Lang:       w.tx.Lang,
		Subject:    cleanText(f.Subject),
		OutTradeNo: cleanText(f.OutTradeNo),
		Message:    cleanText(f.Message),
		Texts:      w.tx,
	}
	if f.Kind == Pay || f.Kind == Paid {
		st.Amount, st.AmountFen = f.Amount.String(), int64(f.Amount)
	}
	if f.Kind == Pay {
		st.ExpiresAt, st.StartedAt = f.ExpiresAt, f.start
		for i, c := range f.Codes {
			if i == 2 {
				break
			}
			wc := webCode{Provider: c.Provider, Label: w.tx.provider(c.Provider),
				Color: hexColour(providerColour(c.Provider)), Content: c.Content}
			mods, err := payment.QRModules(c.Content)
			if err != nil {
				wc.Error = err.Error()
			}
			for _, row := range mods {
				b := make([]byte, len(row))
				for x, dark := range row {
					b[x] = '0'
					if dark {
						b[x] = '1'
					}
				}
				wc.Modules = append(wc.Modules, string(b))
			}
			st.Codes = append(st.Codes, wc)
		}
	}
	return st
}

// snapshot returns the current state, stamped with the server clock.
func (w *webOutput) snapshot() webState {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.built {
		w.state, w.built = w.build(&w.frame), true
	}
	st := w.state
	st.Now = w.now()
	return st
}

func (w *webOutput) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rw.Header().Set("Allow", "GET, HEAD")
		http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("X-Content-Type-Options", "nosniff")
	switch r.URL.Path {
	case "/":
		w.servePage(rw)
	case "/events":
		w.serveEvents(rw, r)
	case "/state":
		rw.Header().Set("Content-Type", "application/json")
		json.NewEncoder(rw).Encode(w.snapshot())
	case "/qr.png":
		w.serveQR(rw, r)
	case "/healthz":
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(rw, "ok")
	default:
		http.NotFound(rw, r)
	}
}

func (w *webOutput) servePage(rw http.ResponseWriter) {
	st, err := json.Marshal(w.snapshot())
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	// The page carries the current state, so it shows the right screen
	// before the event stream connects. No external assets: the CSP
	// forbids fetching anything but this server.
	err = pageTmpl.Execute(&buf, map[string]any{
		"Lang":  w.tx.Lang,
		"State": template.JS(st), // json.Marshal escapes <, > and &
	})
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Content-Security-Policy",
		"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
	rw.Write(buf.Bytes())
}

func (w *webOutput) serveQR(rw http.ResponseWriter, r *http.Request) {
	i := 0
	if s := r.URL.Query().Get("i"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1 {
			http.Error(rw, "i: want 0 or 1", http.StatusBadRequest)
			return
		}
		i = n
	}
	st := w.snapshot()
	if i >= len(st.Codes) {
		http.Error(rw, "no QR code on screen", http.StatusNotFound)
		return
	}
	b, err := payment.QRPNG(st.Codes[i].Content, 8)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "image/png")
	rw.Write(b)
}

func (w *webOutput) subscribe() (chan struct{}, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.subs) >= maxSSEClients {
		return nil, false
	}
	ch := make(chan struct{}, 1)
	w.subs[ch] = struct{}{}
	return ch, true
}

func (w *webOutput) unsubscribe(ch chan struct{}) {
	w.mu.Lock()
	delete(w.subs, ch)
	w.mu.Unlock()
}

// clients returns how many event streams are open.
func (w *webOutput) clients() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.subs)
}

// serveEvents streams the state as Server-Sent Events: the current state at
// once (a reconnecting page catches up), then every change. Countdowns run
// in the browser, so nothing is sent while the screen stays the same.
func (w *webOutput) serveEvents(rw http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(rw)
	ch, ok := w.subscribe()
	if !ok {
		http.Error(rw, "too many event streams", http.StatusServiceUnavailable)
		return
	}
	defer w.unsubscribe(ch)
	rw.Header().Set("Content-Type", "text/event-stream")
	rw.Header().Set("X-Accel-Buffering", "no")
	// retry: how long the browser waits before reconnecting.
	if _, err := fmt.Fprint(rw, "retry: 2000\n\n"); err != nil {
		return
	}
	var last uint64
	send := func() error {
		st := w.snapshot()
		if st.Seq == last {
			return nil
		}
		last = st.Seq
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(rw, "id: %d\ndata: %s\n\n", st.Seq, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ch:
			if err := send(); err != nil {
				return
			}
		}
	}
}

// webServer is the "web" output: it keeps an HTTP server for webOutput
// listening on the configured address.
type webServer struct {
	web  *webOutput
	addr string
	log  *slog.Logger

	mu  sync.Mutex
	srv *http.Server
	ln  net.Listener
}

func (o *webServer) name() string { return "web" }

// ticks is false: the page counts down by itself.
func (o *webServer) ticks() bool { return false }

func (o *webServer) draw(*frame, time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("web output: %w", err)
	}
	if host, _, _ := net.SplitHostPort(o.addr); !isLoopback(host) {
		o.log.Warn("web display listens beyond loopback", "addr", ln.Addr().String())
	}
	srv := &http.Server{Handler: o.web, ReadHeaderTimeout: 10 * time.Second}
	o.srv, o.ln = srv, ln
	o.log.Info("web display listening", "url", "http://"+ln.Addr().String()+"/")
	go func() {
		err := srv.Serve(ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.Error("web display server stopped", "err", err)
		}
	}()
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Addr returns the address the server listens on, "" before it does.
func (o *webServer) Addr() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln == nil {
		return ""
	}
	return o.ln.Addr().String()
}

func (o *webServer) close() error {
	o.mu.Lock()
	srv := o.srv
	o.srv, o.ln = nil, nil
	o.mu.Unlock()
	if srv == nil {
		return nil
	}
	// Event streams never end by themselves: close rather than shut down
	// gracefully; the page reconnects.
	return srv.Close()
}
