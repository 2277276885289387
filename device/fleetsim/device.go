// Package fleetsim simulates kioskpayd devices on a real MQTT broker, so
// that fleet tools and scripts (kioskctl status, watch, pay, orders, …) can
// be tested and measured against thousands of devices without thousands of
// daemons.
//
// A Fleet publishes the retained status of N devices. A subset of them is
// connected for real, each with its own MQTT session and Last Will, and
// answers commands the way SPEC §4 says kioskpayd does: every request is
// decoded with the daemon's own decoders (package device), so a message a
// real daemon would refuse is refused here with the same error, and every
// reply, result and event has the daemon's wire type. The rest of the
// fleet is offline: its status is the {"online":false} a Last Will leaves.
//
// What is simulated, not real: orders live in memory and there is no
// provider (a create answers at once with made-up codes; an order is paid
// when the caller says so, or PayAfter a create); a result is published
// once (the daemon re-sends until acknowledged); there is no ack timeout.
// A simulated device keeps a clean session, so commands sent while it is
// offline are not queued for it.
package fleetsim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// DefaultVersion is the version simulated devices report.
const DefaultVersion = "0.0.0-fleetsim"

// limits are the create limits a simulated device applies: kioskpayd's
// defaults (SPEC §3 payment.max_fee, payment.expire).
var limits = contract.Limits{MaxFee: config.DefaultMaxFee, DefaultExpire: config.DefaultExpire}

// Conn says how to reach the broker.
type Conn struct {
	// Brokers are tried in order (mqttclient.Brokers); all TLS or all plain.
	Brokers  []string
	Username string
	Password string
	// TLS is used for ssl:// and wss:// brokers (nil: the system roots).
	TLS *tls.Config
	// Logf, when set, reports what goes wrong in the background.
	Logf func(format string, args ...any)
}

// clientOptions returns paho options for a clean session under clientID
// with c's brokers, credentials and TLS.
func (c Conn) clientOptions(clientID string) (*mqtt.ClientOptions, error) {
	if _, err := brokerurl.CheckList(c.Brokers); err != nil {
		return nil, fmt.Errorf("broker %w", err)
	}
	return c.client(clientID).Options().SetCleanSession(true), nil
}

func (c Conn) client(clientID string) mqttclient.Config {
	return mqttclient.Config{Brokers: mqttclient.NewBrokers(c.Brokers), ClientID: clientID, Username: c.Username, Password: c.Password, TLS: c.TLS}
}

// connectWait bounds a Connect: paho gives each broker the connect timeout.
func (c Conn) connectWait() time.Duration { return c.client("").ConnectWait() }

// DeviceOptions configure one simulated device.
type DeviceOptions struct {
	ID      string
	Prefix  string // mqtt.topic_prefix
	Version string // default DefaultVersion
	// Key, when set, is the device's unlock.result_key_file: requests must
	// be signed with it and results are signed.
	Key []byte
	// PayAfter pays every order this long after its create (0: only when
	// Pay is called).
	PayAfter time.Duration
	// OnCreate runs after a create reply went out (tests decide outcomes).
	OnCreate func(d *Device, outTradeNo string)
	// StartedAt is the started_at of its status (zero: when it connects).
	StartedAt time.Time
}

// Device is one connected simulated device.
type Device struct {
	opts   DeviceOptions
	client mqtt.Client
	log    func(format string, args ...any)

	mu         sync.Mutex
	key        []byte
	onCreate   func(d *Device, outTradeNo string)
	codes      func(outTradeNo string) (codeURL, qrCode string)
	orders     map[string]*contract.OrderSummary
	acks       []contract.AckRequest
	seen       []string // topic suffixes received
	seq        uint64
	closed     bool
	silent     bool
	maxPage    int
	mismatches []contract.Mismatch
}

