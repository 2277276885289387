package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/payment"
)

// fakeDevice answers kioskctl the way docs/contract.md §3 says kioskpayd does, decoding
// every request with the daemon's own decoders so a wire mismatch fails
// here. It keeps orders in memory and lets the test decide outcomes.
type fakeDevice struct {
	t      *testing.T
	id     string
	prefix string
	c      mqtt.Client
	key    []byte // when set, requests must be signed and results are

	closed atomic.Bool // the test is over: publish failures are expected

	mu     sync.Mutex
	orders map[string]*device.OrderSummary
	acks   []device.AckRequest
	seen   []string // topic suffixes received
	seq    uint64
	// onCreate runs after the create reply went out.
	onCreate func(d *fakeDevice, no string)
	// mismatches is what reconcile reports.
	mismatches []device.Mismatch
	silent     bool // never reply: an offline-but-retained device
	// codes, when set, gives an order's QR contents (WeChat, Alipay);
	// by default they are made from the order number.
	codes   func(no string) (codeURL, qrCode string)
	maxPage int // when set, orders pages hold at most this many
}

func newFakeDevice(t *testing.T, url, prefix, id string) *fakeDevice {
	t.Helper()
	d := &fakeDevice{t: t, id: id, prefix: prefix, orders: map[string]*device.OrderSummary{}}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("fake-"+id+"-"+randHex(3)).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).
		SetWill(d.topic(device.TopicStatus), string(device.OfflineStatus()), 1, true)
	d.c = mqtt.NewClient(opts)
	if tok := d.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("fake device connect: %v", tok.Error())
	}
	t.Cleanup(func() { d.closed.Store(true); d.c.Disconnect(100) })
	subs := map[string]byte{}
	for _, s := range device.InboundTopics {
		subs[d.topic(s)] = 1
	}
	if tok := d.c.SubscribeMultiple(subs, d.handle); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("fake device subscribe: %v", tok.Error())
	}
	st, _ := json.Marshal(device.Status{Online: true, Version: "1.2.3", Pending: 0, ClockSynced: true, StartedAt: "2025-01-02T03:04:05Z"})
	d.publish(device.TopicStatus, true, st)
	return d
}

func (d *fakeDevice) topic(suffix string) string { return d.prefix + "/" + d.id + "/" + suffix }

func (d *fakeDevice) publish(suffix string, retained bool, v any) {
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			d.t.Errorf("fake device marshal: %v", err)
			return
		}
	}
	tok := d.c.Publish(d.topic(suffix), 1, retained, b)
	if (!tok.WaitTimeout(5*time.Second) || tok.Error() != nil) && !d.closed.Load() {
		d.t.Errorf("fake device publish %s: %v", suffix, tok.Error())
	}
}

