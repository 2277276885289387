package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/mochibroker"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/alisim"
	"github.com/kioskpay/kioskpay/payment/paysim/wxsim"
	"github.com/kioskpay/kioskpay/relay"
)

// demoEnv is what the demo started, for the instructions and for tests.
type demoEnv struct {
	BrokerURL  string // tcp://127.0.0.1:PORT
	BrokerPort int
	SimURL     string // http://127.0.0.1:PORT
	RelayURL   string // http://127.0.0.1:PORT, the payment.notify_url
	WebURL     string // http://127.0.0.1:PORT/
	Dir        string
	DeviceID   string
	Prefix     string
	// Gateway: -backend gateway, RelayURL is paygate's and order numbers
	// start with OTNPrefix.
	Gateway   bool
	OTNPrefix string
}

// demoHooks let tests watch the demo start, and choose its backend.
type demoHooks struct {
	ready   func(demoEnv)
	backend config.Backend // payment.backend: local (default) or gateway
}

// runDemo runs the whole system in one process with no set-up and no
// network beyond loopback: an embedded MQTT broker, an embedded paysim with
// fresh keys, a notification relay, a temporary state directory and the
// daemon with its web display. Everything is removed on exit. Each line
// read from stdin (Enter) prints the instructions again, since the logs
// of a session push them off the screen.
func runDemo(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, logger *slog.Logger, backend config.Backend) int {
	return runDemoWith(ctx, stdin, stdout, stderr, logger, &demoHooks{backend: backend})
}

