package testrig

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/mqttclient"
)

// Reply is a P/pay/reply message as the controller received it: the head
// every reply has (contract.Reply), the whole message in Raw for the
// fields of its action (Decode), and when it arrived.
type Reply struct {
	contract.Reply

	Raw      json.RawMessage `json:"-"`
	Received time.Time       `json:"-"`
}

// Decode unmarshals the whole reply into v, the contract's reply type for
// its action: contract.CreateReply, QueryReply, RefundReply, OrdersReply,
// ReconcileReply.
func (r Reply) Decode(v any) error { return json.Unmarshal(r.Raw, v) }

// Result is a P/pay/result message as the harness received it.
type Result struct {
	contract.Result

	Device   string    `json:"-"`
	Received time.Time `json:"-"`
}

// Controller plays the devices' controllers (and kioskctl) on one broker:
// it publishes commands to <prefix>/<device>/…, matches replies to
// requests by request_id, and hands results and status to callbacks. One
// Controller can serve any number of devices under the prefix.
type Controller struct {
	prefix string
	client mqtt.Client
	seq    atomic.Uint64
	tag    string

	mu       sync.Mutex
	waiting  map[string]chan Reply
	replies  map[string]int // request_id → replies seen
	status   map[string]contract.Status
	statusCh chan struct{}

	// OnResult is called for every result, in its own goroutine per
	// message; set it before Connect.
	OnResult func(Result)
	// OnReply, when set, sees every reply (after matching).
	OnReply func(device string, r Reply)
	// OnEvent, when set, sees every event; OnStatus every status.
	OnEvent  func(device string, ev contract.Event)
	OnStatus func(device string, s contract.Status)

	// Record keeps every message received (Messages, WaitMessage). A
	// measurement over many orders leaves it off; a test that asserts
	// what a controller saw turns it on. Set it before Connect, with the
	// login fields below.
	Record bool
	// Username and Password log in; TLS is used for ssl:// and wss://
	// brokers. CleanSession makes the session forget subscriptions and
	// queued messages on reconnect.
	Username, Password string
	TLS                *tls.Config
	CleanSession       bool
	// Device, when set, limits the controller to that one device: it
	// subscribes to <prefix>/<Device>/… only, so on a broker shared with
	// other tests it neither sees nor records their devices' messages.
	Device string

	log     []Message
	logWake chan struct{}
}

// NewController returns a controller for devices under topic prefix.
func NewController(prefix string) *Controller {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &Controller{
		prefix: prefix, tag: hex.EncodeToString(b),
		waiting: map[string]chan Reply{}, replies: map[string]int{},
		status: map[string]contract.Status{}, statusCh: make(chan struct{}),
		logWake: make(chan struct{}),
	}
}

// Connect connects under clientID and returns once the controller's
// subscriptions are in place, so nothing the devices answer after it
// returns is missed. The session is persistent unless CleanSession is
// set, so replies and results published while the broker restarts are
// queued, not lost.
func (c *Controller) Connect(ctx context.Context, url, clientID string) error {
	// The client set-up every kioskpay program uses, with a test's session
	// policy: reconnect fast, and keep the session unless told otherwise.
	opts := mqttclient.Config{
		Brokers: mqttclient.NewBrokers([]string{url}), ClientID: clientID,
		Username: c.Username, Password: c.Password, TLS: c.TLS,
		ConnectTimeout: 5 * time.Second, KeepAlive: 10 * time.Second,
	}.Options().
		SetCleanSession(c.CleanSession).SetOrderMatters(false).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(time.Second)
	opts.SetDefaultPublishHandler(c.handle)
	subscribed := make(chan error, 1)
	opts.SetOnConnectHandler(func(cl mqtt.Client) {
		// Subscribe on every (re)connect: a clean session forgets it.
		dev := "+"
		if c.Device != "" {
			dev = c.Device
		}
		filters := map[string]byte{}
		for _, suffix := range []string{contract.TopicReply, contract.TopicResult, contract.TopicStatus, contract.TopicEvent} {
			filters[c.prefix+"/"+dev+"/"+suffix] = 1
		}
		t := cl.SubscribeMultiple(filters, nil)
		go func() {
			var err error
			if !t.WaitTimeout(10 * time.Second) {
				err = errors.New("controller subscribe: no SUBACK within 10s")
			} else {
				err = t.Error()
			}
			select {
			case subscribed <- err:
			default: // a later reconnect; nobody waits
			}
		}()
	})
	c.client = mqtt.NewClient(opts)
	t := c.client.Connect()
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return err
		}
	case <-ctx.Done():
		c.client.Disconnect(0)
		return ctx.Err()
	}
	select {
	case err := <-subscribed:
		return err
	case <-ctx.Done():
		c.client.Disconnect(0)
		return ctx.Err()
	}
}

