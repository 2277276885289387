package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
)

// TestRunServesAndStops runs the command itself: flags, broker, HTTP,
// graceful stop.
func TestRunServesAndStops(t *testing.T) {
	url, prefix := mqtttest.Broker(t), mqtttest.Unique("rr")
	got := mqtttest.Subscribe(t, url, prefix+"/dev9/pay/notify")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	exit := make(chan int, 1)
	var logs syncbuf.Buffer
	go func() {
		exit <- run(ctx, []string{"-listen", "127.0.0.1:0", "-log-level", "debug", "-broker", url, "-prefix", prefix, "-client-id", mqtttest.Unique("relay-run-")}, io.Discard, &logs, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case code := <-exit:
		t.Fatalf("run exited %d: %s", code, logs.String())
	}
	base := "http://" + addr
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("healthz never became 200")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Post(base+"/notify/dev9/alipay", "application/x-www-form-urlencoded", strings.NewReader("x=1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "success" {
		t.Fatalf("answer %q", b)
	}
	got.Next(t, prefix+"/dev9/pay/notify", 5*time.Second)
	cancel()
	if code := <-exit; code != 0 {
		t.Fatalf("run exited %d after a stop", code)
	}
	// The start-up line names the version (not the -version flag's value).
	if !strings.Contains(logs.String(), "relayed notification") || !strings.Contains(logs.String(), `"version":"dev"`) {
		t.Fatalf("logs: %s", logs.String())
	}
}

// TestUsage: -h and -version answer on stdout with exit 0 and start no
// relay; mistakes exit 2 with a pointer to -h. The version is a string,
// not the flag's pointer.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"-h"}, 0, "notifyrelay forwards WeChat Pay and Alipay", ""},
		{[]string{"-help"}, 0, "Exit codes: 0", ""},
		{[]string{"-version"}, 0, "notifyrelay dev\n", ""},
		{[]string{"-bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"serve"}, 2, "", `unexpected argument "serve"`},
		{[]string{"-http-cert-file", "x"}, 2, "", "go together"},
		{[]string{"-log-level", "loud"}, 2, "", "want debug, info, warn or error"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr, nil)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.errs) {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q", tc.args, code, stdout.String(), stderr.String())
		}
		if tc.code == 2 && !strings.Contains(stderr.String(), "Run 'notifyrelay -h' for usage.") {
			t.Errorf("%v: no pointer to -h: %q", tc.args, stderr.String())
		}
	}
}
