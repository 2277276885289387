package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/fleetsim"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/internal/testrig"
)

// statusJSON splits status -o json output into the device lines (the last
// line of each device, sorted by device: a status published while the
// listing runs can come twice, retained and live) and the totals line.
func statusJSON(t *testing.T, out string) ([]deviceStatus, statusTotals) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := map[string]deviceStatus{}
	for _, l := range lines[:len(lines)-1] {
		var r deviceStatus
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Device == "" {
			t.Fatalf("device line %q: %v", l, err)
		}
		last[r.Device] = r
	}
	var rows []deviceStatus
	for _, r := range last {
		rows = append(rows, r)
	}
	var end struct {
		Totals *statusTotals `json:"totals"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &end); err != nil || end.Totals == nil {
		t.Fatalf("last line %q is not the totals: %v", lines[len(lines)-1], err)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Device < rows[j].Device })
	return rows, *end.Totals
}

func TestStatusOneDevice(t *testing.T) {
	_, g := setup(t)
	r := kioskctl(testCtx(t), nil, args(g, "status")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	contains(t, "stdout", r.stdout, "\n1 device: 1 online, 0 offline\n")
	r = kioskctl(testCtx(t), nil, args(g, "status", "-totals")...)
	if r.code != ExitOK || strings.Contains(r.stdout, "DEVICE") || !strings.HasPrefix(r.stdout, "1 device: 1 online") {
		t.Fatalf("-totals: exit %d stdout %q", r.code, r.stdout)
	}
	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "status", "-totals")...)
	if rows, totals := statusJSON(t, r.stdout); len(rows) != 0 || totals.Devices != 1 {
		t.Fatalf("-totals -o json: %q", r.stdout)
	}
}

// A comma-separated -broker is tried in order: a dead first broker is
// skipped.
func TestStatusBrokerList(t *testing.T) {
	_, g := setup(t)
	g[1] = "tcp://127.0.0.1:1," + g[1]
	r := kioskctl(testCtx(t), nil, args(g, "status", "-device", "dev1")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, bad := range []string{"tcp://a:1,ssl://b:2", "tcp://a:1,tcp://a:1", " , "} {
		r := kioskctl(testCtx(t), nil, "-broker", bad, "status")
		if r.code != ExitUsage || !strings.Contains(r.stderr, "-broker") {
			t.Errorf("-broker %q: exit %d stderr %q", bad, r.code, r.stderr)
		}
	}
}

// denyMarker is a broker that acknowledges kioskctl's end marker and
// drops it, as Mosquitto does with a publish its ACL denies: the listing
// can never be confirmed complete.
type denyMarker struct{ mqtttest.AllowHook }

func (h *denyMarker) ID() string { return "deny-marker" }

func (h *denyMarker) Provides(b byte) bool { return b == mochi.OnPublish || h.AllowHook.Provides(b) }

func (h *denyMarker) OnPublish(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if strings.Contains(pk.TopicName, "/"+markerLevel+"/") {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

func TestStatusIncompleteWhenTheMarkerNeverComesBack(t *testing.T) {
	_, url := mqtttest.Mochi(t, new(denyMarker), nil)
	prefix := "kt" + randomHex(4)
	newFakeDevice(t, url, prefix, "dev1")
	g := []string{"-broker", url, "-prefix", prefix, "-timeout", "500ms"}

	start := time.Now()
	r := kioskctl(testCtx(t), nil, args(g, "status")...)
	if r.code != ExitIncomplete {
		t.Fatalf("exit %d, want %d: %s", r.code, ExitIncomplete, r.stderr)
	}
	contains(t, "stderr", r.stderr, "may be incomplete", "end-of-listing markers did not come back", prefix+"/_kioskctl/#", "1 device listed")
	contains(t, "stdout", r.stdout, "dev1", "1 device: 1 online")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}

	r = kioskctl(testCtx(t), nil, args(g, "-o", "json", "status")...)
	if _, totals := statusJSON(t, r.stdout); r.code != ExitIncomplete || totals.Complete || !strings.Contains(totals.Incomplete, "marker") {
		t.Fatalf("exit %d totals %+v", r.code, totals)
	}
	// A health check of a device that did report is still definite.
	if r := kioskctl(testCtx(t), nil, args(g, "status", "-device", "dev1")...); r.code != ExitOK {
		t.Fatalf("-device dev1: exit %d: %s", r.code, r.stderr)
	}
	if r := kioskctl(testCtx(t), nil, args(g, "status", "-device", "nodev")...); r.code != ExitIncomplete {
		t.Fatalf("-device nodev: exit %d: %s", r.code, r.stderr)
	}
}

// refuseMarkerSub refuses the first n subscriptions to kioskctl's end
// marker, as a NATS cluster short of a node may while it cannot create the
// marker's QoS 1 consumer.
type refuseMarkerSub struct {
	mqtttest.AllowHook
	mu sync.Mutex
	n  int
}

func (h *refuseMarkerSub) ID() string { return "refuse-marker-sub" }

func (h *refuseMarkerSub) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	if write || !strings.Contains(topic, "/"+markerLevel+"/") {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n--
	return h.n < 0
}

func TestStatusMarkerSubscriptionRefused(t *testing.T) {
	for _, tc := range []struct {
		refusals int
		code     int
		stderr   string
	}{
		{refusals: 2, code: ExitOK},
		{refusals: 1000, code: ExitIncomplete, stderr: "the broker did not take kioskctl's end-of-listing markers (the broker refused the subscription to them)"},
	} {
		_, url := mqtttest.Mochi(t, &refuseMarkerSub{n: tc.refusals}, nil)
		prefix := "kt" + randomHex(4)
		newFakeDevice(t, url, prefix, "dev1")
		r := kioskctl(testCtx(t), nil, "-broker", url, "-prefix", prefix, "-timeout", "2s", "status")
		if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) || !strings.Contains(r.stdout, "dev1") {
			t.Errorf("%d refusals: exit %d stderr %q stdout %q", tc.refusals, r.code, r.stderr, r.stdout)
		}
	}
}

// startMosquitto starts a private Mosquitto with deploy/mosquitto's
// per-client limits plus extra lines, or skips the test.
func startMosquitto(t *testing.T, extra ...string) *testrig.Mosquitto {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if _, err := exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			t.Skip("mosquitto not installed (apt-get install mosquitto)")
		}
	}
	limits, err := testrig.DeployBrokerLimits(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := testrig.StartMosquitto(testCtx(t), filepath.Join(t.TempDir(), "mosquitto"), append(limits, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop() })
	return b
}

// A fleet of thousands of devices on a real Mosquitto with the limits
// deploy/mosquitto ships: every retained status is listed, the end marker
// confirms it, and the totals add up.
func TestStatusFleetOnDeployBroker(t *testing.T) {
	ctx := testCtx(t)
	b := startMosquitto(t)
	const n, online = 5000, 100
	f, err := fleetsim.Start(ctx, fleetsim.Options{
		Conn: fleetsim.Conn{Brokers: []string{b.URL}}, Prefix: "fleet", Devices: n, Online: online,
		Versions: []string{"1.2.3", "1.3.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(context.Background(), false) })

	g := []string{"-broker", b.URL, "-prefix", "fleet"}
	r := kioskctl(ctx, nil, args(g, "-o", "json", "status")...)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	rows, totals := statusJSON(t, r.stdout)
	want := statusTotals{Devices: n, Online: online, Offline: n - online, Complete: true, Versions: map[string]versionCounts{
		"1.2.3": {Online: online / 2}, "1.3.0": {Online: online / 2}, unknownVersion: {Offline: n - online},
	}}
	if fmt.Sprint(totals) != fmt.Sprint(want) || len(rows) != n {
		t.Fatalf("%d rows, totals %+v; want %+v", len(rows), totals, want)
	}
	for i, r := range rows {
		if r.Device != f.ID(i) {
			t.Fatalf("row %d is %s, want %s", i, r.Device, f.ID(i))
		}
	}
	r = kioskctl(ctx, nil, args(g, "status", "-totals")...)
	contains(t, "text", r.stdout, "5000 devices: 100 online, 4900 offline", "unknown  0       4900", "1.2.3    50      0")
}

// watch -status lists the retained statuses, says when they are all in,
// then goes on live.
func TestWatchStatus(t *testing.T) {
	d, g := setup(t)
	c := testClient(t, g[1], "watch-status")
	publish(t, c, g[3]+"/dev2/status", true, contract.OfflineStatus())
	t.Cleanup(func() { c.Publish(g[3]+"/dev2/status", 1, true, []byte{}).WaitTimeout(time.Second) })
	w := startWatch(t, args(g, "watch", "-status"))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(w.stderr.String(), "end of retained status: 2 devices; live from here") {
		if time.Now().After(deadline) {
			t.Fatalf("no end of the retained statuses; stderr:\n%s\nstdout:\n%s", w.stderr.String(), w.stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	contains(t, "retained", w.stdout.String(), "dev1 status", "online=true", "version=1.2.3", "dev2 status", "online=false")
	d.AddOrder("ws_000001", "pending", 100)
	d.Pay("ws_000001")
	waitFor(t, "the live result", 5*time.Second, func() bool { return strings.Contains(w.stdout.String(), "PAID") })
	if code := w.stop(); code != ExitOK {
		t.Fatalf("exit %d: %s", code, w.stderr.String())
	}
}

func TestWatchStatusIncomplete(t *testing.T) {
	_, url := mqtttest.Mochi(t, new(denyMarker), nil)
	prefix := "kt" + randomHex(4)
	newFakeDevice(t, url, prefix, "dev1")
	w := startWatch(t, []string{"-broker", url, "-prefix", prefix, "-timeout", "300ms", "watch", "-status"})
	waitFor(t, "the warning", 5*time.Second, func() bool {
		return strings.Contains(w.stderr.String(), "retained status: the listing may be incomplete")
	})
	if code := w.stop(); code != ExitIncomplete {
		t.Fatalf("exit %d, want %d: %s", code, ExitIncomplete, w.stderr.String())
	}
}

// A dropped connection is reported and watch carries on after
// reconnecting (here to the same broker behind a proxy).
func TestWatchReconnects(t *testing.T) {
	d, g := setup(t)
	proxy, purl := mqtttest.NewProxy(t, g[1])
	pg := append([]string(nil), g...)
	pg[1] = purl
	w := startWatch(t, args(pg, "watch", "-device", "dev1"))
	proxy.Cut()
	waitFor(t, "the reconnect", 10*time.Second, func() bool {
		return strings.Count(w.stderr.String(), "watching") == 2
	})
	contains(t, "stderr", w.stderr.String(), "lost", "reconnecting: messages published meanwhile are not shown")
	d.AddOrder("wr_000001", "pending", 100)
	d.Pay("wr_000001")
	waitFor(t, "a message after the reconnect", 5*time.Second, func() bool { return strings.Contains(w.stdout.String(), "PAID") })
	if code := w.stop(); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
}

// runningWatch is a kioskctl watch running until stop.
type runningWatch struct {
	stdout, stderr syncbuf.Buffer
	cancel         context.CancelFunc
	done           chan int
}

func startWatch(t *testing.T, argv []string) *runningWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	w := &runningWatch{cancel: cancel, done: make(chan int, 1)}
	go func() {
		m := &Main{Stdout: &w.stdout, Stderr: &w.stderr, Getenv: func(string) string { return "" }}
		w.done <- m.Run(ctx, argv)
	}()
	t.Cleanup(func() { w.stop() })
	waitFor(t, "watch to subscribe", 5*time.Second, func() bool { return strings.Contains(w.stderr.String(), "watching") })
	return w
}

// stop interrupts watch (Ctrl-C) and returns its exit code.
func (w *runningWatch) stop() int {
	w.cancel()
	select {
	case c := <-w.done:
		w.done <- c
		return c
	case <-time.After(10 * time.Second):
		return -1
	}
}
