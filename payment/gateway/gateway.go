// Package gateway is the payment.Provider of a daemon whose merchant keys
// are held by paygate (payment.backend = "gateway"): each provider call
// goes as a request over MQTT to paygate (package payment/gateway/wire) and
// waits for the reply.
//
// An answer is definite only when paygate says so: a provider rejection or
// a policy refusal becomes a *payment.RejectedError (its Code the
// provider's code, or paygate's rule); a timeout, a lost connection, a
// paygate rate limit or a provider failure leaves the outcome unknown, so
// the engine asks again as it does after a provider timeout. Nothing here
// ever turns a missing answer into "not paid".
//
// The calls use a connection of their own, under the device's broker
// identity (same user name or client certificate, so the broker's ACL
// confines it to the device's subtree like the daemon's link). A separate
// connection because the link's inbound path is flow-controlled on purpose
// (paho's reader stops while the engine's inbox is full, see package link)
// and records every message on disk: a reply queued behind a flood of
// commands would time out, and the engine's workers, waiting on those
// replies, are what empties the inbox. The gateway connection has a clean
// session: a reply that arrives after its call gave up is useless.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/gateway/wire"
)

// DefaultTimeout bounds one call (gateway.timeout).
const DefaultTimeout = 10 * time.Second

// Options configure a Conn.
type Options struct {
	// Broker is the device's broker login. Its ClientID must differ from
	// the link's (the link keeps a persistent session under its own):
	// "<mqtt.client_id>-gw" by convention.
	Broker mqttclient.Config
	// TopicPrefix and DeviceID make P; requests go to P/gw/req.
	TopicPrefix string
	DeviceID    string
	Timeout     time.Duration
	Logger      *slog.Logger
}

// ErrNotConnected is the unknown outcome of a call made while the broker
// connection is down.
var ErrNotConnected = errors.New("gateway: not connected to the broker")

// Conn is the connection to paygate, shared by every Provider of the
// daemon.
type Conn struct {
	opts    Options
	client  mqtt.Client
	reqT    string
	replyT  string
	idBase  string
	seq     atomic.Uint64
	mu      sync.Mutex
	pending map[string]chan wire.Reply
	subbed  atomic.Bool
}

