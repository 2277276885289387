package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
)

// WatchCommand streams what devices exchange under <prefix>/<id>/pay/# (and
// unlock acks, optionally status), one line per message, until interrupted.
type WatchCommand struct{}

const watchUsage = `Usage: kioskctl watch [-device ID] [-status] [-count N]

Prints every request, reply, result and event of one device (or all devices)
as it happens, one line per message. Stops on Ctrl-C. With -status it first
prints every device's retained status, then says on stderr when the broker
has sent them all ("end of retained status"), then goes on live. If the
broker connection drops, watch reconnects (to the next -broker, if several
are given) and says so on stderr: messages in between are not shown.

Exit codes: 0 stopped (Ctrl-C or -count reached); 1 failure; 2 bad usage;
4 with -status, the retained statuses listed may be incomplete (the reason
was printed on stderr when it happened).

Flags:
	-device ID    watch only this device (default: every device under the prefix)
	-status       also show the retained status messages, then status changes
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
	w := &watcher{g: g, count: count, live: []string{g.topic(id, "pay/#"), g.topic(id, "unlock/#")}}
	if status {
		w.retained = []string{g.topic(id, contract.TopicStatus)}
	}
	return w.run(ctx)
}

// watcher is one run of kioskctl watch, across reconnects.
type watcher struct {
	g              *Globals
	count          int
	live, retained []string

	printed    int
	incomplete *incompleteError // of the latest retained listing
}

func (w *watcher) run(ctx context.Context) error {
	backoff := time.Second
	for connects := 0; ; connects++ {
		conn, err := w.g.connect(ctx)
		if err != nil {
			if connects == 0 || ctx.Err() != nil {
				return w.end(ctx, err)
			}
			fmt.Fprintf(w.g.Stderr, "reconnect failed: %v; retrying in %s\n", err, backoff)
			select {
			case <-ctx.Done():
				return w.end(ctx, nil)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = time.Second
		done, err := w.session(ctx, conn)
		conn.Close()
		if done || err != nil {
			return w.end(ctx, err)
		}
		fmt.Fprintf(w.g.Stderr, "connection to %s lost (%v); reconnecting: messages published meanwhile are not shown\n", conn.Broker(), conn.LostErr())
	}
}

// end maps how watch stopped to its result: Ctrl-C is how watch ends and
// is not a failure, unless the retained listing was incomplete.
func (w *watcher) end(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil {
		return err
	}
	if w.incomplete != nil {
		return &exitError{code: ExitIncomplete}
	}
	return nil
}

// session subscribes on conn and prints until the count is reached (done),
// ctx ends (done) or the connection drops (not done).
func (w *watcher) session(ctx context.Context, conn *Conn) (done bool, err error) {
	var l *listing
	var ch <-chan message
	filters := append(append([]string(nil), w.live...), w.retained...)
	if len(w.retained) > 0 {
		if l, err = conn.listRetained(ctx, w.live, w.retained); err != nil {
			return false, err
		}
		ch = l.C
	} else if ch, err = conn.Subscribe(ctx, w.live...); err != nil {
		return false, err
	}
	// On stderr even with -o json: scripts read stdout, people see this.
	fmt.Fprintf(w.g.Stderr, "watching %s on %s (Ctrl-C to stop)\n", strings.Join(filters, " "), conn.Broker())
	// Only the retained listing has an end to wait for; live messages may
	// be minutes apart.
	idle := time.NewTimer(w.g.Timeout)
	defer idle.Stop()
	if l == nil {
		idle.Stop()
	}
	statuses := map[string]bool{} // devices in the retained listing
	for w.count == 0 || w.printed < w.count {
		select {
		case <-ctx.Done():
			return true, nil
		case <-conn.Lost():
			if l != nil {
				w.incomplete = l.dropped()
				fmt.Fprintf(w.g.Stderr, "retained status: %v\n", w.incomplete)
			}
			return false, nil
		case <-idle.C:
			w.incomplete = l.stalled(w.g.Timeout)
			fmt.Fprintf(w.g.Stderr, "retained status: %v; going on live\n", w.incomplete)
			l = nil
		case m := <-ch:
			if l != nil {
				if _, done := l.Marker(m); done {
					w.incomplete = nil
					fmt.Fprintf(w.g.Stderr, "end of retained status: %s; live from here\n", count(len(statuses), "device"))
					idle.Stop()
					l = nil
					continue
				}
			}
			if stray(w.g.Prefix, m) {
				continue // a marker: one of this listing's, or late
			}
			if l != nil {
				resetTimer(idle, w.g.Timeout)
				if strings.HasSuffix(m.Topic, "/"+contract.TopicStatus) {
					// A status published while the listing runs can come
					// twice: retained, and live.
					statuses[deviceOfTopic(w.g.Prefix, m.Topic)] = true
				}
			}
			if err := print1(w.g, m); err != nil {
				return true, err
			}
			w.printed++
		}
	}
	return true, nil
}

// print1 prints one message as a line of text or JSON.
func print1(g *Globals, m message) error {
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
	case contract.TopicReply:
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
	case contract.TopicResult:
		parts = append(parts, strings.ToUpper(str("status")))
		add("out_trade_no", str("out_trade_no"))
		add("fee", fen("total_fee"))
		add("pay_type", str("pay_type"))
		add("transaction_id", str("transaction_id"))
		add("seq", str("seq"))
		add("reason", str("reason"))
	case contract.TopicEvent:
		parts = append(parts, str("from")+" → "+str("to"))
		add("out_trade_no", str("out_trade_no"))
		add("reason", fmt.Sprintf("%q", str("reason")))
	case contract.TopicCreate:
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
	case contract.TopicNotify:
		add("provider", str("provider"))
		add("body_bytes", fmt.Sprint(len(str("body"))))
	case contract.TopicAck:
		add("out_trade_no", str("out_trade_no"))
		add("ok", str("ok"))
		add("reason", str("reason"))
	case contract.TopicStatus:
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
