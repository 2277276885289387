package paygate

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/payment/gateway/wire"
)

func auditLines(t *testing.T, path string) []Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// A verified notification goes to the device its order number names, in
// notifyrelay's envelope; an unverifiable one is refused; one of an order
// no device's prefix starts is acknowledged (the provider stops retrying)
// and dropped. Each decision is audited.
func TestNotifyForwarding(t *testing.T) {
	tg := newTestGate(t)
	url := mqtttest.Broker(t)
	prefix := mqtttest.Unique("ntf")
	srv := &Server{Gate: tg.Gate, TopicPrefix: prefix}
	srv.Connect(mqttclient.Config{Brokers: mqttclient.NewBrokers([]string{url}), ClientID: mqtttest.Unique("pg")})
	t.Cleanup(srv.Close)
	sub := mqtttest.Subscribe(t, url, prefix+"/+/pay/notify")
	deadline := time.Now().Add(10 * time.Second)
	for !srv.Connected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	h := srv.NotifyHandler()
	post := func(valid bool, body string) int {
		req := httptest.NewRequest("POST", "/notify/default/wxpay", strings.NewReader(body))
		req.Header.Set("Wechatpay-Signature", "sig")
		if valid {
			req.Header.Set("X-Valid", "yes")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req.WithContext(context.Background()))
		return w.Code
	}
	otn := DerivedPrefix("chair-9") + "0001"
	if code := post(true, otn); code != http.StatusNoContent {
		t.Fatalf("verified notification: HTTP %d", code)
	}
	m := sub.Next(t, prefix+"/chair-9/pay/notify", 5*time.Second)
	var env struct {
		Provider string            `json:"provider"`
		Headers  map[string]string `json:"headers"`
		Body     string            `json:"body"`
	}
	if err := json.Unmarshal(m.Payload, &env); err != nil || env.Provider != "wxpay" || env.Body != otn || env.Headers["Wechatpay-Signature"] != "sig" {
		t.Fatalf("envelope %s: %v", m.Payload, err)
	}
	if code := post(false, otn); code != http.StatusBadRequest {
		t.Errorf("forged notification: HTTP %d, want 400", code)
	}
	if code := post(true, "not_ours_0001"); code != http.StatusNoContent {
		t.Errorf("foreign order: HTTP %d, want 204", code)
	}
	recs := auditLines(t, tg.audit)
	if len(recs) != 3 {
		t.Fatalf("%d audit lines, want 3: %+v", len(recs), recs)
	}
	if recs[0].Decision != Allowed || recs[0].Device != "chair-9" || recs[0].OutTradeNo != otn {
		t.Errorf("forwarded: %+v", recs[0])
	}
	if recs[1].Decision != Refused || recs[1].Code != string(wire.ErrSignatureInvalid) {
		t.Errorf("forged: %+v", recs[1])
	}
	if recs[2].Decision != Refused || recs[2].Code != string(wire.ErrPolicyPrefix) {
		t.Errorf("foreign: %+v", recs[2])
	}
}

// The audit log is reopened at its path after a rotation renamed it.
func TestAuditReopen(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenAudit(dir + "/a.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Write(Record{Op: "one", Decision: Allowed}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+"/a.jsonl", dir+"/a.jsonl.1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(Record{Op: "two", Decision: Allowed}); err != nil {
		t.Fatal(err)
	}
	if old, cur := auditLines(t, dir+"/a.jsonl.1"), auditLines(t, dir+"/a.jsonl"); len(old) != 1 || old[0].Op != "one" || len(cur) != 1 || cur[0].Op != "two" {
		t.Errorf("rotated %+v, current %+v", old, cur)
	}
	if fi, _ := os.Stat(dir + "/a.jsonl"); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
}

// Concurrent writes are committed in groups: every one returns only once
// its line is in the file, whole, and a rotation in the middle loses none.
func TestAuditGroupCommit(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenAudit(dir + "/a.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := a.Write(Record{Op: "query", RequestID: id, Decision: Allowed}); err != nil {
					t.Error(err)
					return
				}
				if w == 0 && i == each/2 {
					if err := os.Rename(dir+"/a.jsonl", dir+"/a.jsonl.1"); err != nil {
						t.Error(err)
					}
					if err := a.Reopen(); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(Record{Op: "late"}); err == nil {
		t.Error("a write after Close succeeded")
	}
	seen := map[string]bool{}
	for _, r := range append(auditLines(t, dir+"/a.jsonl.1"), auditLines(t, dir+"/a.jsonl")...) {
		if seen[r.RequestID] {
			t.Errorf("%s twice", r.RequestID)
		}
		seen[r.RequestID] = true
	}
	if len(seen) != writers*each {
		t.Errorf("%d lines in the two files, want %d", len(seen), writers*each)
	}
}