// Connect connects one simulated device (clean session, Last Will on its
// status topic), subscribes to its commands and publishes its retained
// online status.
func Connect(ctx context.Context, c Conn, o DeviceOptions) (*Device, error) {
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	d := &Device{opts: o, key: o.Key, onCreate: o.OnCreate, orders: map[string]*contract.OrderSummary{}, log: c.Logf}
	if d.log == nil {
		d.log = func(string, ...any) {}
	}
	opts, err := c.clientOptions("fleetsim-" + o.ID)
	if err != nil {
		return nil, err
	}
	opts.SetAutoReconnect(true).SetMaxReconnectInterval(10*time.Second).
		SetOrderMatters(false).SetKeepAlive(60*time.Second).
		SetBinaryWill(d.topic(contract.TopicStatus), contract.OfflineStatus(), 1, true)
	subs := map[string]byte{}
	for _, s := range contract.InboundTopics {
		subs[d.topic(s)] = 1
	}
	// On every (re)connect: subscribe (a clean session forgets), then say
	// online. paho runs this in a goroutine of its own; the first run
	// tells Connect the device is ready.
	ready := make(chan error, 1)
	opts.SetOnConnectHandler(func(cl mqtt.Client) {
		if err := mqttclient.Wait(context.Background(), cl.SubscribeMultiple(subs, d.handle), 10*time.Second); err != nil {
			d.log("device %s: subscribe: %v", o.ID, err)
			select {
			case ready <- err:
			default:
			}
			return
		}
		started := o.StartedAt
		if started.IsZero() {
			started = time.Now()
		}
		st, _ := json.Marshal(contract.Status{Online: true, Version: o.Version, ClockSynced: true, StartedAt: contract.FormatTime(started)})
		err := mqttclient.Wait(context.Background(), cl.Publish(d.topic(contract.TopicStatus), 1, true, st), 10*time.Second)
		if err != nil {
			d.log("device %s: publish status: %v", o.ID, err)
		}
		select {
		case ready <- err:
		default:
		}
	})
	d.client = mqtt.NewClient(opts)
	if err := mqttclient.Wait(ctx, d.client.Connect(), c.connectWait()); err != nil {
		d.client.Disconnect(0)
		return nil, fmt.Errorf("device %s: connect: %w", o.ID, err)
	}
	select {
	case err := <-ready:
		if err != nil {
			d.client.Disconnect(0)
			return nil, fmt.Errorf("device %s: %w", o.ID, err)
		}
	case <-ctx.Done():
		d.client.Disconnect(0)
		return nil, ctx.Err()
	}
	return d, nil
}

// ID is the device id.
func (d *Device) ID() string { return d.opts.ID }

// Close publishes the retained offline status, as a daemon stopping
// cleanly does (the broker drops the Will on a clean disconnect), and
// disconnects.
func (d *Device) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.mu.Unlock()
	if d.client.IsConnectionOpen() {
		_ = mqttclient.Wait(context.Background(), d.client.Publish(d.topic(contract.TopicStatus), 1, true, contract.OfflineStatus()), 5*time.Second)
	}
	d.client.Disconnect(100)
}

// SetSilent makes the device receive but never answer: online according
// to its status, deaf in practice.
func (d *Device) SetSilent(on bool) { d.mu.Lock(); d.silent = on; d.mu.Unlock() }

// SetKey changes the signing key (nil: unsigned requests and results).
func (d *Device) SetKey(key []byte) { d.mu.Lock(); d.key = key; d.mu.Unlock() }

// SetOnCreate replaces the create hook.
func (d *Device) SetOnCreate(f func(d *Device, outTradeNo string)) {
	d.mu.Lock()
	d.onCreate = f
	d.mu.Unlock()
}

// SetCodes makes create answer with these QR contents (WeChat code_url,
// Alipay qr_code) instead of codes made from the order number.
func (d *Device) SetCodes(f func(outTradeNo string) (codeURL, qrCode string)) {
	d.mu.Lock()
	d.codes = f
	d.mu.Unlock()
}

