package testrig

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/contract"
)

// Message is one message a recording Controller received.
type Message struct {
	Device  string
	Topic   string // after <prefix>/<device>/, e.g. "pay/result"
	Payload []byte
	At      time.Time
	// Fields is the payload decoded as a JSON object (nil when it is not
	// one), for assertions on fields no contract type has yet.
	Fields map[string]any
}

// Str returns the string field key, "" when absent or not a string.
func (m Message) Str(key string) string {
	s, _ := m.Fields[key].(string)
	return s
}

// Num returns the numeric field key, 0 when absent or not a number.
func (m Message) Num(key string) float64 {
	f, _ := m.Fields[key].(float64)
	return f
}

// Decode unmarshals the payload into v (a contract type).
func (m Message) Decode(v any) error { return json.Unmarshal(m.Payload, v) }

// Matchers for the messages tests wait for most.

// IsReply matches the reply to request id.
func IsReply(id string) func(Message) bool {
	return func(m Message) bool { return m.Topic == contract.TopicReply && m.Str("request_id") == id }
}

// IsResult matches a result of order otn; status "" matches any.
func IsResult(otn, status string) func(Message) bool {
	return func(m Message) bool {
		return m.Topic == contract.TopicResult && m.Str("out_trade_no") == otn && (status == "" || m.Str("status") == status)
	}
}

// IsEvent matches a transition of order otn to state to; "" matches any.
func IsEvent(otn, to string) func(Message) bool {
	return func(m Message) bool {
		return m.Topic == contract.TopicEvent && m.Str("out_trade_no") == otn && (to == "" || m.Str("to") == to)
	}
}

func (c *Controller) record(m Message) {
	_ = json.Unmarshal(m.Payload, &m.Fields)
	c.mu.Lock()
	c.log = append(c.log, m)
	close(c.logWake)
	c.logWake = make(chan struct{})
	c.mu.Unlock()
}

func (c *Controller) snapshot() ([]Message, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log[:len(c.log):len(c.log)], c.logWake
}

// Messages returns every recorded message that matches, in arrival order
// (all of them when match is nil).
func (c *Controller) Messages(match func(Message) bool) []Message {
	all, _ := c.snapshot()
	var out []Message
	for _, m := range all {
		if match == nil || match(m) {
			out = append(out, m)
		}
	}
	return out
}

// WaitMessage returns the first recorded message that matches, since the
// controller connected, waiting for it until ctx ends. The error names
// what and lists what was seen.
func (c *Controller) WaitMessage(ctx context.Context, what string, match func(Message) bool) (Message, error) {
	for {
		all, wake := c.snapshot()
		for _, m := range all {
			if match(m) {
				return m, nil
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return Message{}, fmt.Errorf("no %s: %w; the controller saw:\n%s", what, ctx.Err(), c.Dump())
		}
	}
}

// Dump lists the recorded messages other than status, one per line, for a
// failing test's report.
func (c *Controller) Dump() string {
	var b strings.Builder
	for _, m := range c.Messages(func(m Message) bool { return m.Topic != "status" }) {
		p := string(m.Payload)
		if len(p) > 400 {
			p = p[:400] + "…"
		}
		fmt.Fprintf(&b, "  %s %s %s %s\n", m.At.Format("15:04:05.000"), m.Device, m.Topic, p)
	}
	return b.String()
}
