package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// broker is a real Mosquitto started from deploy/mosquitto/kioskpay.conf
// and kioskpay.acl, with test certificates and a fresh password file.
type broker struct {
	url  string
	ca   *x509.CertPool
	logs *bytes.Buffer
}

var passwords = map[string]string{
	"dev1": "pw-dev1", "dev2": "pw-dev2", "backend": "pw-backend", "notifyrelay": "pw-relay", "paygate": "pw-paygate",
}

func startMosquitto(t *testing.T) *broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/mosquitto"); err2 != nil {
			t.Skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients)")
		}
		bin = "/usr/sbin/mosquitto"
	}
	passwd, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd not installed (apt-get install mosquitto)")
	}
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	pool := writeTestPKI(t, certs)

	pwFile := filepath.Join(dir, "kioskpay.passwd")
	first := true
	for user, pw := range passwords {
		args := []string{"-b", pwFile, user, pw}
		if first {
			args = append([]string{"-c"}, args...)
			first = false
		}
		if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	acl, err := os.ReadFile("mosquitto/kioskpay.acl")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kioskpay.acl"), acl, 0o644); err != nil {
		t.Fatal(err)
	}

	conf, err := os.ReadFile("mosquitto/kioskpay.conf")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	c := string(conf)
	for old, repl := range map[string]string{
		"listener 8883\n":                          fmt.Sprintf("listener %d 127.0.0.1\n", port),
		"/etc/mosquitto/certs/":                    certs + "/",
		"/etc/mosquitto/kioskpay.passwd":           pwFile,
		"/etc/mosquitto/kioskpay.acl":              filepath.Join(dir, "kioskpay.acl"),
		"persistence_location /var/lib/mosquitto/": "persistence_location " + dir + "/",
	} {
		if !strings.Contains(c, old) {
			t.Fatalf("kioskpay.conf no longer contains %q; update the test", old)
		}
		c = strings.ReplaceAll(c, old, repl)
	}
	if os.Geteuid() == 0 {
		// As root Mosquitto drops to user "mosquitto", who cannot read
		// the test's private temp dir.
		c += "user root\n"
	}
	c += "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", logs)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("mosquitto exited:\n%s", logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s:\n%s", addr, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &broker{url: "ssl://" + addr, ca: pool, logs: logs}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeTestPKI writes ca.crt, server.crt and server.key for 127.0.0.1.
func writeTestPKI(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kioskpay test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	for name, b := range map[string]*pem.Block{
		"ca.crt":     {Type: "CERTIFICATE", Bytes: caDER},
		"server.crt": {Type: "CERTIFICATE", Bytes: srvDER},
		"server.key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

// client is a connected test client that records what it receives.
type client struct {
	c   mqtt.Client
	mu  sync.Mutex
	got map[string][]string // topic → payloads
	arr chan string         // topics as they arrive
}

func (b *broker) connect(t *testing.T, user, pw string) (*client, error) {
	t.Helper()
	cl := &client{got: map[string][]string{}, arr: make(chan string, 100)}
	opts := mqtt.NewClientOptions().AddBroker(b.url).
		SetClientID(user + "-" + fmt.Sprint(time.Now().UnixNano())).
		SetUsername(user).SetPassword(pw).
		SetTLSConfig(&tls.Config{RootCAs: b.ca, MinVersion: tls.VersionTLS12}).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			cl.mu.Lock()
			cl.got[m.Topic()] = append(cl.got[m.Topic()], string(m.Payload()))
			cl.mu.Unlock()
			cl.arr <- m.Topic()
		})
	cl.c = mqtt.NewClient(opts)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { cl.c.Disconnect(100) })
	return cl, nil
}

func (b *broker) mustConnect(t *testing.T, user string) *client {
	t.Helper()
	c, err := b.connect(t, user, passwords[user])
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	return c
}

func (c *client) sub(t *testing.T, filters ...string) {
	t.Helper()
	for _, f := range filters {
		tok := c.c.Subscribe(f, 1, nil)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}
}