// SetFlags sets an order's flags (contract.FlagRefundStuck, …). It reports
// whether the order exists.
func (d *Device) SetFlags(no string, flags ...string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	o, ok := d.orders[no]
	if ok {
		o.Flags = append([]string(nil), flags...)
	}
	return ok
}

// SetMaxPage caps the orders a P/pay/orders page holds (0: the request's
// limit).
func (d *Device) SetMaxPage(n int) { d.mu.Lock(); d.maxPage = n; d.mu.Unlock() }

// SetMismatches sets what reconcile reports.
func (d *Device) SetMismatches(m []contract.Mismatch) {
	d.mu.Lock()
	d.mismatches = append([]contract.Mismatch(nil), m...)
	d.mu.Unlock()
}

// AddOrder puts an order in the device's memory without a create.
func (d *Device) AddOrder(no, state string, fee payment.Fen) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.orders[no] = &contract.OrderSummary{OutTradeNo: no, State: state, TotalFee: fee, Provider: string(payment.WxPay), PayType: contract.PayType(payment.WxPay)}
}

// Acks are the unlock acknowledgements received, in order.
func (d *Device) Acks() []contract.AckRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]contract.AckRequest(nil), d.acks...)
}

// Seen lists the topic suffixes of every command received, in order.
func (d *Device) Seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.seen...)
}

// Pay marks a pending order paid and publishes the paid result. It reports
// whether there was such an order.
func (d *Device) Pay(no string) bool { return d.Result(no, contract.ResultPaid) }

// Result ends an order with status: an event for the transition, then the
// result (signed when the device has a key). It reports whether the order
// exists.
func (d *Device) Result(no string, status contract.ResultStatus) bool {
	now := time.Now()
	d.mu.Lock()
	o, ok := d.orders[no]
	if !ok {
		d.mu.Unlock()
		return false
	}
	d.seq++
	seq, from := d.seq, o.State
	o.State, o.UpdatedAt = string(status), contract.FormatTime(now)
	switch status {
	case contract.ResultPaid:
		o.Status = store.StatusPaid
	case contract.ResultRefunded:
		o.Status, o.RefundedFee = store.StatusRefunded, o.PaidFee
	default:
		o.Status = store.StatusClosed
	}
	r := contract.Result{OutTradeNo: no, Status: status, PayType: o.PayType, Provider: o.Provider, TotalFee: o.TotalFee,
		Type: o.Type, Seq: seq, TS: now.Unix(), Custom: json.RawMessage(`{}`)}
	if status == contract.ResultPaid {
		o.PaidFee, o.PaidAt, o.TransactionID = o.TotalFee, contract.FormatTime(now), "4200"+no
		r.TransactionID, r.PaidAt = o.TransactionID, o.PaidAt
	}
	key := d.key
	d.mu.Unlock()
	d.publish(contract.TopicEvent, false, contract.Event{OutTradeNo: no, From: from, To: string(status), At: contract.FormatTime(now), Reason: "fleetsim"})
	r.Sign(key)
	d.publish(contract.TopicResult, false, r)
	return true
}

func (d *Device) topic(suffix string) string { return d.opts.Prefix + "/" + d.opts.ID + "/" + suffix }

func (d *Device) publish(suffix string, retained bool, v any) {
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			d.log("device %s: encode %s: %v", d.opts.ID, suffix, err)
			return
		}
	}
	if err := mqttclient.Wait(context.Background(), d.client.Publish(d.topic(suffix), 1, retained, b), 10*time.Second); err != nil {
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if !closed {
			d.log("device %s: publish %s: %v", d.opts.ID, suffix, err)
		}
	}
}

