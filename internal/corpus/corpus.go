// Package corpus replays recorded provider answers through a
// payment.Provider: the adapters' testdata/ holds one JSON file per case,
// each naming the public source its fields and values come from (a
// documentation page, an SDK's fixture, an issue thread), the call the
// adapter makes, what the provider answers, and the outcome the adapter
// must decode. The provider-specific tests serve the answers (re-signed at
// run time with test keys) and hand the adapter to Run.
//
// A case file:
//
//	{
//	  "title":   "what the case shows",
//	  "sources": ["https://…", "github.com/owner/repo path/to/fixture.json"],
//	  "note":    "where sources disagree, which reading was taken and why",
//	  "merchant": {"mchid": "…"},            // overrides of the test account's ids
//	  "call":    {"api": "query", "out_trade_no": "…"},
//	  "exchanges": [ … provider-specific HTTP answers, in call order; none
//	                 when the adapter must refuse without calling … ],
//	  "notification": { … provider-specific, for "api": "notify" … },
//	  "expect":  {"outcome": "ok", "state": "paid", "total": 1000, …}
//	}
//
// Expected keys (only those present are compared): outcome (ok, unknown,
// rejected), code (rejection code), state, scanned, total, payer_total,
// receipt, discount, transaction_id, paid_at (RFC 3339), code_url, paid and
// refunded (close), refund_state, refund_amount, refund_id, kind,
// out_trade_no, out_refund_no, notify_id. Amounts are fen.
package corpus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// Case is one recorded exchange with a provider.
type Case struct {
	File         string            `json:"-"`
	Title        string            `json:"title"`
	Sources      []string          `json:"sources"`
	Note         string            `json:"note,omitempty"`
	Merchant     map[string]string `json:"merchant,omitempty"`
	Call         Call              `json:"call"`
	Exchanges    []json.RawMessage `json:"exchanges,omitempty"`
	Notification json.RawMessage   `json:"notification,omitempty"`
	Expect       map[string]any    `json:"expect"`
}

// Call is the adapter call a case makes.
type Call struct {
	// API is create, query, close, refund, refund_query or notify.
	API         string      `json:"api"`
	OutTradeNo  string      `json:"out_trade_no,omitempty"`
	OutRefundNo string      `json:"out_refund_no,omitempty"`
	Total       payment.Fen `json:"total,omitempty"`  // create, refund
	Refund      payment.Fen `json:"refund,omitempty"` // refund
	Subject     string      `json:"subject,omitempty"`
}

// APIs are the calls a case may make; every one must be covered.
var APIs = []string{"create", "query", "close", "refund", "refund_query", "notify"}

// Load reads every *.json case under dir, sorted by name, and checks that
// each is complete: a title, at least one source, a known call, and an
// expected outcome.
func Load(t *testing.T, dir string) []Case {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var cases []Case
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c Case
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.DisallowUnknownFields()
		if err := d.Decode(&c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c.File = filepath.Base(f)
		switch {
		case c.Title == "":
			t.Fatalf("%s: no title", f)
		case len(c.Sources) == 0:
			t.Fatalf("%s: names no public source", f)
		case !slices.Contains(APIs, c.Call.API):
			t.Fatalf("%s: call.api %q, want one of %v", f, c.Call.API, APIs)
		case len(c.Expect) == 0:
			t.Fatalf("%s: no expected outcome", f)
		case c.Call.API == "notify" && len(c.Notification) == 0:
			t.Fatalf("%s: no notification to replay", f)
		}
		cases = append(cases, c)
	}
	return cases
}

// Covered fails unless the cases exercise every API and at least min cases
// exist.
func Covered(t *testing.T, cases []Case, min int) {
	t.Helper()
	seen := map[string]int{}
	for _, c := range cases {
		seen[c.Call.API]++
	}
	for _, api := range APIs {
		if seen[api] == 0 {
			t.Errorf("no case exercises %s", api)
		}
	}
	if len(cases) < min {
		t.Errorf("%d cases, want at least %d", len(cases), min)
	}
}

// Run makes the case's call on p (for notifications, ParseNotify of header
// and body) and compares the decoded outcome with the case's expectation.
func Run(t *testing.T, c Case, p payment.Provider, header http.Header, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := outcome(ctx, c.Call, p, header, body)
	want := c.Expect
	if _, ok := want["outcome"]; !ok {
		want["outcome"] = "ok"
	}
	var diffs []string
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g, ok := got[k]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: not decoded (want %v)", k, want[k]))
			continue
		}
		if !reflect.DeepEqual(norm(g), norm(want[k])) {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", k, g, want[k]))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%s (%s):\n  %s\n  decoded: %v", c.File, c.Title, strings.Join(diffs, "\n  "), got)
	}
}