func runDemoWith(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, logger *slog.Logger, dh *demoHooks) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "kioskpayd -demo: "+format+"\n", args...)
		return exitFatal
	}
	// The parts around the daemon log only what needs attention: their
	// routine lines would bury the instructions.
	quiet := func(component string) *slog.Logger {
		return slog.New(minLevel{logger.Handler(), slog.LevelWarn}).With("component", component)
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
	// Demo-only: every client may connect and use every topic, on loopback.
	broker, err := mochibroker.Serve(listeners.NewNet("demo", brokerLn), nil, quiet("broker"))
	if err != nil {
		brokerLn.Close()
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
	sim, err := paysim.New(paysim.Options{Keys: keys, Logger: quiet("paysim")})
	if err != nil {
		return fail("paysim: %v", err)
	}
	wxsim.Register(sim)
	alisim.Register(sim)
	defer sim.Close()
	simURL, stopSim, err := serveLoopback(sim)
	if err != nil {
		return fail("paysim port: %v", err)
	}
	defer stopSim()

	// The daemon's configuration: what `paysim -keys` writes, pointed at
	// this broker, a notification relay and a free web port.
	path, err := keys.WriteDaemonFiles(dir, simURL)
	if err != nil {
		return fail("%v", err)
	}
	gateway := dh != nil && dh.backend == config.BackendGateway
	if gateway {
		// The same daemon without merchant keys: paygate holds them.
		path = filepath.Join(dir, "kioskpayd-gateway.toml")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return fail("demo config: %v", err)
	}
	cfg.MQTT.URL = brokerURL
	var relayURL string
	if gateway {
		// paygate, as on a fleet's server: it makes the provider calls and
		// receives the payment notifications.
		url, stop, err := startDemoGateway(dir, brokerURL, quiet("paygate"))
		if err != nil {
			return fail("paygate: %v", err)
		}
		defer stop()
		relayURL = url
	} else {
		// The notification relay, as on a fleet's server: paysim posts
		// each payment notification to it and the daemon hears of the
		// payment at once instead of at its next poll. WeChat Pay needs a
		// notify_url on every order anyway.
		pub, err := relay.Dial(relay.BrokerConfig{URL: brokerURL, ClientID: "demo-notifyrelay"}, quiet("notifyrelay"))
		if err != nil {
			return fail("notify relay: %v", err)
		}
		defer pub.Close()
		url, stopRelay, err := serveLoopback((&relay.Relay{Prefix: cfg.MQTT.TopicPrefix, Pub: pub, Logger: quiet("notifyrelay")}).Handler())
		if err != nil {
			return fail("notify relay port: %v", err)
		}
		defer stopRelay()
		relayURL = url
		cfg.Payment.NotifyURL = relayURL
	}

	webLn, err := listenFirstFree(8088, 100)
	if err != nil {
		return fail("web port: %v", err)
	}
	cfg.Display.WebListen = webLn.Addr().String()
	webLn.Close() // the display binds it again right away
	cfg.Display.Outputs = []config.Output{config.OutputWeb}
	// English on the demo's web page, for newcomers of any language;
	// devices choose with display.locale.
	cfg.Display.Locale = "en"

	env := demoEnv{
		BrokerURL: brokerURL, BrokerPort: brokerPort, SimURL: simURL, RelayURL: relayURL, Dir: dir,
		DeviceID: cfg.DeviceID, Prefix: cfg.Topic(),
	}
	if gateway {
		env.Gateway, env.OTNPrefix = true, paysim.SimPrefix
	}
	h := &hooks{ready: func(webAddr string) {
		env.WebURL = "http://" + webAddr + "/"
		printDemo(stdout, env)
		if stdin != nil {
			go reprintOnEnter(ctx, stdin, stdout, env)
		}
		if dh != nil && dh.ready != nil {
			dh.ready(env)
		}
	}}
	return daemon(ctx, cfg, stderr, logger, h)
}

// serveLoopback serves h on a free loopback port and returns its base URL
// and a function that stops the server.
func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// reprintOnEnter prints the instructions again for every line read from
// in, until in ends or the demo stops.
func reprintOnEnter(ctx context.Context, in io.Reader, out io.Writer, e demoEnv) {
	sc := bufio.NewScanner(in)
	for sc.Scan() && ctx.Err() == nil {
		printDemo(out, e)
	}
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

// printDemo prints the walk-through with the demo's ports filled in. The
// commands are README.md's demo section (e2e/readme_test.go holds the two
// together).
func printDemo(w io.Writer, e demoEnv) {
	p := strconv.Itoa(e.BrokerPort)
	sub := "mosquitto_sub -h 127.0.0.1 -p " + p
	pub := "mosquitto_pub -h 127.0.0.1 -p " + p + " -q 1"
	otn := e.OTNPrefix + "demo_0001"
	relayLine := "notify relay   %s   (the simulator's payment notifications reach the device through it)"
	via, kioskctlOTN := "the relay", ""
	if e.Gateway {
		relayLine = "paygate        %s   (holds the merchant keys, makes the provider calls, forwards notifications)"
		via, kioskctlOTN = "paygate", " -out-trade-no "+e.OTNPrefix+"ctl_0001"
	}
	fmt.Fprintf(w, strings.NewReplacer("demo_0001", otn, "the relay", via, "-ack\n", "-ack"+kioskctlOTN+"\n",
		"notify relay   %s   (the simulator's payment notifications reach the device through it)", relayLine).Replace(`
kioskpayd demo is running. Press Enter to see these instructions again;
Ctrl-C stops the demo and removes %s.

  MQTT broker    %s
  payment sim    %s   (WeChat Pay + Alipay simulator)
  notify relay   %s   (the simulator's payment notifications reach the device through it)
  web display    %s   <- open this in a browser
  device         %s   (topics %s/...)

1. In a second terminal, watch everything the device publishes (replies, results, events, status):

   %s -t '%s/#' -v

2. Place an order for ¥10.00; provider "any" shows a WeChat Pay and an Alipay code side by side:

   %s -t %s/pay/create -m '{"request_id":"r-1","provider":"any","data":{"out_trade_no":"demo_0001","total_fee":1000,"subject":"按摩 15 分钟","type":"massage_15","custom":{"seat":3}}}'

3. Pay as the customer would, here with a ¥1.00 coupon (or "alipay"); through the relay the paid
   result arrives at once, with what the buyer paid (payer_total) beside the order's total:

   curl -s -X POST %s/_sim/pay -d '{"provider":"wxpay","out_trade_no":"demo_0001","discount":100}'

4. Confirm delivery as the device's controller would (without it the payment is refunded after 30 s):

   %s -t %s/unlock/ack -m '{"out_trade_no":"demo_0001","ok":true}'

The same with kioskctl, which draws the QR codes in the terminal and waits for the result:

   go run ./cmd/kioskctl -broker %s pay -device %s -fee 1000 -subject "按摩 15 分钟" -type massage_15 -ack
   go run ./cmd/kioskctl sim pay -sim %s -provider wxpay -out-trade-no <the number it printed>

`), e.Dir, e.BrokerURL, e.SimURL, e.RelayURL, e.WebURL, e.DeviceID, e.Prefix,
		sub, e.Prefix,
		pub, e.Prefix,
		e.SimURL,
		pub, e.Prefix,
		e.BrokerURL, e.DeviceID, e.SimURL)
}

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