// handle answers one command, as kioskpayd would.
func (d *Device) handle(_ mqtt.Client, m mqtt.Message) {
	suffix := strings.TrimPrefix(m.Topic(), d.opts.Prefix+"/"+d.opts.ID+"/")
	d.mu.Lock()
	d.seen = append(d.seen, suffix)
	silent, key := d.silent, d.key
	d.mu.Unlock()
	if silent || m.Retained() {
		return // kioskpayd ignores retained commands too
	}
	p, now := m.Payload(), time.Now()
	// The topic is mapped to its action once, by the contract, as the
	// daemon does; every reply below carries it.
	action := contract.ActionForTopic(suffix)
	reply := func(v any) { d.publish(contract.TopicReply, false, v) }
	fail := func(id string, err error) { reply(contract.ErrorReply(id, action, err)) }
	// refused answers a request that did not decode or, when a key is
	// set, whose signature does not verify.
	refused := func(id string, r interface{ Verify([]byte, time.Time) error }, err error) bool {
		if err == nil && key != nil {
			err = r.Verify(key, now)
		}
		if err != nil {
			fail(id, err)
		}
		return err != nil
	}
	notFound := func(id, no string) {
		fail(id, contract.Errorf(contract.ErrOrderNotFound, "no order %s", no))
	}
	switch action {
	case contract.ActionCreate:
		r, err := contract.DecodeCreate(p, limits)
		if refused(r.RequestID, r, err) {
			return
		}
		d.create(r, now, reply)
	case contract.ActionQuery:
		r, err := contract.DecodeQuery(p)
		if err != nil {
			fail(r.RequestID, err)
			return
		}
		d.mu.Lock()
		o, ok := d.orders[r.OutTradeNo]
		var sum contract.OrderSummary
		if ok {
			sum = *o
		}
		d.mu.Unlock()
		if !ok {
			notFound(r.RequestID, r.OutTradeNo)
			return
		}
		reply(contract.QueryReply{Reply: contract.OKReply(r.RequestID, action, "ok"), OrderSummary: sum})
	case contract.ActionCancel:
		r, err := contract.DecodeCancel(p)
		if refused(r.RequestID, r, err) {
			return
		}
		if !d.exists(r.OutTradeNo) {
			notFound(r.RequestID, r.OutTradeNo)
			return
		}
		reply(contract.OKReply(r.RequestID, action, "order cancelled"))
		d.Result(r.OutTradeNo, contract.ResultCancelled)
	case contract.ActionRefund:
		r, err := contract.DecodeRefund(p)
		if refused(r.RequestID, r, err) {
			return
		}
		d.refund(r, reply, notFound)
	case contract.ActionAck:
		r, err := contract.DecodeAck(p)
		if refused(r.RequestID, r, err) {
			return
		}
		d.mu.Lock()
		d.acks = append(d.acks, r)
		if o := d.orders[r.OutTradeNo]; o != nil && o.State == string(contract.ResultPaid) && r.OK {
			o.State = "delivered"
		}
		d.mu.Unlock()
		reply(contract.OKReply(r.RequestID, action, "ok"))
	case contract.ActionOrders:
		r, err := contract.DecodeOrders(p)
		if err != nil {
			fail(r.RequestID, err)
			return
		}
		orders, next := d.page(r)
		reply(contract.OrdersReply{Reply: contract.OKReply(r.RequestID, action, "ok"), Orders: orders, Next: next})
	case contract.ActionReconcile:
		r, err := contract.DecodeReconcile(p, now)
		if err != nil {
			fail(r.RequestID, err)
			return
		}
		d.mu.Lock()
		n, mm := len(d.orders), append([]contract.Mismatch{}, d.mismatches...)
		d.mu.Unlock()
		reply(contract.ReconcileReply{Reply: contract.OKReply(r.RequestID, action, "since "+contract.FormatTime(r.Since)), Checked: n, ProviderOrders: n, Mismatches: mm})
	case contract.ActionNotify:
		reply(contract.OKReply(contract.RequestIDOf(p), action, "ok"))
	}
}

func (d *Device) exists(no string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.orders[no]
	return ok
}

