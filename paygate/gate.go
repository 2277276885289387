// Package paygate is the fleet-side payment gateway: it holds the merchant
// accounts and performs provider calls for devices whose kioskpayd runs
// with payment.backend = "gateway", under a per-device policy
// (docs/contract.md §3.7, README "Local keys or a gateway").
//
// A Gate is stateless apart from its append-only audit log: the provider is
// the source of truth, and every operation is idempotent at the provider
// by out_trade_no or out_refund_no, so any number of replicas can share the
// requests (an MQTT shared subscription) and a replica that dies mid-call
// loses nothing: the device's call times out as an unknown outcome and is
// asked again, maybe of another replica.
//
// The device is named by the topic its request arrived on, which the
// broker's ACL confines to the device's own subtree; nothing in a payload
// can name another device.
package paygate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/gateway/wire"
)

// Accounts are the merchant accounts, by pid and provider.
type Accounts map[string]map[payment.ProviderName]payment.Provider

// Gate decides and performs device requests.
type Gate struct {
	Policy   *PolicySet
	Accounts Accounts
	Audit    *AuditLog
	Replica  string
	// NotifyBase is <notify.public_url> ("" = poll only): orders get
	// <NotifyBase>/notify/<pid>/<provider>.
	NotifyBase string
	Logger     *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ClockSynced reports whether the clock can be trusted (clock.sync_check);
	// nil trusts it. Provider calls are signed with timestamps the providers
	// refuse when more than 5 minutes off, so paygate makes none while it is
	// not: the device sees an unknown outcome and asks again.
	ClockSynced func() (bool, error)

	limMu    sync.Mutex
	limiters map[string]*bucket
}

// PollOnlyNotifyURL is what WeChat Pay orders carry without notify.public_url;
// it names the reserved .invalid domain, which nothing can receive.
const PollOnlyNotifyURL = "https://notify.invalid/paygate/poll-only"

