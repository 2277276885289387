package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/payment"
)

// WatchCommand streams what devices exchange under <prefix>/<id>/pay/# (and
// unlock acks, optionally status), one line per message, until interrupted.
type WatchCommand struct{}

const watchUsage = `Usage: kioskctl watch [-device ID] [-status] [-count N]

Prints every request, reply, result and event of one device (or all devices)
as it happens, one line per message. Stops on Ctrl-C.

Flags:
	-device ID    watch only this device (default: every device under the prefix)
	-status       also show the retained status messages
	-count N      exit after N messages (default 0: until interrupted)
`

// Usage implements command.
func (c *WatchCommand) Usage() string { return watchUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// watchLine is one message in -o json mode.
type watchLine struct {
	Time    string          `json:"time"`
	Device  string          `json:"device"`
	Topic   string          `json:"topic"` // suffix after <prefix>/<device>/
	Payload json.RawMessage `json:"payload,omitempty"`
	Text    string          `json:"text,omitempty"` // a payload that is not JSON
}

// Run implements command.
func (c *WatchCommand) Run(ctx context.Context, g *Globals, args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	var dev string
	var status bool
	var count int
	fs.StringVar(&dev, "device", "", "")
	fs.BoolVar(&status, "status", false, "")
	fs.IntVar(&count, "count", 0, "")
	if err := g.parse(fs, c.Usage(), args); err != nil {
		return err
	}
	id := "+"
	if dev != "" {
		if err := requireDevice(dev); err != nil {
			return err
		}
		id = dev
	}
	conn, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	filters := []string{g.topic(id, "pay/#"), g.topic(id, "unlock/#")}
	if status {
		filters = append(filters, g.topic(id, device.TopicStatus))
	}
	ch, err := conn.Subscribe(ctx, filters...)
	if err != nil {
		return err
	}
	// On stderr even with -o json: scripts read stdout, people see this.
	fmt.Fprintf(g.Stderr, "watching %s on %s (Ctrl-C to stop)\n", strings.Join(filters, " "), g.Broker)
	// Ctrl-C is how watch ends; it is not a failure.
	for n := 0; count == 0 || n < count; n++ {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			if err := c.print(g, m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *WatchCommand) print(g *Globals, m message) error {
	dev := deviceOfTopic(g.Prefix, m.Topic)
	suffix := strings.TrimPrefix(m.Topic, g.Prefix+"/"+dev+"/")
	if g.JSON() {
		l := watchLine{Time: m.At.Format(time.RFC3339Nano), Device: dev, Topic: suffix}
		if json.Valid(m.Payload) {
			l.Payload = m.Payload
		} else {
			l.Text = string(m.Payload)
		}
		return g.printJSON(l)
	}
	_, err := fmt.Fprintf(g.Stdout, "%s %s %-13s %s\n", m.At.Format("15:04:05.000"), dev, suffix, summarize(suffix, m.Payload))
	return err
}

// summarize renders a message for one line of text: the fields that matter
// for the topic, the raw payload (shortened) for anything else.
func summarize(suffix string, payload []byte) string {
	var f map[string]json.RawMessage
	if json.Unmarshal(payload, &f) != nil {
		return "(not JSON) " + shorten(string(payload), 120)
	}
	str := func(k string) string {
		var s string
		if json.Unmarshal(f[k], &s) == nil {
			return s
		}
		return strings.TrimSpace(string(f[k]))
	}
	fen := func(k string) string {
		var n int64
		if json.Unmarshal(f[k], &n) == nil {
			return payment.Fen(n).String()
		}
		return str(k)
	}
	var parts []string
	add := func(label, v string) {
		if v != "" {
			parts = append(parts, label+"="+v)
		}
	}
	switch suffix {
	case device.TopicReply:
		add("action", str("action"))
		add("request_id", str("request_id"))
		if code := str("code"); code != "0" {
			add("code", code)
			add("error", str("error"))
			add("field", str("field"))
			add("msg", fmt.Sprintf("%q", str("msg")))
		}
		add("out_trade_no", str("out_trade_no"))
		if _, ok := f["total_fee"]; ok {
			add("fee", fen("total_fee"))
		}
		add("state", str("state"))
		add("expires_at", str("expires_at"))
		if _, ok := f["orders"]; ok {
			var os []json.RawMessage
			_ = json.Unmarshal(f["orders"], &os)
			add("orders", fmt.Sprint(len(os)))
		}
		if _, ok := f["checked"]; ok {
			add("checked", str("checked"))
		}
	case device.TopicResult:
		parts = append(parts, strings.ToUpper(str("status")))
		add("out_trade_no", str("out_trade_no"))
		add("fee", fen("total_fee"))
		add("pay_type", str("pay_type"))
		add("transaction_id", str("transaction_id"))
		add("seq", str("seq"))
		add("reason", str("reason"))
	case device.TopicEvent:
		parts = append(parts, str("from")+" → "+str("to"))
		add("out_trade_no", str("out_trade_no"))
		add("reason", fmt.Sprintf("%q", str("reason")))
	case device.TopicCreate:
		var data map[string]json.RawMessage
		_ = json.Unmarshal(f["data"], &data)
		add("request_id", str("request_id"))
		add("provider", str("provider"))
		if data != nil {
			var n int64
			var no string
			_ = json.Unmarshal(data["out_trade_no"], &no)
			add("out_trade_no", no)
			if json.Unmarshal(data["total_fee"], &n) == nil {
				add("fee", payment.Fen(n).String())
			}
		}
	case device.TopicNotify:
		add("provider", str("provider"))
		add("body_bytes", fmt.Sprint(len(str("body"))))
	case device.TopicAck:
		add("out_trade_no", str("out_trade_no"))
		add("ok", str("ok"))
		add("reason", str("reason"))
	case device.TopicStatus:
		add("online", str("online"))
		add("version", str("version"))
		add("pending", str("pending"))
		add("clock_synced", str("clock_synced"))
	default:
		return shorten(string(payload), 160)
	}
	if len(parts) == 0 {
		return shorten(string(payload), 160)
	}
	return strings.Join(parts, " ")
}

func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