// create records a pending order and answers with made-up codes of the
// providers' shapes.
func (d *Device) create(r contract.CreateRequest, now time.Time, reply func(any)) {
	no := r.Order.OutTradeNo
	prov := r.Provider
	if prov == "" {
		prov = "any"
	}
	wx, ali := "weixin://wxpay/bizpayurl?pr="+no, "https://qr.alipay.com/"+no
	d.mu.Lock()
	codes := d.codes
	d.mu.Unlock()
	if codes != nil {
		wx, ali = codes(no)
	}
	info := contract.OrderInfo{}
	if prov == string(payment.WxPay) || prov == "any" {
		info.CodeURL = wx
	}
	if prov == string(payment.Alipay) || prov == "any" {
		info.QRCode = ali
	}
	exp := now.Add(r.Order.Expire)
	payType := contract.PayType(payment.ProviderName(prov))
	d.mu.Lock()
	d.orders[no] = &contract.OrderSummary{OutTradeNo: no, State: "pending", TotalFee: r.Order.TotalFee,
		PayType: payType, Provider: string(prov), Type: r.Order.Type,
		CreatedAt: contract.FormatTime(now), UpdatedAt: contract.FormatTime(now), ExpiresAt: contract.FormatTime(exp)}
	d.mu.Unlock()
	reply(contract.CreateReply{Reply: contract.OKReply(r.RequestID, contract.ActionCreate, "ok"), OrderInfo: info,
		OutTradeNo: no, PayType: payType, NeedQRcode: true,
		QRCodeImage: "data:image/png;base64,", TotalFee: r.Order.TotalFee, ExpiresAt: contract.FormatTime(exp)})
	d.mu.Lock()
	hook := d.onCreate
	d.mu.Unlock()
	if hook != nil {
		hook(d, no)
	}
	if d.opts.PayAfter > 0 {
		time.AfterFunc(d.opts.PayAfter, func() {
			d.mu.Lock()
			pending := d.orders[no] != nil && d.orders[no].State == "pending" && !d.closed
			d.mu.Unlock()
			if pending {
				d.Pay(no)
			}
		})
	}
}

func (d *Device) refund(r contract.RefundRequest, reply func(any), notFound func(id, no string)) {
	d.mu.Lock()
	o, ok := d.orders[r.OutTradeNo]
	var total payment.Fen
	fee := r.RefundFee
	if ok {
		total = o.TotalFee
		if fee == 0 {
			fee = total
		}
		o.State, o.RefundedFee = "refunded", o.RefundedFee+fee
		o.Status = store.StatusRefunded
		if o.RefundedFee < o.PaidFee {
			o.Status = store.StatusPartlyRefunded
		}
	}
	d.mu.Unlock()
	if !ok {
		notFound(r.RequestID, r.OutTradeNo)
		return
	}
	no := r.OutRefundNo
	if no == "" {
		no = r.OutTradeNo + "R1"
	}
	reply(contract.RefundReply{Reply: contract.OKReply(r.RequestID, contract.ActionRefund, r.RefundDesc), OutTradeNo: r.OutTradeNo,
		OutRefundNo: no, RefundFee: fee, State: "refunded"})
}

// page answers P/pay/orders: newest first by out_trade_no (simulated
// order numbers sort by time), paged after the cursor.
func (d *Device) page(r contract.OrdersRequest) ([]contract.OrderSummary, string) {
	d.mu.Lock()
	maxPage := d.maxPage
	var all []contract.OrderSummary
	for _, o := range d.orders {
		if (r.State == "" || o.State == r.State) && (r.Flag == "" || slices.Contains(o.Flags, r.Flag)) {
			all = append(all, *o)
		}
	}
	d.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].OutTradeNo > all[j].OutTradeNo })
	if r.After != "" {
		i := sort.Search(len(all), func(i int) bool { return all[i].OutTradeNo < r.After })
		all = all[i:]
	}
	limit := r.Limit
	if maxPage > 0 && limit > maxPage {
		limit = maxPage
	}
	next := ""
	if len(all) > limit {
		all = all[:limit]
		next = all[len(all)-1].OutTradeNo
	}
	if all == nil {
		all = []contract.OrderSummary{}
	}
	return all, next
}
