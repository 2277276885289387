package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/fleetsim"
	"github.com/kioskpay/kioskpay/display"
	"github.com/kioskpay/kioskpay/internal/qrtest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/payment"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a broker and one fake device "dev1" and returns the global
// flags that reach it.
func setup(t *testing.T) (*fleetsim.Device, []string) {
	t.Helper()
	url, prefix := testBroker(t)
	d := newFakeDevice(t, url, prefix, "dev1")
	return d, []string{"-broker", url, "-prefix", prefix, "-timeout", "3s"}
}

func args(global []string, rest ...string) []string {
	return append(append([]string{}, global...), rest...)
}

func TestPayPaidWithAck(t *testing.T) {
	d, g := setup(t)
	d.SetOnCreate(func(d *fleetsim.Device, no string) { d.Pay(no) })
	r := kioskctl(testCtx(t), nil, args(g, "pay", "-device", "dev1", "-fee", "1000", "-subject", "massage 15 min",
		"-type", "massage_15", "-provider", "wxpay", "-out-trade-no", "order_000001", "-custom", `{"seat":3}`, "-ack")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	contains(t, "stdout", r.stdout, "¥10.00  massage 15 min\nWeChat Pay\n█", "PAID", "4200order_000001", "acknowledged")
	qrtest.Want(t, terminalCodes(t, r.stdout, 80), "weixin://wxpay/bizpayurl?pr=order_000001")
	if strings.Contains(r.stdout, "https://qr.alipay.com") {
		t.Error("printed an Alipay code for -provider wxpay")
	}
	waitFor(t, "the ack", 3*time.Second, func() bool { return len(d.Acks()) == 1 })
	if a := d.Acks()[0]; a.OutTradeNo != "order_000001" || !a.OK {
		t.Fatalf("ack = %+v", a)
	}
}

// TestPayFitsTerminal: in an 80-column terminal the two codes of an "any"
// order stand side by side under their labels, and everything up to the
// waiting line fits 24 rows, amount and subject included; in 60 columns
// they are stacked. The codes decode from the drawn screen.
func TestPayFitsTerminal(t *testing.T) {
	d, g := setup(t)
	d.SetOnCreate(func(d *fleetsim.Device, no string) { d.Pay(no) })
	for _, cols := range []int{80, 60} {
		r := kioskctl(testCtx(t), map[string]string{"COLUMNS": strconv.Itoa(cols)}, args(g, "pay", "-device", "dev1", "-fee", "1000",
			"-subject", "按摩 15 分钟", "-provider", "any", "-out-trade-no", "chair001_000"+strconv.Itoa(cols))...)
		if r.code != ExitOK {
			t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
		}
		screen, _, _ := strings.Cut(r.stdout, "\nchair001_000"+strconv.Itoa(cols)+": PAID")
		lines := strings.Split(screen, "\n")
		if lines[0] != "¥10.00  按摩 15 分钟" {
			t.Errorf("%d columns: first line %q, want the amount and subject", cols, lines[0])
		}
		side := strings.Contains(lines[1], "WeChat Pay") && strings.Contains(lines[1], "Alipay")
		if side != (cols == 80) {
			t.Errorf("%d columns: labels %q; side by side = %v", cols, lines[1], side)
		}
		if cols == 80 && (len(lines) > 24 || !strings.HasSuffix(screen, "waiting for payment…")) {
			t.Errorf("%d rows up to the waiting line, want at most 24:\n%s", len(lines), screen)
		}
		for _, l := range lines {
			if n := len([]rune(l)); n > cols {
				t.Errorf("%d columns: a line of %d: %q", cols, n, l)
			}
		}
		qrtest.Want(t, terminalCodes(t, r.stdout, cols), "weixin://wxpay/bizpayurl?pr=chair001_000"+strconv.Itoa(cols), "https://qr.alipay.com/chair001_000"+strconv.Itoa(cols))
	}
}

// terminalCodes reads the QR codes off kioskctl's output as a terminal of
// that many columns shows it.
func terminalCodes(t *testing.T, out string, cols int) []string {
	t.Helper()
	qrtest.Zbar(t)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	img, err := display.TerminalImage(lines, cols, len(lines))
	if err != nil {
		t.Fatal(err)
	}
	return qrtest.Decode(t, img)
}

func TestPayGeneratesOrderNumber(t *testing.T) {
	d, g := setup(t)
	var got string
	d.SetOnCreate(func(d *fleetsim.Device, no string) { got = no; d.Pay(no) })
	r := kioskctl(testCtx(t), nil, args(g, "pay", "-device", "dev1", "-fee", "1", "-subject", "x", "-no-qr")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	if !payment.ValidOutTradeNo(got) {
		t.Fatalf("generated out_trade_no %q is not valid at the providers", got)
	}
	contains(t, "stdout", r.stdout, "WeChat Pay: weixin://", "Alipay: https://qr.alipay.com/", "not acknowledged")
	if strings.Contains(r.stdout, "█") {
		t.Error("-no-qr drew a QR code")
	}
	if len(d.Acks()) != 0 {
		t.Error("acked without -ack")
	}
}

func TestPayNotPaidExitCodes(t *testing.T) {
	for _, status := range []contract.ResultStatus{contract.ResultExpired, contract.ResultCancelled, contract.ResultRefunded} {
		t.Run(string(status), func(t *testing.T) {
			d, g := setup(t)
			d.SetOnCreate(func(d *fleetsim.Device, no string) { d.Result(no, status) })
			r := kioskctl(testCtx(t), nil, args(g, "pay", "-device", "dev1", "-fee", "500", "-subject", "x", "-ack")...)
			if r.code != ExitNotPaid {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, ExitNotPaid, r.stderr)
			}
			contains(t, "stdout", r.stdout, strings.ToUpper(string(status)))
			if len(d.Acks()) != 0 {
				t.Error("acked an unpaid order")
			}
		})
	}
}

func TestPayRefused(t *testing.T) {
	_, g := setup(t)
	r := kioskctl(testCtx(t), nil, args(g, "pay", "-device", "dev1", "-fee", "100001", "-subject", "x")...)
	if r.code != ExitFailure {
		t.Fatalf("exit %d, want 1", r.code)
	}
	contains(t, "stderr", r.stderr, "device dev1 refused", "FEE_OUT_OF_RANGE", "data.total_fee")
}

func TestPayJSON(t *testing.T) {
	d, g := setup(t)
	d.SetOnCreate(func(d *fleetsim.Device, no string) { d.Pay(no) })
	r := kioskctl(testCtx(t), nil, args(g, "-o", "json", "pay", "-device", "dev1", "-fee", "250", "-subject", "x", "-provider", "alipay")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines (reply, result), got %d:\n%s", len(lines), r.stdout)
	}
	var reply contract.CreateReply
	if err := json.Unmarshal([]byte(lines[0]), &reply); err != nil {
		t.Fatalf("reply line: %v", err)
	}
	if reply.Action != "create" || reply.OrderInfo.QRCode == "" || reply.TotalFee != 250 {
		t.Fatalf("reply = %+v", reply)
	}
	var res contract.Result
	if err := json.Unmarshal([]byte(lines[1]), &res); err != nil {
		t.Fatalf("result line: %v", err)
	}
	if res.Status != contract.ResultPaid || res.OutTradeNo != reply.OutTradeNo {
		t.Fatalf("result = %+v", res)
	}
}

func writeKey(t *testing.T, key string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "result.key")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSignedRequestsAndResults(t *testing.T) {
	d, g := setup(t)
	key := []byte("0123456789abcdef0123456789abcdef")
	d.SetKey(key)
	d.SetOnCreate(func(d *fleetsim.Device, no string) { d.Pay(no) })
	good := writeKey(t, string(key))

	r := kioskctl(testCtx(t), nil, args(g, "-sign-key-file", good, "pay", "-device", "dev1", "-fee", "1000", "-subject", "x", "-type", "massage_15", "-ack")...)
	if r.code != ExitOK {
		t.Fatalf("signed pay: exit %d, stderr: %s", r.code, r.stderr)
	}
	contains(t, "stdout", r.stdout, "signature verified", "acknowledged")
	waitFor(t, "the signed ack", 3*time.Second, func() bool { return len(d.Acks()) == 1 })

	// Unsigned: the device refuses and kioskctl says how to fix it.
	r = kioskctl(testCtx(t), nil, args(g, "pay", "-device", "dev1", "-fee", "1000", "-subject", "x")...)
	if r.code != ExitFailure {
		t.Fatalf("unsigned pay: exit %d", r.code)
	}
	contains(t, "stderr", r.stderr, "SIGNATURE_INVALID", "-sign-key-file")

	// A result signed with another key must never count as paid.
	d.SetOnCreate(func(d *fleetsim.Device, no string) {
		d.SetKey([]byte("another key, not the operator's"))
		d.Pay(no)
		d.SetKey(key)
	})
	r = kioskctl(testCtx(t), nil, args(g, "-sign-key-file", good, "pay", "-device", "dev1", "-fee", "1000", "-subject", "x", "-ack")...)
	if r.code != ExitFailure {
		t.Fatalf("forged result: exit %d, want 1; stdout: %s", r.code, r.stdout)
	}
	contains(t, "stderr", r.stderr, "invalid signature", "do NOT deliver")
	if n := len(d.Acks()); n != 1 {
		t.Fatalf("acked a forged result (%d acks)", n)
	}

	// Signed cancel and refund pass the device's verification.
	d.AddOrder("signed_0001", "pending", 100)
	if r := kioskctl(testCtx(t), nil, args(g, "-sign-key-file", good, "cancel", "-device", "dev1", "-out-trade-no", "signed_0001")...); r.code != ExitOK {
		t.Fatalf("signed cancel: exit %d: %s", r.code, r.stderr)
	}
	if r := kioskctl(testCtx(t), nil, args(g, "-sign-key-file", good, "refund", "-device", "dev1", "-out-trade-no", "signed_0001", "-fee", "50")...); r.code != ExitOK {
		t.Fatalf("signed refund: exit %d: %s", r.code, r.stderr)
	}
}

func TestNoReply(t *testing.T) {
	d, g := setup(t)
	d.SetSilent(true)
	start := time.Now()
	r := kioskctl(testCtx(t), nil, args(g, "-timeout", "500ms", "query", "-device", "dev1", "-out-trade-no", "order_000001")...)
	if r.code != ExitFailure {
		t.Fatalf("exit %d, want 1", r.code)
	}
	contains(t, "stderr", r.stderr, "no reply from device dev1 within 500ms", "kioskctl status")
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %v to give up", time.Since(start))
	}
}