// Dial starts connecting and returns at once: the daemon works without a
// broker (calls are unknown outcomes until it is back).
func Dial(o Options) (*Conn, error) {
	if o.Broker.Brokers == nil || o.Broker.ClientID == "" || o.TopicPrefix == "" || !contract.ValidDeviceID(o.DeviceID) {
		return nil, errors.New("gateway: Broker (brokers and client id), TopicPrefix and a valid DeviceID are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	c := &Conn{
		opts:    o,
		reqT:    wire.RequestTopic(o.TopicPrefix, o.DeviceID),
		replyT:  wire.ReplyTopic(o.TopicPrefix, o.DeviceID),
		idBase:  hex.EncodeToString(b),
		pending: map[string]chan wire.Reply{},
	}
	c.client = mqttclient.NewServiceClient(mqttclient.ServiceOptions{
		Config: o.Broker, Filter: c.replyT, Handler: c.onReply, Timeout: o.Timeout,
		Logger: o.Logger.With("component", "gateway"),
		Subscribed: func(broker string) {
			c.subbed.Store(true)
			o.Logger.Info("gateway connected", "broker", broker)
		},
		Lost: func(error) { c.subbed.Store(false) },
	})
	c.client.Connect()
	return c, nil
}

// Close disconnects.
func (c *Conn) Close() { c.client.Disconnect(250) }

// Connected reports whether calls can be made now.
func (c *Conn) Connected() bool { return c.client.IsConnectionOpen() && c.subbed.Load() }

func (c *Conn) onReply(_ mqtt.Client, m mqtt.Message) {
	rep, err := wire.DecodeReply(m.Payload())
	if err != nil {
		c.opts.Logger.Warn("gateway: unreadable reply ignored", "err", err)
		return
	}
	c.mu.Lock()
	ch := c.pending[rep.ID]
	delete(c.pending, rep.ID)
	c.mu.Unlock()
	if ch != nil {
		ch <- rep // buffered
	}
}

// Call sends a request and waits for its reply, at most the configured
// timeout. An error is an unknown outcome; a reply may still carry a
// refusal (Reply.Err).
func (c *Conn) Call(ctx context.Context, req wire.Request) (wire.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	// A call during a reconnect waits for it, within the same timeout.
	if err := c.WaitConnected(ctx); err != nil {
		return wire.Reply{}, err
	}
	req.ID = c.idBase + "-" + strconv.FormatUint(c.seq.Add(1), 36)
	ch := make(chan wire.Reply, 1)
	c.mu.Lock()
	c.pending[req.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}()
	if err := mqttclient.Wait(ctx, c.client.Publish(c.reqT, 1, false, wire.Encode(req)), c.opts.Timeout); err != nil {
		return wire.Reply{}, fmt.Errorf("gateway %s: publish: %w", req.Op, err)
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		return wire.Reply{}, fmt.Errorf("gateway %s: no reply from paygate: %w", req.Op, ctx.Err())
	}
}

// Ping makes a round trip to paygate that calls no provider (doctor).
func (c *Conn) Ping(ctx context.Context) error {
	rep, err := c.Call(ctx, wire.Request{Op: wire.OpPing})
	if err != nil {
		return err
	}
	return rep.Err()
}

// Providers returns the daemon's merchant accounts, reached through
// paygate: one Provider per pid and provider name.
func (c *Conn) Providers(accounts map[string][]payment.ProviderName) map[string]map[payment.ProviderName]payment.Provider {
	out := map[string]map[payment.ProviderName]payment.Provider{}
	for pid, names := range accounts {
		out[pid] = map[payment.ProviderName]payment.Provider{}
		for _, n := range names {
			out[pid][n] = &Provider{conn: c, pid: pid, name: n}
		}
	}
	return out
}

// Provider is one merchant account at one provider, reached through
// paygate.
type Provider struct {
	conn *Conn
	pid  string
	name payment.ProviderName
}

var _ payment.Provider = (*Provider)(nil)

// Name implements payment.Provider.
func (p *Provider) Name() payment.ProviderName { return p.name }

func (p *Provider) call(ctx context.Context, req wire.Request) (wire.Reply, error) {
	req.PID, req.Provider = p.pid, p.name
	rep, err := p.conn.Call(ctx, req)
	if err != nil {
		return rep, err
	}
	return rep, p.err(string(req.Op), rep)
}

// err maps a refusal to the engine's two kinds of error.
func (p *Provider) err(op string, rep wire.Reply) error {
	if rep.Error == "" {
		return nil
	}
	e := rep.Err()
	switch {
	case rep.Error == wire.ErrRateLimited:
		return fmt.Errorf("%w: %v", payment.ErrRateLimited, e)
	case !rep.Error.Definite():
		return e
	}
	code := rep.ProviderCode
	if code == "" {
		code = "PAYGATE_" + string(rep.Error)
	}
	return &payment.RejectedError{Provider: p.name, Op: op, Code: code, Message: rep.Msg}
}

// Create implements payment.Provider. The notify URL is paygate's to set.
func (p *Provider) Create(ctx context.Context, o payment.Order) (payment.Created, error) {
	rep, err := p.call(ctx, wire.Request{Op: wire.OpCreate, Order: &wire.Order{
		OutTradeNo: o.OutTradeNo, Total: o.Total, Subject: o.Subject, Type: o.Type, ExpireAt: o.ExpireAt, Other: o.Other,
	}})
	if err != nil {
		return payment.Created{}, err
	}
	if rep.CodeURL == "" {
		return payment.Created{}, errors.New("gateway create: reply without a code")
	}
	return payment.Created{CodeURL: rep.CodeURL}, nil
}

// Query implements payment.Provider.
func (p *Provider) Query(ctx context.Context, outTradeNo string) (payment.Status, error) {
	rep, err := p.call(ctx, wire.Request{Op: wire.OpQuery, OutTradeNo: outTradeNo})
	if err != nil {
		return payment.Status{}, err
	}
	s := rep.Status
	if s == nil || s.State == payment.StateUnknown {
		return payment.Status{}, errors.New("gateway query: reply without a state")
	}
	return payment.Status{State: s.State, Scanned: s.Scanned, Amount: s.Amount, TransactionID: s.TransactionID, PaidAt: s.PaidAt}, nil
}

// Close implements payment.Provider.
func (p *Provider) Close(ctx context.Context, outTradeNo string) (payment.Closed, error) {
	rep, err := p.call(ctx, wire.Request{Op: wire.OpClose, OutTradeNo: outTradeNo})
	if err != nil {
		return payment.Closed{}, err
	}
	if rep.Closed == nil {
		return payment.Closed{}, errors.New("gateway close: reply without a result")
	}
	return *rep.Closed, nil
}

// Refund implements payment.Provider.
func (p *Provider) Refund(ctx context.Context, r payment.RefundRequest) (payment.RefundStatus, error) {
	if err := r.CheckAmount(p.name); err != nil {
		return payment.RefundStatus{}, err
	}
	rep, err := p.call(ctx, wire.Request{Op: wire.OpRefund, Refund: &wire.Refund{
		OutTradeNo: r.OutTradeNo, OutRefundNo: r.OutRefundNo, Total: r.Total, Refund: r.Refund, Reason: r.Reason,
	}})
	return refundStatus("refund", rep, err)
}

// QueryRefund implements payment.Provider.
func (p *Provider) QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (payment.RefundStatus, error) {
	rep, err := p.call(ctx, wire.Request{Op: wire.OpQueryRefund, OutTradeNo: outTradeNo, OutRefundNo: outRefundNo})
	return refundStatus("refund query", rep, err)
}

func refundStatus(op string, rep wire.Reply, err error) (payment.RefundStatus, error) {
	if err != nil {
		return payment.RefundStatus{}, err
	}
	s := rep.RefundStatus
	if s == nil || s.State == payment.RefundUnknown {
		return payment.RefundStatus{}, fmt.Errorf("gateway %s: reply without a state", op)
	}
	return payment.RefundStatus{State: s.State, RefundID: s.RefundID, Amount: s.Amount}, nil
}

// ParseNotify implements payment.Provider: the device holds no key, so
// paygate verifies (and decrypts) the notification. Any failure, a
// timeout included, is an error, and the engine ignores the notification;
// polling still finds the payment.
func (p *Provider) ParseNotify(ctx context.Context, header http.Header, body []byte) (payment.Notification, error) {
	rep, err := p.call(ctx, wire.Request{Op: wire.OpNotify, Notify: &wire.Notify{Headers: header, Body: string(body)}})
	if err != nil {
		return payment.Notification{}, err
	}
	if rep.Notification == nil {
		return payment.Notification{}, errors.New("gateway verify_notify: reply without a notification")
	}
	return *rep.Notification, nil
}

// WaitConnected waits until calls can be made, or ctx ends.
func (c *Conn) WaitConnected(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !c.Connected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotConnected, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
