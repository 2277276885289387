package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// demoEnv is what the demo started, for the instructions and for tests.
type demoEnv struct {
	BrokerURL  string // tcp://127.0.0.1:PORT
	BrokerPort int
	SimURL     string // http://127.0.0.1:PORT
	WebURL     string // http://127.0.0.1:PORT/
	Dir        string
	DeviceID   string
	Prefix     string
}

// demoReady, when set (by tests), is called once the demo daemon is ready.
type demoHooks struct {
	ready func(demoEnv)
}

// runDemo runs the whole system in one process with no set-up and no
// network beyond loopback: an embedded MQTT broker, an embedded paysim with
// fresh keys, a temporary state directory and the daemon with its web
// display. Everything is removed on exit.
func runDemo(ctx context.Context, stdout, stderr io.Writer, logger *slog.Logger) int {
	return runDemoWith(ctx, stdout, stderr, logger, nil)
}

func runDemoWith(ctx context.Context, stdout, stderr io.Writer, logger *slog.Logger, dh *demoHooks) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "kioskpayd -demo: "+format+"\n", args...)
		return exitFatal
	}
	dir, err := os.MkdirTemp("", "kioskpayd-demo-")
	if err != nil {
		return fail("temporary directory: %v", err)
	}
	defer os.RemoveAll(dir)

	// The broker. 1883 is MQTT's port; when something (a local Mosquitto)
	// already has it, the next free one is used.
	brokerLn, err := listenFirstFree(1883, 100)
	if err != nil {
		return fail("MQTT port: %v", err)
	}
	broker := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(minLevel{logger.Handler(), slog.LevelWarn}).With("component", "broker")})
	// Demo-only: every client may connect and use every topic, on loopback.
	if err := broker.AddHook(new(allowAll), nil); err != nil {
		brokerLn.Close()
		return fail("broker: %v", err)
	}
	if err := broker.AddListener(listeners.NewNet("demo", brokerLn)); err != nil {
		brokerLn.Close()
		return fail("broker: %v", err)
	}
	if err := broker.Serve(); err != nil {
		return fail("broker: %v", err)
	}
	defer broker.Close()
	brokerPort := brokerLn.Addr().(*net.TCPAddr).Port
	brokerURL := "tcp://" + brokerLn.Addr().String()

	// The payment simulator, with keys made now and never stored beyond
	// the temporary directory.
	fmt.Fprintln(stdout, "kioskpayd demo: generating simulator keys…")
	keys, err := paysim.GenerateKeys()
	if err != nil {
		return fail("keys: %v", err)
	}
	sim, err := paysim.New(paysim.Options{Keys: keys, Logger: logger.With("component", "paysim")})
	if err != nil {
		return fail("paysim: %v", err)
	}
	defer sim.Close()
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail("paysim port: %v", err)
	}
	simSrv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go simSrv.Serve(simLn)
	defer simSrv.Close()
	simURL := "http://" + simLn.Addr().String()

	// The daemon's configuration: what `paysim -keys` writes, pointed at
	// this broker and a free web port.
	path, err := keys.WriteDaemonFiles(dir, simURL)
	if err != nil {
		return fail("%v", err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return fail("demo config: %v", err)
	}
	cfg.MQTT.URL = brokerURL
	webLn, err := listenFirstFree(8088, 100)
	if err != nil {
		return fail("web port: %v", err)
	}
	cfg.Display.WebListen = webLn.Addr().String()
	webLn.Close() // the display binds it again right away
	cfg.Display.Outputs = []string{config.OutputWeb}
	// The built-in font has no CJK glyphs; English keeps the demo screen
	// free of a "no CJK font" warning. Devices set font_file and zh.
	cfg.Display.Locale = "en"

	env := demoEnv{
		BrokerURL: brokerURL, BrokerPort: brokerPort, SimURL: simURL, Dir: dir,
		DeviceID: cfg.DeviceID, Prefix: cfg.Topic(),
	}
	h := &hooks{ready: func(webAddr string) {
		env.WebURL = "http://" + webAddr + "/"
		printDemo(stdout, env)
		if dh != nil && dh.ready != nil {
			dh.ready(env)
		}
	}}
	return daemon(ctx, cfg, stderr, logger, h)
}

// listenFirstFree listens on 127.0.0.1 at port, or the next free one of
// the n after it, or finally any free port.
func listenFirstFree(port, n int) (net.Listener, error) {
	for p := port; p < port+n; p++ {
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			return ln, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("no free port from %d to %d", port, port+n-1), err)
	}
	return ln, nil
}

func printDemo(w io.Writer, e demoEnv) {
	p := strconv.Itoa(e.BrokerPort)
	sub := "mosquitto_sub -h 127.0.0.1 -p " + p
	pub := "mosquitto_pub -h 127.0.0.1 -p " + p + " -q 1"
	fmt.Fprintf(w, `
kioskpayd demo is running. Ctrl-C stops it and removes %s.

  MQTT broker    %s
  payment sim    %s   (WeChat Pay + Alipay simulator)
  web display    %s   <- open this in a browser
  device         %s   (topics %s/...)

1. Watch what the device publishes (replies, results, events, status):

   %s -t '%s/#' -v

2. Place an order for ¥10.00 (both WeChat Pay and Alipay codes; the QR appears on the web display):

   %s -t %s/pay/create -m '{"request_id":"r-1","provider":"any","data":{"out_trade_no":"demo_0001","total_fee":1000,"subject":"Massage 15 min","type":"massage_15"}}'

3. Pay it as the customer would (or "alipay"):

   curl -s -X POST %s/_sim/pay -d '{"provider":"wxpay","out_trade_no":"demo_0001"}'

   Within a poll interval (2 s) %s/pay/result reports "status":"paid".

4. Confirm delivery as the device controller (without it the payment is refunded after 30 s):

   %s -t %s/unlock/ack -m '{"out_trade_no":"demo_0001","ok":true}'

The same with kioskctl, which draws the QR in the terminal and waits for the result:

   go run ./cmd/kioskctl -broker %s pay -device %s -fee 1000 -subject "Massage 15 min" -ack
   KIOSKCTL_SIM=%s go run ./cmd/kioskctl sim pay -provider wxpay -out-trade-no <the order number it prints>

`, e.Dir, e.BrokerURL, e.SimURL, e.WebURL, e.DeviceID, e.Prefix,
		sub, e.Prefix,
		pub, e.Prefix,
		e.SimURL, e.Prefix,
		pub, e.Prefix,
		e.BrokerURL, e.DeviceID, e.SimURL)
}

// allowAll lets every client in, for the loopback-only demo broker. It
// stands in for mochi's auth.AllowHook, whose package needs a YAML module.
type allowAll struct{ mochi.HookBase }

func (h *allowAll) ID() string { return "demo-allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }

// minLevel drops records below min: the embedded broker logs every client
// connection at info, which would drown the demo's own output.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