func TestBrokerUnreachable(t *testing.T) {
	r := kioskctl(testCtx(t), nil, "-broker", "tcp://127.0.0.1:1", "-timeout", "1s", "status")
	if r.code != ExitFailure {
		t.Fatalf("exit %d, want 1", r.code)
	}
	contains(t, "stderr", r.stderr, "connect to broker tcp://127.0.0.1:1: cannot reach the broker: dial tcp", "is the broker running")
	if strings.Contains(r.stderr, "network Error") {
		t.Errorf("paho's wording leaks: %s", r.stderr)
	}
}

func TestBrokerFromEnv(t *testing.T) {
	_, g := setup(t)
	env := map[string]string{"KIOSKCTL_BROKER": g[1], "KIOSKCTL_PREFIX": g[3]}
	r := kioskctl(testCtx(t), env, "-o", "json", "status")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	contains(t, "stdout", r.stdout, `"device":"dev1"`)
}

func TestStatus(t *testing.T) {
	url, prefix := testBroker(t)
	newFakeDevice(t, url, prefix, "dev1")
	c := testClient(t, url, "status-test")
	publish(t, c, prefix+"/dev2/status", true, contract.OfflineStatus())
	publish(t, c, prefix+"/dev3/status", true, []byte("garbage"))
	publish(t, c, prefix+"/dev4/status", true, []byte(`{"online":true,"version":"1.2.3","pending":0,"clock_synced":true,"flags":["storage_full"]}`))
	g := []string{"-broker", url, "-prefix", prefix, "-timeout", "3s"}
	t.Cleanup(func() {
		// A shared real broker keeps retained messages: clear ours.
		for _, id := range []string{"dev1", "dev2", "dev3", "dev4"} {
			c.Publish(prefix+"/"+id+"/status", 1, true, []byte{}).WaitTimeout(time.Second)
		}
	})

	r := kioskctl(testCtx(t), nil, args(g, "status")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	contains(t, "table", r.stdout, "DEVICE", "dev1", "yes", "1.2.3", "synced", "2025-01-02T03:04:05Z", "dev2", "NO", "dev3", "not JSON",
		"FLAGS", "storage_full", "4 devices: 2 online, 1 offline, 1 unreadable", "VERSION  ONLINE  OFFLINE", "1.2.3    2       0", "unknown  0       1")

	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "status")...)
	rows, totals := statusJSON(t, r.stdout)
	if len(rows) != 4 || rows[0].Device != "dev1" || !rows[0].Online || rows[0].Version != "1.2.3" || rows[1].Online || rows[2].Error == "" ||
		len(rows[3].Flags) != 1 || rows[3].Flags[0] != "storage_full" {
		t.Fatalf("rows = %+v", rows)
	}
	if !totals.Complete || totals.Devices != 4 || totals.Online != 2 || totals.Offline != 1 || totals.Unreadable != 1 ||
		totals.Versions["1.2.3"] != (versionCounts{Online: 2}) || totals.Versions[unknownVersion] != (versionCounts{Offline: 1}) {
		t.Fatalf("totals = %+v", totals)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-device", "dev1"}, ExitOK, ""},
		{[]string{"-device", "dev1", "-want-version", "1.2.3"}, ExitOK, ""},
		{[]string{"-device", "dev1", "-want-version", "1.3.0"}, ExitFailure, `runs version "1.2.3", want "1.3.0"`},
		{[]string{"-device", "dev2"}, ExitFailure, "device dev2 is offline"},
		{[]string{"-device", "nodev"}, ExitFailure, "never reported a status"},
		{[]string{"-want-version", "1"}, ExitUsage, "-want-version needs -device"},
		{[]string{"-device", "bad/id"}, ExitUsage, "want 1-64 characters"},
	} {
		r := kioskctl(testCtx(t), nil, args(g, append([]string{"status"}, tc.args...)...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("status %v: exit %d stderr %q; want exit %d containing %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

func TestStatusEmptyFleet(t *testing.T) {
	url, prefix := testBroker(t)
	r := kioskctl(testCtx(t), nil, "-broker", url, "-prefix", prefix, "-o", "json", "status")
	rows, totals := statusJSON(t, r.stdout)
	if r.code != ExitOK || len(rows) != 0 || totals.Devices != 0 || !totals.Complete {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	r = kioskctl(testCtx(t), nil, "-broker", url, "-prefix", prefix, "status")
	if r.code != ExitOK || r.stdout != "" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	contains(t, "stderr", r.stderr, "no device has published "+prefix+"/+/status")
}

func TestWatch(t *testing.T) {
	d, g := setup(t)
	d.AddOrder("watch_0001", "pending", 300)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	done := make(chan runResult, 1)
	var out, errb syncbuf.Buffer
	go func() {
		m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		code := m.Run(ctx, args(g, "-o", "json", "watch", "-device", "dev1", "-count", "4"))
		done <- runResult{code: code}
	}()
	waitFor(t, "watch to subscribe", 5*time.Second, func() bool { return strings.Contains(errb.String(), "watching") })

	// cancel → request, reply, event, result: four messages.
	if r := kioskctl(testCtx(t), nil, args(g, "cancel", "-device", "dev1", "-out-trade-no", "watch_0001")...); r.code != ExitOK {
		t.Fatalf("cancel: exit %d: %s", r.code, r.stderr)
	}
	select {
	case r := <-done:
		if r.code != ExitOK {
			t.Fatalf("watch exit %d: %s", r.code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("watch did not see 4 messages; got:\n%s", out.String())
	}
	var topics []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var l watchLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if l.Device != "dev1" || l.Payload == nil {
			t.Fatalf("line %+v", l)
		}
		topics = append(topics, l.Topic)
	}
	want := map[string]bool{"pay/cancel": true, "pay/reply": true, "pay/event": true, "pay/result": true}
	for _, tp := range topics {
		delete(want, tp)
	}
	if len(want) != 0 {
		t.Fatalf("topics %v, missing %v", topics, want)
	}

	// Text mode until interrupted: exit 0 on Ctrl-C.
	ctx2, cancel2 := context.WithCancel(testCtx(t))
	var out2, errb2 syncbuf.Buffer
	done2 := make(chan int, 1)
	go func() {
		m := &Main{Stdout: &out2, Stderr: &errb2, Getenv: func(string) string { return "" }}
		done2 <- m.Run(ctx2, args(g, "watch"))
	}()
	waitFor(t, "watch to subscribe", 5*time.Second, func() bool { return strings.Contains(errb2.String(), "watching") })
	d.Result("watch_0001", contract.ResultRefunded)
	waitFor(t, "a text line", 5*time.Second, func() bool { return strings.Contains(out2.String(), "REFUNDED") })
	cancel2()
	if code := <-done2; code != ExitOK {
		t.Fatalf("interrupted watch: exit %d", code)
	}
	contains(t, "text", out2.String(), "dev1 pay/result", "out_trade_no=watch_0001", "fee=¥3.00")
}

func TestQueryCancelRefund(t *testing.T) {
	d, g := setup(t)
	d.AddOrder("order_q0001", "paid", 1200)

	r := kioskctl(testCtx(t), nil, args(g, "query", "-device", "dev1", "-out-trade-no", "order_q0001")...)
	if r.code != ExitOK {
		t.Fatalf("query: exit %d: %s", r.code, r.stderr)
	}
	contains(t, "query", r.stdout, "order_q0001", "paid", "¥12.00", "wxpay")

	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "query", "-device", "dev1", "-out-trade-no", "order_q0001")...)
	var q contract.QueryReply
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil || q.TotalFee != 1200 || q.State != "paid" || q.Action != "query" {
		t.Fatalf("query json %v: %+v", err, q)
	}

	r = kioskctl(testCtx(t), nil, args(g, "refund", "-device", "dev1", "-out-trade-no", "order_q0001", "-fee", "500", "-reason", "chair broken")...)
	if r.code != ExitOK {
		t.Fatalf("refund: exit %d: %s", r.code, r.stderr)
	}
	contains(t, "refund", r.stdout, "order_q0001", "¥5.00", "refunded", "chair broken")

	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "cancel", "-device", "dev1", "-out-trade-no", "order_q0001")...)
	var c contract.Reply
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil || r.code != ExitOK || c.Action != "cancel" {
		t.Fatalf("cancel json exit %d %v: %q", r.code, err, r.stdout)
	}

	// Refusals: exit 1, the error name, and in JSON mode the reply too.
	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "query", "-device", "dev1", "-out-trade-no", "order_none1")...)
	if r.code != ExitFailure {
		t.Fatalf("unknown order: exit %d", r.code)
	}
	contains(t, "stderr", r.stderr, "ORDER_NOT_FOUND")
	var e contract.Reply
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.Error != contract.ErrOrderNotFound || e.Code != 400 {
		t.Fatalf("refusal json %v: %q", err, r.stdout)
	}
}

