package proof

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/payment"
)

// TestClusterFailover runs the real daemon against a real three-node NATS
// cluster with MQTT and JetStream (deploy/nats/kioskpay.conf's shape, every
// node on loopback), with mqtt.urls listing all three:
//
//   - an order in flight while the node the daemon is connected to is
//     SIGKILLed still completes with one paid outcome: one seq, one
//     delivery, nothing refunded;
//   - the daemon's retained status is right on every surviving node;
//   - kioskctl, given all three nodes, skips the dead one;
//   - when the daemon itself is then SIGKILLed, the surviving nodes publish
//     its Last Will.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node NATS cluster and the daemon (about a minute); run without -short")
	}
	if _, err := NATSBinary(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if keep := os.Getenv("KIOSKPAY_PROOF_DIR"); keep != "" {
		dir = filepath.Join(keep, fmt.Sprintf("%s-%d", t.Name(), time.Now().Unix()))
	}
	cl, err := StartNATSCluster(ctx, filepath.Join(dir, "nats"), 3, NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	n1, n2, n3 := cl.Nodes[0], cl.Nodes[1], cl.Nodes[2]

	var mu sync.Mutex
	var results []testrig.Result
	gotResult := make(chan struct{}, 16)
	// The controller (and the customer) stay on n2, which survives.
	rig, err := testrig.NewRig(ctx, dir, testrig.RigOptions{BrokerURL: n2.MQTT, Keys: simkeys.Get(t), OnResult: func(r testrig.Result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
		gotResult <- struct{}{}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.Close)
	const dev = "cluster-1"
	d, err := rig.Daemon(dev, map[string]any{"mqtt.url": nil, "mqtt.urls": cl.URLs(), "unlock.ack_timeout": "30s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Kill() })
	if err := rig.Ctl.WaitOnline(ctx, dev); err != nil {
		t.Fatalf("%v (daemon log %s)", err, d.Log)
	}
	clientID := "kioskpayd-" + dev
	t.Logf("daemon online on the cluster")
	if on, err := n1.ClientConnected(ctx, clientID); err != nil || !on {
		t.Fatalf("the daemon is not on n1, the first of mqtt.urls (connected %v, %v)", on, err)
	}

	// An order, shown on the screen: in flight.
	const otn = "cluster_000001"
	reply, err := rig.Ctl.Request(ctx, dev, "pay/create", map[string]any{"provider": "wxpay",
		"data": map[string]any{"out_trade_no": otn, "total_fee": 1000, "subject": "cluster", "type": "massage_15"}})
	if err != nil || reply.Code != 0 {
		t.Fatalf("create: %v %s", err, reply.Raw)
	}

	t.Logf("order %s created; killing n1", otn)
	// The daemon's node dies; the customer pays at once.
	killed := time.Now()
	n1.Kill()
	if err := rig.Sim.Pay(payment.WxPay, otn, 0); err != nil {
		t.Fatal(err)
	}
	var paid testrig.Result
	for paid.OutTradeNo == "" {
		select {
		case <-gotResult:
			mu.Lock()
			for _, r := range results {
				if r.OutTradeNo == otn && r.Status == "paid" {
					paid = r
				}
			}
			mu.Unlock()
		case <-ctx.Done():
			t.Fatalf("no paid result after n1 died (daemon log %s)", d.Log)
		}
	}
	t.Logf("paid result (seq %d) %s after n1 was killed", paid.Seq, time.Since(killed).Round(time.Millisecond))
	// The ack goes through n2 while the cluster settles. A controller
	// sends it again when no reply comes (the daemon dedupes); whether an
	// unanswered one arrives later is checked below.
	var ackReply testrig.Reply
	var ackIDs []string
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		id, ch, err := rig.Ctl.Send(actx, dev, "unlock/ack", map[string]any{"out_trade_no": otn, "ok": true})
		if err == nil {
			ackIDs = append(ackIDs, id)
			select {
			case ackReply = <-ch:
			case <-actx.Done():
				err = actx.Err()
			}
		}
		acancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		t.Logf("ack: no reply within 5s (%v); sent again", err)
	}
	if ackReply.Code != 0 || ctx.Err() != nil {
		t.Fatalf("ack: %v %s", ctx.Err(), ackReply.Raw)
	}
	t.Logf("acknowledged")
	q, err := rig.Ctl.Request(ctx, dev, "pay/query", map[string]any{"out_trade_no": otn})
	var qr contract.QueryReply
	if err == nil {
		err = q.Decode(&qr)
	}
	if err != nil || qr.State != "delivered" {
		t.Fatalf("query: %v, state %q (%s)", err, qr.State, q.Raw)
	}
	onOther := false
	for _, n := range []*NATSNode{n2, n3} {
		on, err := n.ClientConnected(ctx, clientID)
		if err != nil {
			t.Fatal(err)
		}
		onOther = onOther || on
	}
	if !onOther {
		t.Fatal("the daemon is on neither surviving node")
	}

	// One paid outcome: every result of the order is the same paid result
	// (re-sends keep the seq), and the provider kept the money once.
	mu.Lock()
	for _, r := range results {
		if r.OutTradeNo == otn && (r.Status != "paid" || r.Seq != paid.Seq) {
			t.Errorf("another outcome for %s: %+v (first paid seq %d)", otn, r, paid.Seq)
		}
	}
	mu.Unlock()
	legs := rig.Sim.Legs(otn)
	if len(legs) != 1 || legs[0].Paid != 1000 || legs[0].Refunded != 0 {
		t.Fatalf("provider side: %+v", legs)
	}

	t.Logf("one paid outcome, delivered")
	// Every ack the broker took reaches the daemon, late or not (QoS 1).
	for _, id := range ackIDs[:len(ackIDs)-1] {
		deadline := time.Now().Add(20 * time.Second)
		for rig.Ctl.Replies(id) == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if rig.Ctl.Replies(id) == 0 {
			t.Errorf("ack %s, taken by the broker during the failover, never reached the daemon", id)
		} else {
			t.Logf("ack %s, unanswered at first, reached the daemon later", id)
		}
	}
	// Retained status: online, on every surviving node.
	status := rig.Prefix + "/" + dev + "/status"
	for _, n := range []*NATSNode{n2, n3} {
		waitRetained(t, ctx, n, status, func(s map[string]any) bool { return s["online"] == true && s["version"] != nil })
	}

	t.Logf("retained status online on n2 and n3")
	// kioskctl skips the dead node and confirms the device is healthy.
	ctl := filepath.Join(dir, "kioskctl")
	if err := testrig.Build(ctx, "./cmd/kioskctl", ctl); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, ctl, "-broker", strings.Join(cl.URLs(), ","), "-prefix", rig.Prefix, "status", "-device", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("kioskctl status over the cluster: %v\n%s", err, out)
	}

	t.Logf("kioskctl status -broker n1,n2,n3: %s", strings.TrimSpace(string(out)))
	// The daemon dies too: the surviving nodes publish its Last Will.
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*NATSNode{n2, n3} {
		waitRetained(t, ctx, n, status, func(s map[string]any) bool { return s["online"] == false })
	}
	t.Logf("Last Will retained on n2 and n3")
}

// waitRetained subscribes to topic on node n with a fresh session, again
// and again, until the retained message satisfies ok: the state a client
// connecting to that node right now would see.
func waitRetained(t *testing.T, ctx context.Context, n *NATSNode, topic string, ok func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		got := make(chan []byte, 1)
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(n.MQTT).SetClientID("proof-check-" + testrig.RandomHex(4)).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4))
		if err := mqttclient.Wait(ctx, c.Connect(), 10*time.Second); err == nil {
			_ = mqttclient.Wait(ctx, c.Subscribe(topic, 0, func(_ mqtt.Client, m mqtt.Message) {
				if m.Retained() {
					select {
					case got <- m.Payload():
					default:
					}
				}
			}), 10*time.Second)
			select {
			case p := <-got:
				last = string(p)
				var s map[string]any
				if json.Unmarshal(p, &s) == nil && ok(s) {
					c.Disconnect(0)
					return
				}
			case <-time.After(time.Second):
				last = "(nothing retained)"
			}
		}
		c.Disconnect(0)
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s on %s: retained %s", topic, n.Name, last)
}