// Close disconnects.
func (c *Controller) Close() {
	if c.client != nil {
		c.client.Disconnect(100)
	}
}

func (c *Controller) handle(_ mqtt.Client, m mqtt.Message) {
	rest, ok := strings.CutPrefix(m.Topic(), c.prefix+"/")
	if !ok {
		return
	}
	device, suffix, ok := strings.Cut(rest, "/")
	if !ok {
		return
	}
	now := time.Now()
	if c.Record {
		c.record(Message{Device: device, Topic: suffix, Payload: append([]byte(nil), m.Payload()...), At: now})
	}
	switch suffix {
	case contract.TopicReply:
		var r Reply
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		r.Raw, r.Received = append(json.RawMessage(nil), m.Payload()...), now
		c.mu.Lock()
		c.replies[r.RequestID]++
		ch := c.waiting[r.RequestID]
		delete(c.waiting, r.RequestID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
		if c.OnReply != nil {
			c.OnReply(device, r)
		}
	case contract.TopicResult:
		var r Result
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		r.Device, r.Received = device, now
		if c.OnResult != nil {
			c.OnResult(r)
		}
	case contract.TopicStatus:
		var s contract.Status
		if json.Unmarshal(m.Payload(), &s) != nil {
			return
		}
		c.mu.Lock()
		c.status[device] = s
		close(c.statusCh)
		c.statusCh = make(chan struct{})
		c.mu.Unlock()
		if c.OnStatus != nil {
			c.OnStatus(device, s)
		}
	case contract.TopicEvent:
		var ev contract.Event
		if json.Unmarshal(m.Payload(), &ev) != nil {
			return
		}
		if c.OnEvent != nil {
			c.OnEvent(device, ev)
		}
	}
}

// WaitOnline waits until device's retained status says online.
func (c *Controller) WaitOnline(ctx context.Context, device string) error {
	if err := c.WaitStatus(ctx, device, func(s contract.Status) bool { return s.Online }); err != nil {
		return fmt.Errorf("device %s not online: %w", device, ctx.Err())
	}
	return nil
}

// Online reports the last status seen for device.
func (c *Controller) Online(device string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status[device].Online
}

// WaitStatus waits until device's retained status satisfies ok.
func (c *Controller) WaitStatus(ctx context.Context, device string, ok func(contract.Status) bool) error {
	for {
		c.mu.Lock()
		s, ch := c.status[device], c.statusCh
		c.mu.Unlock()
		if ok(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("device %s: status %+v: %w", device, s, ctx.Err())
		}
	}
}

// NewRequestID returns a request id unique to this controller.
func (c *Controller) NewRequestID() string {
	return fmt.Sprintf("r-%s-%d", c.tag, c.seq.Add(1))
}

// Publish sends payload to <prefix>/<device>/<suffix> at QoS 1 and waits
// for the broker's PUBACK (or ctx).
func (c *Controller) Publish(ctx context.Context, device, suffix string, payload any) error {
	b, ok := payload.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(payload); err != nil {
			return err
		}
	}
	t := c.client.Publish(c.prefix+"/"+device+"/"+suffix, 1, false, b)
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return fmt.Errorf("publish %s: %w", suffix, ctx.Err())
	}
}

// Send publishes a command with a fresh request_id and returns a channel
// that receives its reply. fields are the command's other fields.
func (c *Controller) Send(ctx context.Context, device, suffix string, fields map[string]any) (string, <-chan Reply, error) {
	id := c.NewRequestID()
	msg := map[string]any{"request_id": id}
	for k, v := range fields {
		msg[k] = v
	}
	ch := make(chan Reply, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	if err := c.Publish(ctx, device, suffix, msg); err != nil {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return id, nil, err
	}
	return id, ch, nil
}

// Request sends a command and waits for its reply.
func (c *Controller) Request(ctx context.Context, device, suffix string, fields map[string]any) (Reply, error) {
	id, ch, err := c.Send(ctx, device, suffix, fields)
	if err != nil {
		return Reply{}, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return Reply{}, fmt.Errorf("%s %s: no reply: %w", device, suffix, ctx.Err())
	}
}

// Replies is how many replies carried request id.
func (c *Controller) Replies(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replies[id]
}

// Ack acknowledges a result on <device>/unlock/ack without waiting for the
// reply (the reply still arrives and is counted).
func (c *Controller) Ack(ctx context.Context, device, outTradeNo string, ok bool, reason string) (string, error) {
	fields := map[string]any{"out_trade_no": outTradeNo, "ok": ok}
	if reason != "" {
		fields["reason"] = reason
	}
	id, _, err := c.Send(ctx, device, contract.TopicAck, fields)
	return id, err
}
