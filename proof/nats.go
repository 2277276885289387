package proof

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/internal/testrig"
	"github.com/kioskpay/kioskpay/mqttclient"
)

// NATSCluster is a private cluster of nats-server nodes on loopback ports,
// each with JetStream (its own store directory) and an MQTT listener: the
// shape deploy/nats/kioskpay.conf describes for a fleet that outgrows one
// Mosquitto. It never touches the ports of a NATS the machine already runs.
type NATSCluster struct {
	Nodes []*NATSNode
	dir   string
	bin   string
}

// NATSNode is one nats-server of a cluster.
type NATSNode struct {
	Name string
	// MQTT is the node's MQTT URL, tcp://127.0.0.1:<port>.
	MQTT string
	// Monitor is the node's HTTP monitoring base URL.
	Monitor string

	conf string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// NATSOptions tune the nodes' mqtt block.
type NATSOptions struct {
	// AckWait is mqtt.ack_wait: how long a QoS 1 message delivered to a
	// client waits for its PUBACK before it is redelivered (after a
	// failover, too). Default 5s, well inside unlock.ack_timeout.
	AckWait time.Duration
}

// NATSBinary finds nats-server (Debian installs it in /usr/sbin).
func NATSBinary() (string, error) {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server", nil
	}
	return "", errors.New("nats-server not installed (apt-get install nats-server)")
}

// StartNATSCluster starts n nodes under dir and waits until every node
// accepts MQTT sessions (JetStream has a meta leader and the MQTT streams
// exist).
func StartNATSCluster(ctx context.Context, dir string, n int, o NATSOptions) (_ *NATSCluster, err error) {
	bin, err := NATSBinary()
	if err != nil {
		return nil, err
	}
	if o.AckWait <= 0 {
		o.AckWait = 5 * time.Second
	}
	c := &NATSCluster{dir: dir, bin: bin}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	type ports struct{ client, cluster, mqtt, http int }
	ps := make([]ports, n)
	for i := range ps {
		for _, p := range []*int{&ps[i].client, &ps[i].cluster, &ps[i].mqtt, &ps[i].http} {
			if *p, err = testrig.FreePort(); err != nil {
				return nil, err
			}
		}
	}
	routes := make([]string, n)
	for i, p := range ps {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p.cluster)
	}
	for i, p := range ps {
		name := fmt.Sprintf("n%d", i+1)
		nd := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(nd, "js"), 0o755); err != nil {
			return nil, err
		}
		// server_name: NATS's MQTT refuses to start without one (it names
		// the node's retained-message consumer). stream_replicas 3: the
		// MQTT streams (sessions, QoS 1 messages, retained messages)
		// survive the loss of one node.
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
}
cluster {
  name: kioskpay-proof
  listen: 127.0.0.1:%d
  routes: [%s]
}
mqtt {
  listen: 127.0.0.1:%d
  ack_wait: %q
  stream_replicas: %d
}
`, name, p.client, p.http, filepath.Join(nd, "js"), p.cluster, strings.Join(routes, ", "), p.mqtt, o.AckWait.String(), min(n, 3))
		node := &NATSNode{
			Name: name, MQTT: "tcp://127.0.0.1:" + strconv.Itoa(p.mqtt), Monitor: "http://127.0.0.1:" + strconv.Itoa(p.http),
			conf: filepath.Join(nd, "nats.conf"), log: filepath.Join(nd, "nats.log"),
		}
		if err := os.WriteFile(node.conf, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, node)
	}
	for _, node := range c.Nodes {
		if err := node.start(c.bin); err != nil {
			return nil, err
		}
	}
	for _, node := range c.Nodes {
		if err := node.waitMQTT(ctx, 90*time.Second); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// URLs are the MQTT URLs of every node, in order.
func (c *NATSCluster) URLs() []string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.MQTT
	}
	return urls
}

// Stop terminates every node still running.
func (c *NATSCluster) Stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

func (n *NATSNode) start(bin string) error {
	out, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start nats-server %s: %w", n.Name, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); out.Close(); close(n.done) }()
	return nil
}

// Kill SIGKILLs the node (a crash or power loss of the machine it runs on)
// and waits until it is gone.
func (n *NATSNode) Kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// Log is the node's log file.
func (n *NATSNode) Log() string { return n.log }

// waitMQTT waits until the node accepts an MQTT session that can
// subscribe at QoS 1 (which needs JetStream and the MQTT streams).
func (n *NATSNode) waitMQTT(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if last = n.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return fmt.Errorf("nats-server %s exited (log %s)", n.Name, n.log)
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("nats-server %s: no MQTT session within %s: %v (log %s)", n.Name, within, last, n.log)
}

func (n *NATSNode) probe(ctx context.Context) error {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(n.MQTT).SetClientID("proof-probe-" + testrig.RandomHex(4)).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4))
	if err := mqttclient.Wait(ctx, c.Connect(), 10*time.Second); err != nil {
		return err
	}
	defer c.Disconnect(0)
	return mqttclient.Wait(ctx, c.Subscribe("proof/probe", 1, nil), 10*time.Second)
}

// ClientConnected reports whether MQTT client id has a connection on this
// node (the monitoring endpoint's /connz?mqtt_client=).
func (n *NATSNode) ClientConnected(ctx context.Context, id string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.Monitor+"/connz?mqtt_client="+id, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var cz struct {
		NumConns int `json:"num_connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cz); err != nil {
		return false, fmt.Errorf("%s/connz: %w", n.Monitor, err)
	}
	return cz.NumConns > 0, nil
}