func (d *fakeDevice) handle(_ mqtt.Client, m mqtt.Message) {
	suffix := strings.TrimPrefix(m.Topic(), d.prefix+"/"+d.id+"/")
	d.mu.Lock()
	d.seen = append(d.seen, suffix)
	silent := d.silent
	d.mu.Unlock()
	if silent {
		return
	}
	p := m.Payload()
	now := time.Now()
	reply := func(v any) { d.publish(device.TopicReply, false, v) }
	fail := func(id, action string, err error) { reply(device.ErrorReply(id, action, err)) }
	switch suffix {
	case device.TopicCreate:
		r, err := device.DecodeCreate(p, payment.Limits{MaxFee: 100000, DefaultExpire: 5 * time.Minute})
		if err == nil && d.key != nil {
			err = r.Verify(d.key, now)
		}
		if err != nil {
			fail(r.RequestID, device.ActionCreate, err)
			return
		}
		no := r.Order.OutTradeNo
		prov := r.Provider
		if prov == "" {
			prov = "any"
		}
		wx, ali := "weixin://wxpay/bizpayurl?pr="+no, "https://qr.alipay.com/"+no
		if d.codes != nil {
			wx, ali = d.codes(no)
		}
		info := device.OrderInfo{}
		if prov == "wxpay" || prov == "any" {
			info.CodeURL = wx
		}
		if prov == "alipay" || prov == "any" {
			info.QRCode = ali
		}
		exp := now.Add(r.Order.Expire)
		d.mu.Lock()
		d.orders[no] = &device.OrderSummary{OutTradeNo: no, State: "pending", TotalFee: r.Order.TotalFee,
			PayType: device.PayType(payment.ProviderName(prov)), Provider: prov, Type: r.Order.Type,
			CreatedAt: device.FormatTime(now), UpdatedAt: device.FormatTime(now), ExpiresAt: device.FormatTime(exp)}
		hook := d.onCreate
		d.mu.Unlock()
		reply(device.CreateReply{Reply: device.OKReply(r.RequestID, device.ActionCreate, "ok"), OrderInfo: info,
			OutTradeNo: no, PayType: device.PayType(payment.ProviderName(prov)), NeedQRcode: true,
			QRCodeImage: "data:image/png;base64,", TotalFee: r.Order.TotalFee, ExpiresAt: device.FormatTime(exp)})
		if hook != nil {
			hook(d, no)
		}
	case device.TopicQuery:
		r, err := device.DecodeQuery(p)
		if err != nil {
			fail(r.RequestID, device.ActionQuery, err)
			return
		}
		d.mu.Lock()
		o, ok := d.orders[r.OutTradeNo]
		var sum device.OrderSummary
		if ok {
			sum = *o
		}
		d.mu.Unlock()
		if !ok {
			fail(r.RequestID, device.ActionQuery, device.Errorf(device.ErrOrderNotFound, "no order %s", r.OutTradeNo))
			return
		}
		reply(device.QueryReply{Reply: device.OKReply(r.RequestID, device.ActionQuery, "ok"), OrderSummary: sum})
	case device.TopicCancel:
		r, err := device.DecodeCancel(p)
		if err == nil && d.key != nil {
			err = r.Verify(d.key, now)
		}
		if err != nil {
			fail(r.RequestID, device.ActionCancel, err)
			return
		}
		if !d.setState(r.OutTradeNo, "cancelled") {
			fail(r.RequestID, device.ActionCancel, device.Errorf(device.ErrOrderNotFound, "no order %s", r.OutTradeNo))
			return
		}
		reply(device.OKReply(r.RequestID, device.ActionCancel, "order cancelled"))
		d.result(r.OutTradeNo, device.ResultCancelled)
	case device.TopicRefund:
		r, err := device.DecodeRefund(p)
		if err == nil && d.key != nil {
			err = r.Verify(d.key, now)
		}
		if err != nil {
			fail(r.RequestID, device.ActionRefund, err)
			return
		}
		d.mu.Lock()
		o, ok := d.orders[r.OutTradeNo]
		var total payment.Fen
		if ok {
			total = o.TotalFee
		}
		d.mu.Unlock()
		if !ok {
			fail(r.RequestID, device.ActionRefund, device.Errorf(device.ErrOrderNotFound, "no order %s", r.OutTradeNo))
			return
		}
		fee := r.RefundFee
		if fee == 0 {
			fee = total
		}
		no := r.OutRefundNo
		if no == "" {
			no = r.OutTradeNo + "_r1"
		}
		d.setState(r.OutTradeNo, "refunded")
		reply(device.RefundReply{Reply: device.OKReply(r.RequestID, device.ActionRefund, r.RefundDesc), OutTradeNo: r.OutTradeNo,
			OutRefundNo: no, RefundFee: fee, State: "refunded"})
	case device.TopicAck:
		r, err := device.DecodeAck(p)
		if err == nil && d.key != nil {
			err = r.Verify(d.key, now)
		}
		if err != nil {
			fail(r.RequestID, device.ActionAck, err)
			return
		}
		d.mu.Lock()
		d.acks = append(d.acks, r)
		d.mu.Unlock()
		reply(device.OKReply(r.RequestID, device.ActionAck, "ok"))
	case device.TopicOrders:
		r, err := device.DecodeOrders(p)
		if err != nil {
			fail(r.RequestID, device.ActionOrders, err)
			return
		}
		d.mu.Lock()
		maxPage := d.maxPage
		var all []device.OrderSummary
		for _, o := range d.orders {
			if (r.State == "" || o.State == r.State) && (r.Flag == "" || slices.Contains(o.Flags, r.Flag)) {
				all = append(all, *o)
			}
		}
		d.mu.Unlock()
		// Newest first; the order numbers of the test sort by time.
		sort.Slice(all, func(i, j int) bool { return all[i].OutTradeNo > all[j].OutTradeNo })
		if r.After != "" {
			i := sort.Search(len(all), func(i int) bool { return all[i].OutTradeNo < r.After })
			all = all[i:]
		}
		next := ""
		if maxPage > 0 && r.Limit > maxPage {
			r.Limit = maxPage
		}
		if len(all) > r.Limit {
			all = all[:r.Limit]
			next = all[len(all)-1].OutTradeNo
		}
		if all == nil {
			all = []device.OrderSummary{}
		}
		reply(device.OrdersReply{Reply: device.OKReply(r.RequestID, device.ActionOrders, "ok"), Orders: all, Next: next})
	case device.TopicReconcile:
		r, err := device.DecodeReconcile(p, now)
		if err != nil {
			fail(r.RequestID, device.ActionReconcile, err)
			return
		}
		d.mu.Lock()
		n, mm := len(d.orders), append([]device.Mismatch{}, d.mismatches...)
		d.mu.Unlock()
		reply(device.ReconcileReply{Reply: device.OKReply(r.RequestID, device.ActionReconcile, "since "+device.FormatTime(r.Since)), Checked: n, ProviderOrders: n, Mismatches: mm})
	case device.TopicNotify:
		reply(device.OKReply(device.RequestIDOf(p), device.ActionNotify, "ok"))
	}
}

func (d *fakeDevice) setState(no, state string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	o, ok := d.orders[no]
	if ok {
		o.State = state
	}
	return ok
}

// result publishes a terminal result for an order, signed when the device
// has a key, with an event for the transition.
func (d *fakeDevice) result(no string, status device.ResultStatus) {
	d.mu.Lock()
	d.seq++
	seq := d.seq
	o := d.orders[no]
	from := o.State
	total := o.TotalFee
	if status == device.ResultPaid {
		o.State = "paid"
		o.TransactionID = "4200" + no
	}
	d.mu.Unlock()
	d.publish(device.TopicEvent, false, device.Event{OutTradeNo: no, From: from, To: string(status), At: device.FormatTime(time.Now())})
	r := device.Result{OutTradeNo: no, Status: status, PayType: "wxpay_native", TotalFee: total, Seq: seq, TS: time.Now().Unix(), Custom: json.RawMessage(`{"seat":3}`)}
	if status == device.ResultPaid {
		r.TransactionID = "4200" + no
		r.PaidAt = device.FormatTime(time.Now())
	}
	r.Sign(d.key)
	d.publish(device.TopicResult, false, r)
}

func (d *fakeDevice) addOrder(no, state string, fee payment.Fen) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.orders[no] = &device.OrderSummary{OutTradeNo: no, State: state, TotalFee: fee, Provider: "wxpay", PayType: "wxpay_native"}
}

func (d *fakeDevice) ackList() []device.AckRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]device.AckRequest(nil), d.acks...)
}

func (d *fakeDevice) String() string { return fmt.Sprintf("fake device %s/%s", d.prefix, d.id) }