func (g *Gate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func (g *Gate) log() *slog.Logger {
	if g.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Logger
}

// Handle performs one request of device and returns the reply. Every
// decision is audited before it is returned; when the audit log cannot be
// written the reply is an unknown outcome (the provider may have been
// called; the device asks again).
func (g *Gate) Handle(ctx context.Context, device string, req wire.Request) wire.Reply {
	start := g.now()
	rec := Record{Replica: g.Replica, Device: device, RequestID: req.ID, Op: string(req.Op), PID: req.PID, Provider: string(req.Provider), OutTradeNo: req.OutTradeNo, OutRefundNo: req.OutRefundNo}
	switch {
	case req.Order != nil:
		rec.OutTradeNo, rec.Amount = req.Order.OutTradeNo, int64(req.Order.Total)
	case req.Refund != nil:
		rec.OutTradeNo, rec.OutRefundNo, rec.Amount = req.Refund.OutTradeNo, req.Refund.OutRefundNo, int64(req.Refund.Refund)
	}
	rep := g.handle(ctx, device, req, &rec)
	rep.ID = req.ID
	rec.Time = start
	rec.TookMS = g.now().Sub(start).Milliseconds()
	switch {
	case rep.Error == "":
		rec.Decision = Allowed
	case rep.Error.Definite():
		rec.Decision = Refused
	default:
		rec.Decision = Unknown
	}
	rec.Code, rec.Msg = string(rep.Error), rep.Msg
	if rep.ProviderCode != "" {
		rec.Code += ":" + rep.ProviderCode
	}
	if err := g.Audit.Write(rec); err != nil {
		g.log().Error("audit log write failed; answering unknown", "err", err)
		return wire.Refuse(req.ID, wire.ErrInternal, "audit log unavailable")
	}
	return rep
}

func (g *Gate) handle(ctx context.Context, device string, req wire.Request, rec *Record) wire.Reply {
	pol := g.Policy.PolicyFor(device)
	if !g.allow(device, pol) {
		return wire.Refuse(req.ID, wire.ErrRateLimited, "rate limit: device %s is over %g requests/s (burst %d)", device, pol.Rate, pol.Burst)
	}
	if req.Op == wire.OpPing {
		return wire.Reply{}
	}
	if g.ClockSynced != nil {
		if ok, err := g.ClockSynced(); !ok {
			return wire.Refuse(req.ID, wire.ErrProviderUnavailable, "clock: paygate's clock is not synchronised (%v); try again later", err)
		}
	}
	prov := g.Accounts[req.PID][req.Provider]
	if prov == nil {
		if g.Accounts[req.PID] == nil {
			return wire.Refuse(req.ID, wire.ErrUnknownMerchant, "merchant %q is not configured at paygate", req.PID)
		}
		return wire.Refuse(req.ID, wire.ErrUnsupportedProvider, "merchant %q has no %s account at paygate", req.PID, req.Provider)
	}
	prefix := g.Policy.Prefix(device)
	own := func(otn string) *wire.Reply {
		if strings.HasPrefix(otn, prefix) {
			return nil
		}
		r := wire.Refuse(req.ID, wire.ErrPolicyPrefix, "prefix: out_trade_no %q does not start with device %s's prefix %q", otn, device, prefix)
		return &r
	}
	switch req.Op {
	case wire.OpCreate:
		o := req.Order
		if r := own(o.OutTradeNo); r != nil {
			return *r
		}
		if o.Total > pol.MaxFee {
			return wire.Refuse(req.ID, wire.ErrPolicyMaxFee, "max_fee: %d fen is above device %s's max_fee of %d", int64(o.Total), device, int64(pol.MaxFee))
		}
		if len(pol.Catalog) > 0 {
			price, ok := pol.Catalog[o.Type]
			if !ok {
				return wire.Refuse(req.ID, wire.ErrPolicyCatalog, "catalog: type %q is not in device %s's catalog", o.Type, device)
			}
			if price != o.Total {
				return wire.Refuse(req.ID, wire.ErrPolicyCatalog, "catalog: type %q costs %d fen, not %d", o.Type, int64(price), int64(o.Total))
			}
		}
		c, err := prov.Create(ctx, payment.Order{
			OutTradeNo: o.OutTradeNo, Total: o.Total, Subject: o.Subject, Type: o.Type,
			NotifyURL: g.notifyURL(req.PID, req.Provider), ExpireAt: o.ExpireAt, Other: o.Other,
		})
		if err != nil {
			return providerErr(req.ID, err)
		}
		return wire.Reply{CodeURL: c.CodeURL}
	case wire.OpQuery:
		if r := own(req.OutTradeNo); r != nil {
			return *r
		}
		st, err := prov.Query(ctx, req.OutTradeNo)
		if err != nil {
			return providerErr(req.ID, err)
		}
		return wire.Reply{Status: &wire.Status{State: st.State, Scanned: st.Scanned, Amount: st.Amount, TransactionID: st.TransactionID, PaidAt: st.PaidAt}}
	case wire.OpClose:
		if r := own(req.OutTradeNo); r != nil {
			return *r
		}
		c, err := prov.Close(ctx, req.OutTradeNo)
		if err != nil {
			return providerErr(req.ID, err)
		}
		return wire.Reply{Closed: &c}
	case wire.OpQueryRefund:
		if r := own(req.OutTradeNo); r != nil {
			return *r
		}
		rs, err := prov.QueryRefund(ctx, req.OutTradeNo, req.OutRefundNo)
		if err != nil {
			return providerErr(req.ID, err)
		}
		return wire.Reply{RefundStatus: &wire.RefundStatus{State: rs.State, RefundID: rs.RefundID, Amount: rs.Amount}}
	case wire.OpRefund:
		if r := own(req.Refund.OutTradeNo); r != nil {
			return *r
		}
		return g.refund(ctx, device, req, prov, pol)
	case wire.OpNotify:
		n, err := prov.ParseNotify(ctx, http.Header(req.Notify.Headers), []byte(req.Notify.Body))
		if err != nil {
			return wire.Refuse(req.ID, wire.ErrSignatureInvalid, "notification does not verify with merchant %s's %s keys", req.PID, req.Provider)
		}
		rec.OutTradeNo = n.OutTradeNo
		if r := own(n.OutTradeNo); r != nil {
			return *r
		}
		return wire.Reply{Notification: &n}
	}
	return wire.Refuse(req.ID, wire.ErrBadRequest, "unknown op %q", req.Op)
}

// refund checks a refund against the policy and the provider's own record
// of the order, then sends it:
//   - the refund number is one of the device's automatic ones,
//     <out_trade_no>R<n> with n from 1 to max_refunds;
//   - the order is paid at the provider and the request's total is the
//     provider's total;
//   - it is within refund_window of the payment, unless this refund
//     already exists at the provider (a retry, which the provider dedupes);
//   - the amount is at most the provider total less every other refund of
//     the order at this provider that is not closed (R1 … R<max_refunds>):
//     the provider's refundable amount, never what the buyer paid.
func (g *Gate) refund(ctx context.Context, device string, req wire.Request, prov payment.Provider, pol Policy) wire.Reply {
	f := req.Refund
	n, ok := strings.CutPrefix(f.OutRefundNo, f.OutTradeNo+"R")
	k, err := strconv.Atoi(n)
	if !ok || err != nil || k < 1 || k > pol.MaxRefunds || strconv.Itoa(k) != n {
		return wire.Refuse(req.ID, wire.ErrPolicyRefundNo, "refund number: %q is not %sR1 … R%d; operator refunds go through the fleet side", f.OutRefundNo, f.OutTradeNo, pol.MaxRefunds)
	}
	st, err := prov.Query(ctx, f.OutTradeNo)
	if err != nil {
		return providerErr(req.ID, err)
	}
	if !st.State.WasPaid() {
		return wire.Refuse(req.ID, wire.ErrPolicyRefundAmount, "refund amount: order %s is %s at %s, nothing is refundable", f.OutTradeNo, st.State, prov.Name())
	}
	if f.Total != st.Amount.Total {
		return wire.Refuse(req.ID, wire.ErrPolicyRefundAmount, "refund amount: total %d fen is not the provider's order total %d", int64(f.Total), int64(st.Amount.Total))
	}
	var refunded payment.Fen
	exists := false
	for i := 1; i <= pol.MaxRefunds; i++ {
		no := f.OutTradeNo + "R" + strconv.Itoa(i)
		rs, err := prov.QueryRefund(ctx, f.OutTradeNo, no)
		switch {
		case payment.IsRejected(err, ""):
			continue // no such refund
		case err != nil:
			return providerErr(req.ID, err)
		}
		if rs.State == payment.RefundNotFound || rs.State == payment.RefundClosed {
			continue
		}
		if i == k {
			exists = true
			continue
		}
		refunded += rs.Amount
	}
	if !exists {
		if st.PaidAt.IsZero() || g.now().Sub(st.PaidAt) > pol.RefundWindow.Duration {
			return wire.Refuse(req.ID, wire.ErrPolicyRefundWindow, "refund window: order %s was paid at %s, more than %s ago; refund it from the fleet side", f.OutTradeNo, st.PaidAt.Format(time.RFC3339), pol.RefundWindow.Duration)
		}
	}
	if left := st.Amount.Total - refunded; f.Refund > left {
		return wire.Refuse(req.ID, wire.ErrPolicyRefundAmount, "refund amount: %d fen is above the refundable %d (total %d less %d already refunded)", int64(f.Refund), int64(left), int64(st.Amount.Total), int64(refunded))
	}
	rs, err := prov.Refund(ctx, payment.RefundRequest{
		OutTradeNo: f.OutTradeNo, OutRefundNo: f.OutRefundNo, Total: f.Total, Refund: f.Refund,
		Reason: f.Reason, NotifyURL: g.notifyURL(req.PID, req.Provider),
	})
	if err != nil {
		return providerErr(req.ID, err)
	}
	return wire.Reply{RefundStatus: &wire.RefundStatus{State: rs.State, RefundID: rs.RefundID, Amount: rs.Amount}}
}

// notifyURL is where the provider posts notifications of orders paygate
// creates: paygate itself, which holds the keys to verify them.
func (g *Gate) notifyURL(pid string, p payment.ProviderName) string {
	if g.NotifyBase == "" {
		if p == payment.WxPay {
			return PollOnlyNotifyURL
		}
		return ""
	}
	return strings.TrimRight(g.NotifyBase, "/") + "/notify/" + pid + "/" + string(p)
}

// providerErr turns a provider error into a reply: a rejection stays
// definite, anything else is an unknown outcome.
func providerErr(id string, err error) wire.Reply {
	var rej *payment.RejectedError
	if errors.As(err, &rej) {
		return wire.Reply{ID: id, Error: wire.ErrProviderRejected, ProviderCode: rej.Code, Msg: rej.Message}
	}
	msg := err.Error()
	if errors.Is(err, payment.ErrRateLimited) {
		return wire.Reply{ID: id, Error: wire.ErrRateLimited, Msg: "provider rate limit: " + msg}
	}
	return wire.Reply{ID: id, Error: wire.ErrProviderUnavailable, Msg: fmt.Sprintf("provider outcome unknown: %s", msg)}
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	at     time.Time
}

// allow takes a token from device's bucket. Buckets are per replica: N
// replicas allow up to N times the rate in the worst case.
func (g *Gate) allow(device string, p Policy) bool {
	now := g.now()
	g.limMu.Lock()
	defer g.limMu.Unlock()
	if g.limiters == nil {
		g.limiters = map[string]*bucket{}
	}
	b := g.limiters[device]
	if b == nil {
		b = &bucket{tokens: float64(p.Burst), at: now}
		g.limiters[device] = b
	}
	b.tokens = min(float64(p.Burst), b.tokens+now.Sub(b.at).Seconds()*p.Rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