// pub publishes at QoS 1 and waits for the PUBACK. Mosquitto acks denied
// publishes too (and drops them), so success says nothing about delivery.
func (c *client) pub(t *testing.T, topic, payload string) {
	t.Helper()
	tok := c.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// await waits until topic arrives; everything the same publisher sent
// before it has then arrived too (Mosquitto keeps one publisher's order),
// so it is the barrier that makes "never received" checkable.
func (c *client) await(t *testing.T, topic string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case got := <-c.arr:
			if got == topic {
				return
			}
		case <-deadline:
			t.Fatalf("%s never arrived", topic)
		}
	}
}

func (c *client) received(topic string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[topic]
}

func TestMosquittoACL(t *testing.T) {
	b := startMosquitto(t)
	backend := b.mustConnect(t, "backend")
	backend.sub(t, "kiosk/#")
	dev1 := b.mustConnect(t, "dev1")
	dev2 := b.mustConnect(t, "dev2")
	relay := b.mustConnect(t, "notifyrelay")

	t.Run("device cannot publish into another device's topics", func(t *testing.T) {
		dev1.pub(t, "kiosk/dev2/pay/result", `{"status":"paid","forged":true}`)
		dev1.pub(t, "kiosk/dev2/status", `{"online":false}`)
		dev1.pub(t, "kiosk/dev2/unlock/ack", `{"ok":true}`)
		dev1.pub(t, "kiosk/dev1/pay/result", `{"status":"paid"}`) // allowed: the barrier
		backend.await(t, "kiosk/dev1/pay/result")
		for _, tp := range []string{"kiosk/dev2/pay/result", "kiosk/dev2/status", "kiosk/dev2/unlock/ack"} {
			if got := backend.received(tp); len(got) > 0 {
				t.Errorf("dev1 published into %s: %v", tp, got)
			}
		}
	})

	t.Run("device cannot publish commands, not even to itself", func(t *testing.T) {
		for _, tp := range []string{"kiosk/dev1/pay/create", "kiosk/dev1/pay/refund", "kiosk/dev1/pay/notify", "kiosk/other/pay/create"} {
			dev1.pub(t, tp, `{}`)
		}
		dev1.pub(t, "kiosk/dev1/pay/event", `{}`)
		backend.await(t, "kiosk/dev1/pay/event")
		for _, tp := range []string{"kiosk/dev1/pay/create", "kiosk/dev1/pay/refund", "kiosk/dev1/pay/notify", "kiosk/other/pay/create"} {
			if got := backend.received(tp); len(got) > 0 {
				t.Errorf("dev1 published %s", tp)
			}
		}
	})

	t.Run("device cannot read another device's topics", func(t *testing.T) {
		dev1.sub(t, "kiosk/dev2/#", "kiosk/+/pay/create", "kiosk/dev1/#")
		backend.pub(t, "kiosk/dev2/pay/create", `{"secret":"dev2's order"}`)
		backend.pub(t, "kiosk/dev2/pay/notify", `{}`)
		backend.pub(t, "kiosk/dev1/pay/create", `{"mine":true}`)
		dev1.await(t, "kiosk/dev1/pay/create")
		for _, tp := range []string{"kiosk/dev2/pay/create", "kiosk/dev2/pay/notify"} {
			if got := dev1.received(tp); len(got) > 0 {
				t.Errorf("dev1 read %s: %v", tp, got)
			}
		}
		// Its own commands do reach it, once.
		if got := dev1.received("kiosk/dev1/pay/create"); len(got) != 1 {
			t.Errorf("dev1 got its create %d times", len(got))
		}
	})

	t.Run("a fleet-wide wildcard shows a device only its own subtree", func(t *testing.T) {
		dev2.sub(t, "kiosk/#", "#")
		backend.pub(t, "kiosk/dev1/pay/query", `{}`)
		backend.pub(t, "kiosk/dev2/pay/query", `{}`)
		dev2.await(t, "kiosk/dev2/pay/query")
		if got := dev2.received("kiosk/dev1/pay/query"); len(got) > 0 {
			t.Errorf("dev2 read dev1's query through a wildcard")
		}
	})

	t.Run("relay publishes notifications only", func(t *testing.T) {
		relay.pub(t, "kiosk/dev2/pay/create", `{"from":"relay"}`)
		relay.pub(t, "kiosk/dev2/pay/result", `{"from":"relay"}`)
		relay.pub(t, "kiosk/dev2/pay/notify", `{"provider":"wxpay"}`)
		backend.await(t, "kiosk/dev2/pay/notify")
		for _, tp := range []string{"kiosk/dev2/pay/create", "kiosk/dev2/pay/result"} {
			for _, p := range backend.received(tp) {
				if strings.Contains(p, "relay") {
					t.Errorf("relay published %s", tp)
				}
			}
		}
	})

	t.Run("paygate replicas share the requests and answer only devices", func(t *testing.T) {
		gw1 := b.mustConnect(t, "paygate")
		gw2 := b.mustConnect(t, "paygate")
		gw1.sub(t, "$share/paygate/kiosk/+/gw/req")
		gw2.sub(t, "$share/paygate/kiosk/+/gw/req")
		dev1.sub(t, "kiosk/dev1/gw/reply")
		const n = 20
		for i := range n {
			dev1.pub(t, "kiosk/dev1/gw/req", fmt.Sprintf(`{"id":"%d"}`, i))
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(gw1.received("kiosk/dev1/gw/req"))+len(gw2.received("kiosk/dev1/gw/req")) < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		a, c := len(gw1.received("kiosk/dev1/gw/req")), len(gw2.received("kiosk/dev1/gw/req"))
		if a+c != n || a == 0 || c == 0 {
			t.Errorf("replicas got %d and %d of %d requests; want each request once, both replicas used", a, c, n)
		}
		gw1.pub(t, "kiosk/dev1/gw/reply", `{"id":"0"}`)
		dev1.await(t, "kiosk/dev1/gw/reply")
		// paygate forwards notifications, and nothing else.
		gw1.pub(t, "kiosk/dev2/pay/create", `{"from":"paygate"}`)
		gw1.pub(t, "kiosk/dev2/pay/refund", `{"from":"paygate"}`)
		gw1.pub(t, "kiosk/dev2/pay/notify", `{"from":"paygate"}`)
		backend.await(t, "kiosk/dev2/pay/notify")
		for _, tp := range []string{"kiosk/dev2/pay/create", "kiosk/dev2/pay/refund"} {
			for _, p := range backend.received(tp) {
				if strings.Contains(p, "paygate") {
					t.Errorf("paygate published %s", tp)
				}
			}
		}
	})

	t.Run("a device cannot speak for another at paygate or forge its replies", func(t *testing.T) {
		gw := b.mustConnect(t, "paygate")
		// A group of its own: it sees every request, whatever the
		// replicas of the previous test take.
		gw.sub(t, "$share/probe/kiosk/+/gw/req")
		dev2.sub(t, "kiosk/dev1/gw/reply")
		dev1.pub(t, "kiosk/dev2/gw/req", `{"id":"spoof"}`)
		dev1.pub(t, "kiosk/dev1/gw/reply", `{"id":"forged"}`)
		dev1.pub(t, "kiosk/dev2/gw/reply", `{"id":"forged"}`)
		dev2.pub(t, "kiosk/dev2/gw/req", `{"id":"barrier"}`)
		gw.await(t, "kiosk/dev2/gw/req")
		for _, p := range gw.received("kiosk/dev2/gw/req") {
			if strings.Contains(p, "spoof") {
				t.Error("dev1 published a request as dev2")
			}
		}
		backend.pub(t, "kiosk/dev1/pay/event", `{"barrier":1}`)
		backend.await(t, "kiosk/dev1/pay/event")
		for _, tp := range []string{"kiosk/dev1/gw/reply", "kiosk/dev2/gw/reply"} {
			for _, p := range backend.received(tp) {
				if strings.Contains(p, "forged") {
					t.Errorf("dev1 forged %s", tp)
				}
			}
		}
		if got := dev2.received("kiosk/dev1/gw/reply"); len(got) > 0 {
			t.Errorf("dev2 read dev1's replies: %v", got)
		}
	})

	t.Run("no anonymous or wrong-password logins", func(t *testing.T) {
		if _, err := b.connect(t, "dev1", "wrong"); err == nil {
			t.Error("wrong password accepted")
		}
		if _, err := b.connect(t, "", ""); err == nil {
			t.Error("anonymous login accepted")
		}
	})
}