// norm makes JSON numbers and Go integers comparable.
func norm(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func outcome(ctx context.Context, c Call, p payment.Provider, header http.Header, body []byte) map[string]any {
	out := map[string]any{}
	var err error
	switch c.API {
	case "create":
		var cr payment.Created
		cr, err = p.Create(ctx, payment.Order{OutTradeNo: c.OutTradeNo, Total: c.Total, Subject: subject(c),
			NotifyURL: "https://relay.example.com/notify/dev-1/" + string(p.Name()), ExpireAt: time.Now().Add(5 * time.Minute)})
		out["code_url"] = cr.CodeURL
	case "query":
		var st payment.Status
		st, err = p.Query(ctx, c.OutTradeNo)
		status(out, st)
	case "close":
		var cl payment.Closed
		cl, err = p.Close(ctx, c.OutTradeNo)
		out["paid"], out["refunded"] = cl.Paid, cl.Refunded
	case "refund":
		var rs payment.RefundStatus
		rs, err = p.Refund(ctx, payment.RefundRequest{OutTradeNo: c.OutTradeNo, OutRefundNo: c.OutRefundNo, Total: c.Total, Refund: c.Refund, Reason: "not delivered"})
		refund(out, rs)
	case "refund_query":
		var rs payment.RefundStatus
		rs, err = p.QueryRefund(ctx, c.OutTradeNo, c.OutRefundNo)
		refund(out, rs)
	case "notify":
		var n payment.Notification
		n, err = p.ParseNotify(ctx, header, body)
		out["kind"] = map[payment.NotifyKind]string{payment.NotifyPayment: "payment", payment.NotifyRefund: "refund", payment.NotifyClosed: "closed"}[n.Kind]
		out["out_trade_no"], out["out_refund_no"], out["notify_id"] = n.OutTradeNo, n.OutRefundNo, n.ID
		out["refund_state"] = n.RefundState.String()
		status(out, payment.Status{State: n.State, Amount: n.Amount, TransactionID: n.TransactionID})
	}
	switch {
	case err == nil:
		out["outcome"] = "ok"
	case payment.IsUnknown(err):
		out["outcome"] = "unknown"
		out["error"] = err.Error()
	default:
		var re *payment.RejectedError
		if errors.As(err, &re) {
			out["outcome"], out["code"] = "rejected", re.Code
		}
		out["error"] = err.Error()
	}
	return out
}

func subject(c Call) string {
	if c.Subject != "" {
		return c.Subject
	}
	return "按摩椅 15 分钟"
}

func status(out map[string]any, st payment.Status) {
	out["state"], out["scanned"], out["transaction_id"] = st.State.String(), st.Scanned, st.TransactionID
	a := st.Amount
	out["total"], out["payer_total"], out["receipt"], out["discount"] = int64(a.Total), int64(a.Payer()), int64(a.Receipt), int64(a.Discount)
	if !st.PaidAt.IsZero() {
		out["paid_at"] = st.PaidAt.Format(time.RFC3339)
	}
}

func refund(out map[string]any, rs payment.RefundStatus) {
	out["refund_state"], out["refund_amount"], out["refund_id"] = rs.State.String(), int64(rs.Amount), rs.RefundID
}

// Decode reads a provider-specific part of a case strictly: an unknown key
// is a typo in the case, not something to ignore.
func Decode[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("case: %v", err)
	}
	return v
}

// Replay is a server that answers a case's exchanges, one per call, in
// order; Check then fails the test on calls the case did not record or
// recorded calls that were not made.
type Replay struct {
	*httptest.Server
	mu     sync.Mutex
	n      int
	served int
	errs   []string
}

// Serve starts a Replay of n exchanges. answer writes the answer of
// exchange i to r and returns what is wrong with the request, if anything.
func Serve(t *testing.T, n int, answer func(w http.ResponseWriter, r *http.Request, i int) []string) *Replay {
	t.Helper()
	rp := &Replay{n: n}
	rp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		_, _ = io.Copy(io.Discard, r.Body)
		rp.mu.Lock()
		defer rp.mu.Unlock()
		if rp.served >= rp.n {
			rp.errs = append(rp.errs, "unexpected call "+r.Method+" "+r.URL.Path+" "+r.Form.Get("method"))
			http.Error(w, "not in the case", http.StatusInternalServerError)
			return
		}
		i := rp.served
		rp.served++
		rp.errs = append(rp.errs, answer(w, r, i)...)
	}))
	t.Cleanup(rp.Close)
	return rp
}

// Check reports what the replay saw go wrong.
func (rp *Replay) Check(t *testing.T) {
	t.Helper()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for _, e := range rp.errs {
		t.Error(e)
	}
	if rp.served != rp.n {
		t.Errorf("the adapter made %d calls, the case recorded %d", rp.served, rp.n)
	}
}