func TestOrdersPaging(t *testing.T) {
	d, g := setup(t)
	nos := []string{"o_000001", "o_000002", "o_000003", "o_000004", "o_000005", "o_000006", "o_000007"}
	for i, no := range nos {
		state := "delivered"
		if i%2 == 0 {
			state = "expired"
		}
		d.AddOrder(no, state, payment.Fen(100*(i+1)))
	}
	// The device returns fewer orders than asked (3 a page); kioskctl
	// follows next.
	d.AddOrder("o_000008", "pending", 1)
	d.SetMaxPage(3)

	r := kioskctl(testCtx(t), nil, args(g, "-o", "json", "orders", "-device", "dev1", "-limit", "0")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var all struct {
		Device string                  `json:"device"`
		Orders []contract.OrderSummary `json:"orders"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Orders) != 8 || all.Orders[0].OutTradeNo != "o_000008" || all.Orders[7].OutTradeNo != "o_000001" {
		t.Fatalf("orders = %+v", all.Orders)
	}

	// A limit that ends inside the second page.
	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "orders", "-device", "dev1", "-limit", "5")...)
	_ = json.Unmarshal([]byte(r.stdout), &all)
	if len(all.Orders) != 5 || all.Orders[4].OutTradeNo != "o_000004" {
		t.Fatalf("limit 5: %+v", all.Orders)
	}
	seenBefore := len(d.Seen())
	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "orders", "-device", "dev1", "-state", "expired", "-limit", "0")...)
	_ = json.Unmarshal([]byte(r.stdout), &all)
	if len(all.Orders) != 4 {
		t.Fatalf("expired: %+v", all.Orders)
	}
	for _, o := range all.Orders {
		if o.State != "expired" {
			t.Fatalf("state filter leaked %+v", o)
		}
	}
	requests := len(d.Seen()) - seenBefore
	if requests != 2 {
		t.Fatalf("%d requests for 4 orders in pages of 3, want 2", requests)
	}

	r = kioskctl(testCtx(t), nil, args(g, "orders", "-device", "dev1", "-limit", "2")...)
	contains(t, "table", r.stdout, "OUT_TRADE_NO", "o_000008", "o_000007", "¥7.00")
	if strings.Contains(r.stdout, "o_000006") {
		t.Errorf("limit 2 printed a third order:\n%s", r.stdout)
	}

	if r := kioskctl(testCtx(t), nil, args(g, "orders", "-device", "dev1", "-state", "bogus")...); r.code != ExitUsage {
		t.Fatalf("bad state: exit %d", r.code)
	}

	d.SetFlags("o_000007", contract.FlagRefundStuck)
	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "orders", "-device", "dev1", "-flag", "refund_stuck", "-limit", "0")...)
	all.Orders = nil
	_ = json.Unmarshal([]byte(r.stdout), &all)
	if len(all.Orders) != 1 || all.Orders[0].OutTradeNo != "o_000007" {
		t.Fatalf("-flag refund_stuck: %+v (%s)", all.Orders, r.stderr)
	}
	if r := kioskctl(testCtx(t), nil, args(g, "orders", "-device", "dev1", "-flag", "bogus")...); r.code != ExitUsage || !strings.Contains(r.stderr, "refund_stuck") {
		t.Fatalf("bad flag: exit %d, %s", r.code, r.stderr)
	}
}

func TestReconcile(t *testing.T) {
	d, g := setup(t)
	d.AddOrder("r_000001", "expired", 100)
	r := kioskctl(testCtx(t), nil, args(g, "reconcile", "-device", "dev1", "-since", "72h")...)
	if r.code != ExitOK {
		t.Fatalf("clean: exit %d: %s", r.code, r.stderr)
	}
	contains(t, "stdout", r.stdout, "checked 1 order (1 provider order), 0 mismatches")

	d.SetMismatches([]contract.Mismatch{{OutTradeNo: "r_000001", LocalState: "expired", ProviderState: "SUCCESS", Provider: "wxpay", Detail: "paid at provider"}})
	r = kioskctl(testCtx(t), nil, args(g, "reconcile", "-device", "dev1")...)
	if r.code != ExitNotPaid {
		t.Fatalf("mismatch: exit %d, want %d", r.code, ExitNotPaid)
	}
	contains(t, "stdout", r.stdout, "1 mismatch\n", "r_000001", "SUCCESS", "paid at provider")
	contains(t, "stderr", r.stderr, "1 order of dev1 disagree")

	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "reconcile", "-device", "dev1", "-since", "2025-01-01T00:00:00+08:00")...)
	var rr contract.ReconcileReply
	if err := json.Unmarshal([]byte(r.stdout), &rr); err != nil || len(rr.Mismatches) != 1 || rr.Checked != 1 {
		t.Fatalf("json %v: %q", err, r.stdout)
	}
	if !strings.Contains(rr.Msg, "2025-01-01T00:00:00+08:00") {
		t.Fatalf("since not sent: msg %q", rr.Msg)
	}

	if r := kioskctl(testCtx(t), nil, args(g, "reconcile", "-device", "dev1", "-since", "yesterday")...); r.code != ExitUsage {
		t.Fatalf("bad since: exit %d", r.code)
	}
}

func TestUsageErrors(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, ExitUsage, "Commands:"},
		{[]string{"status", "extra"}, ExitUsage, `unexpected argument "extra"`},
		{[]string{"frobnicate"}, ExitUsage, `unknown command "frobnicate"`},
		{[]string{"-o", "yaml", "status"}, ExitUsage, "want text or json"},
		{[]string{"pay", "-fee", "1", "-subject", "x"}, ExitUsage, "-device is required"},
		{[]string{"pay", "-device", "d", "-subject", "x"}, ExitUsage, "-fee is required"},
		{[]string{"pay", "-device", "d", "-fee", "1"}, ExitUsage, "-subject is required"},
		{[]string{"pay", "-device", "d", "-fee", "1", "-subject", "x", "-provider", "paypal"}, ExitUsage, "want wxpay, alipay or any"},
		{[]string{"pay", "-device", "d", "-fee", "1", "-subject", "x", "-out-trade-no", "no"}, ExitUsage, "6-32 characters"},
		{[]string{"pay", "-device", "d", "-fee", "1", "-subject", "x", "-custom", "[1]"}, ExitUsage, "-custom must be a JSON object"},
		{[]string{"pay", "-device", "d", "-fee", "1", "-subject", "x", "-expire", "3h"}, ExitUsage, "1m..2h"},
		{[]string{"query", "-device", "d"}, ExitUsage, "-out-trade-no is required"},
		{[]string{"query", "-device", "d", "-out-trade-no", "abc", "extra"}, ExitUsage, "unexpected argument"},
		{[]string{"refund", "-device", "d", "-out-trade-no", "abcdef", "-fee", "-5"}, ExitUsage, "positive amount"},
		{[]string{"-broker", "::bad", "status"}, ExitUsage, "want a URL"},
		{[]string{"-ca-file", "/x", "status"}, ExitUsage, "not a TLS URL"},
		{[]string{"sim"}, ExitUsage, "sim needs an action"},
		{[]string{"sim", "dance"}, ExitUsage, "unknown sim action"},
		{[]string{"sim", "pay", "-out-trade-no", "x"}, ExitUsage, "-provider is required"},
		{[]string{"sim", "fault"}, ExitUsage, "-kind is required"},
	} {
		r := kioskctl(ctx, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d containing %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	for _, a := range [][]string{{"help"}, {"-h"}, {"help", "pay"}, {"pay", "-h"}, {"sim", "-h"}, {"sim", "pay", "-h"}, {"version"}, {"-version"}} {
		if r := kioskctl(ctx, nil, a...); r.code != ExitOK || r.stdout == "" {
			t.Errorf("%v: exit %d, stdout %q", a, r.code, r.stdout)
		}
	}
}

func TestGlobalFlagsAfterCommand(t *testing.T) {
	_, g := setup(t)
	// Global flags after the command name work as well as before it.
	r := kioskctl(testCtx(t), nil, "status", "-broker", g[1], "-prefix", g[3], "-o", "json", "-device", "dev1")
	if r.code != ExitOK || !strings.Contains(r.stdout, `"online":true`) {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}
