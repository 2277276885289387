package device

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

// The commands, one handler each: decode, apply the device's policy, then
// one call into the lifecycle (lifecycle.go), which changes the order and
// answers in the same commit. Every inbox message gets exactly one reply.

// handle processes one inbox message and makes sure it gets exactly one
// reply. A panic in a handler is contained: the message gets an INTERNAL
// reply and is dropped, so one poisoned message cannot crash-loop the
// daemon.
func (e *Engine) handle(ctx context.Context, m store.InboxEntry) {
	if ctx.Err() != nil {
		return // stays in the inbox for the next Run
	}
	action := contract.ActionForTopic(m.Topic)
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("command handler panicked", "topic", m.Topic, "panic", p, "stack", string(debug.Stack()))
			e.replyOnly(m.ID, contract.ErrorReply(contract.RequestIDOf(m.Payload), action, contract.Errorf(contract.ErrInternal, "internal error")))
		}
	}()
	if (action == contract.ActionCreate || action == contract.ActionCancel) && e.stale(m) {
		e.replyErr(m, contract.RequestIDOf(m.Payload), action, staleError(m, e.now()))
		return
	}
	switch action { // the topic is mapped once, by contract.ActionForTopic
	case contract.ActionCreate:
		e.handleCreate(ctx, m)
	case contract.ActionCancel:
		e.handleCancel(ctx, m)
	case contract.ActionQuery:
		e.handleQuery(m)
	case contract.ActionRefund:
		e.handleRefund(m)
	case contract.ActionAck:
		e.handleAck(m)
	case contract.ActionNotify:
		e.handleNotify(ctx, m)
	case contract.ActionOrders:
		e.handleOrders(m)
	case contract.ActionReconcile:
		e.handleReconcile(ctx, m)
	default:
		e.replyOnly(m.ID, contract.ErrorReply(contract.RequestIDOf(m.Payload), "", contract.Errorf(contract.ErrInvalidArgument, "unknown topic %q", m.Topic)))
	}
}

// replyOnly enqueues a reply that goes with no order change, and retires the
// inbox message in the same transaction. Replies of commands handled at
// the same time share a commit. When the commit fails the message stays
// in the inbox and is handled again (process).
func (e *Engine) replyOnly(inboxID uint64, v any) {
	now := e.now()
	err := e.db.Batch(func(tx *store.Tx) error {
		if inboxID != 0 {
			if err := tx.DeleteInbox(inboxID); err != nil {
				return err
			}
		}
		return enqueueReply(tx, now, v)
	})
	if err != nil {
		e.storageError(err)
		e.log.Error("write reply", "err", err)
		return
	}
	signal(e.outboxCh)
}

// replyErr answers a command with an error. A command that failed because
// the store is full is not answered with an error, except a create (it is
// refused with STORAGE_FULL): it stays in the inbox and is handled again
// until it goes through, because acks, notifications, refunds and queries
// must be processed, and a cancel either goes through or becomes stale.
func (e *Engine) replyErr(m store.InboxEntry, requestID, action string, err error) {
	if store.IsNoSpace(err) {
		e.storageError(err)
		if action != contract.ActionCreate {
			e.log.Warn("storage full: command left in the inbox to be handled again", "action", action, "err", err)
			return
		}
		err = e.storageFullError()
	}
	rep := contract.ErrorReply(requestID, action, err)
	if rep.Error == contract.ErrInternal {
		e.log.Error("command failed", "action", action, "err", err)
	} else {
		e.log.Info("command refused", "action", action, "error", rep.Error, "field", rep.Field, "msg", rep.Msg)
	}
	e.replyOnly(m.ID, rep)
}

// ---- create ----

// orderLegs resolves the requested provider to the merchant's accounts.
func (e *Engine) orderLegs(provider, pid string) ([]payment.ProviderName, error) {
	accounts, ok := e.cfg.Merchants[pid]
	if !ok {
		return nil, &contract.Error{Name: contract.ErrUnknownMerchant, Field: "data.pid", Msg: fmt.Sprintf("no merchant %q is configured", pid)}
	}
	var legs []payment.ProviderName
	for _, p := range []payment.ProviderName{payment.WxPay, payment.Alipay} {
		if accounts[p] != nil && (provider == contract.ProviderAny || provider == string(p)) {
			legs = append(legs, p)
		}
	}
	if len(legs) == 0 {
		return nil, &contract.Error{Name: contract.ErrUnsupportedProvider, Field: "provider", Msg: fmt.Sprintf("merchant %q has no %s account", pid, provider)}
	}
	return legs, nil
}

// checkCreate applies the device's policy to a decoded create request.
func (e *Engine) checkCreate(req *contract.CreateRequest) ([]payment.ProviderName, error) {
	if len(e.cfg.Catalog) > 0 {
		price, ok := e.cfg.Catalog[req.Order.Type]
		if !ok {
			return nil, &contract.Error{Name: contract.ErrPriceMismatch, Field: "data.type", Msg: fmt.Sprintf("type %q is not in this device's catalog", req.Order.Type)}
		}
		if price != req.Order.TotalFee {
			return nil, &contract.Error{Name: contract.ErrPriceMismatch, Field: "data.total_fee", Msg: fmt.Sprintf("type %q costs %d fen here, request says %d", req.Order.Type, price, req.Order.TotalFee)}
		}
	}
	if err := e.checkUnlockType(&store.Order{OutTradeNo: req.Order.OutTradeNo, Type: req.Order.Type, TotalFee: req.Order.TotalFee, Custom: req.Order.Custom}); err != nil {
		return nil, err
	}
	if req.Order.TotalFee > e.cfg.MaxFee {
		return nil, &contract.Error{Name: contract.ErrFeeOutOfRange, Field: "data.total_fee", Msg: fmt.Sprintf("data.total_fee must be from 1 to %d fen", e.cfg.MaxFee)}
	}
	if req.Provider == "" {
		req.Provider = string(e.cfg.DefaultProvider)
	}
	legs, err := e.orderLegs(req.Provider, req.Order.PID)
	if err != nil {
		return nil, err
	}
	if !e.clockSynced() {
		return nil, contract.Errorf(contract.ErrClockNotSynced, "the device clock is not synchronised; try again shortly")
	}
	if err := e.checkSig(req); err != nil {
		return nil, staleTS(err)
	}
	return legs, nil
}

// staleTS turns a signed create's or cancel's ts outside the signature
// window into COMMAND_STALE: the signature is good, the command is too old
// (or too far ahead) to act on.
func staleTS(err error) error {
	if ae := contract.AsError(err); ae.Name == contract.ErrSignatureInvalid && ae.Field == "ts" {
		return &contract.Error{Name: contract.ErrCommandStale, Field: "ts", Msg: ae.Msg}
	}
	return err
}

func (e *Engine) storageFullError() error {
	return contract.Errorf(contract.ErrStorageFull, "the device's storage is full; no new orders until space returns")
}

// signedRequest is a request that may carry a signature: create, cancel,
// refund, ack.
type signedRequest interface {
	HasSig() bool
	Verify(key []byte, now time.Time) error
}

// checkSig enforces signed requests when required, and rejects a bad
// signature whenever a key is configured and one was sent.
func (e *Engine) checkSig(req signedRequest) error {
	if len(e.cfg.ResultKey) == 0 {
		return nil
	}
	if !e.cfg.RequireSignedRequests && !req.HasSig() {
		return nil
	}
	return req.Verify(e.cfg.ResultKey, e.now())
}

func fingerprint(provider string, legs []payment.ProviderName, r contract.OrderRequest) string {
	other, _ := json.Marshal(r.Other)
	b, _ := json.Marshal([]any{provider, legs, r.PID, r.TotalFee, r.Subject, r.Type, string(r.Custom), string(other), int64(r.Expire.Seconds())})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (e *Engine) handleCreate(ctx context.Context, m store.InboxEntry) {
	req, err := contract.DecodeCreate(m.Payload, contract.Limits{MaxFee: e.cfg.MaxFee, DefaultExpire: e.cfg.DefaultExpire})
	if err == nil {
		var legs []payment.ProviderName
		if legs, err = e.checkCreate(&req); err == nil {
			err = e.create(ctx, m, req, legs)
		}
	}
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCreate, err)
	}
}

// duplicateConflict is the refusal of a create whose out_trade_no names an
// order with other parameters; field and message say which one differs.
func duplicateConflict(req contract.CreateRequest, o *store.Order, state string) *contract.Error {
	r := req.Order
	other := ""
	if r.Other != nil {
		b, _ := json.Marshal(r.Other)
		other = string(b)
	}
	for _, d := range []struct {
		field      string
		had, asked any
	}{
		{"provider", o.Provider, req.Provider},
		{"data.pid", o.PID, r.PID},
		{"data.total_fee", int64(o.TotalFee), int64(r.TotalFee)},
		{"data.subject", o.Subject, r.Subject},
		{"data.type", o.Type, r.Type},
		{"data.expire_seconds", int64(o.Expire.Seconds()), int64(r.Expire.Seconds())},
		{"data.custom", string(o.Custom), string(r.Custom)},
		{"data.other", string(o.Other), other},
	} {
		if d.had == d.asked {
			continue
		}
		e := &contract.Error{Name: contract.ErrDuplicateConflict, Field: d.field,
			Msg: fmt.Sprintf("order %s %s with other parameters: %s differs", o.OutTradeNo, state, d.field)}
		switch d.had.(type) {
		case int64:
			e.Msg = fmt.Sprintf("order %s %s with %s %v, not %v", o.OutTradeNo, state, d.field, d.had, d.asked)
		}
		return e
	}
	// The same request resolves to other providers than before (the
	// configured default changed).
	return &contract.Error{Name: contract.ErrDuplicateConflict, Field: "provider", Msg: fmt.Sprintf("order %s %s with other providers", o.OutTradeNo, state)}
}

func createReply(requestID string, o *store.Order) (contract.CreateReply, error) {
	rep := contract.CreateReply{
		Reply:      contract.OKReply(requestID, contract.ActionCreate, "ok"),
		OutTradeNo: o.OutTradeNo, PayType: payTypeOf(o), NeedQRcode: true,
		TotalFee: o.TotalFee, ExpiresAt: contract.FormatTime(o.ExpiresAt),
	}
	if len(o.Legs) > 1 {
		rep.PayType = contract.PayTypeAny
	}
	for _, l := range o.Legs {
		if l.State != store.LegOpen {
			continue
		}
		img, err := payment.QRDataURL(l.CodeURL)
		if err != nil {
			return rep, fmt.Errorf("QR for %s: %w", o.OutTradeNo, err)
		}
		switch l.Provider {
		case payment.WxPay:
			rep.OrderInfo.CodeURL = l.CodeURL
		case payment.Alipay:
			rep.OrderInfo.QRCode = l.CodeURL
		}
		if rep.QRCodeImage == "" {
			rep.QRCodeImage = img
		}
		if len(o.Legs) > 1 {
			if rep.QRCodeImages == nil {
				rep.QRCodeImages = map[string]string{}
			}
			rep.QRCodeImages[string(l.Provider)] = img
		}
	}
	return rep, nil
}

// ---- cancel, query ----

func (e *Engine) handleCancel(ctx context.Context, m store.InboxEntry) {
	req, err := contract.DecodeCancel(m.Payload)
	if err == nil {
		if err = e.checkSig(req); err != nil {
			err = staleTS(err)
		} else {
			err = e.cancel(ctx, m.ID, req)
		}
	}
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCancel, err)
	}
}

func notFound(err error, otn string) error {
	if errors.Is(err, errNotFound) {
		return contract.Errorf(contract.ErrOrderNotFound, "no order %s on this device", otn)
	}
	return err
}

func (e *Engine) handleQuery(m store.InboxEntry) {
	req, err := contract.DecodeQuery(m.Payload)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionQuery, err)
		return
	}
	o, err := e.load(req.OutTradeNo)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionQuery, notFound(err, req.OutTradeNo))
		return
	}
	e.replyOnly(m.ID, contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionQuery, "ok"), OrderSummary: summarize(&o)})
}

func summarize(o *store.Order) contract.OrderSummary {
	s := contract.OrderSummary{
		OutTradeNo: o.OutTradeNo, State: string(o.State), Status: statusOf(o), TotalFee: o.TotalFee,
		PaidFee: o.PaidFee, RefundedFee: o.RefundedFee, PayType: payTypeOf(o), Provider: string(o.Winner),
		Type: o.Type, CreatedAt: contract.FormatTime(o.CreatedAt), UpdatedAt: contract.FormatTime(o.UpdatedAt),
		ExpiresAt: contract.FormatTime(o.ExpiresAt), PaidAt: contract.FormatTime(o.PaidAt), TransactionID: o.TransactionID,
		Flags: o.Flags,
	}
	if s.Provider == "" {
		s.Provider = o.Provider
	}
	if l := o.Leg(o.Winner); l != nil {
		s.PayerTotal, s.Discount = l.PayerTotal, l.Discount
	}
	return s
}

// ---- refund ----

func (e *Engine) handleRefund(m store.InboxEntry) {
	req, err := contract.DecodeRefund(m.Payload)
	if err == nil {
		if err = e.checkSig(req); err == nil {
			err = e.operatorRefund(m.ID, req)
		}
	}
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionRefund, err)
	}
}

// ---- ack ----

func (e *Engine) handleAck(m store.InboxEntry) {
	req, err := contract.DecodeAck(m.Payload)
	if err == nil {
		if err = e.checkSig(req); err == nil {
			err = e.acknowledge(m.ID, req)
		}
	}
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionAck, err)
	}
}

// ---- notify ----

// handleNotify verifies a relayed provider notification with the merchant
// keys; the lifecycle confirms it with a query before anything changes.
func (e *Engine) handleNotify(ctx context.Context, m store.InboxEntry) {
	req, err := contract.DecodeNotify(m.Payload)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionNotify, err)
		return
	}
	var n payment.Notification
	pid := ""
	for _, p := range e.merchantIDs() {
		prov := e.cfg.Merchants[p][req.Provider]
		if prov == nil {
			continue
		}
		got, err := prov.ParseNotify(ctx, req.Header, req.Body)
		if err == nil {
			n, pid = got, p
			break
		}
	}
	if pid == "" {
		e.log.Warn("notification failed verification", "provider", req.Provider)
		e.replyErr(m, req.RequestID, contract.ActionNotify, contract.Errorf(contract.ErrSignatureInvalid, "notification does not verify with any %s merchant key", req.Provider))
		return
	}
	o, err := e.notified(ctx, req.Provider, n, pid)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionNotify, err)
		return
	}
	e.replyOnly(m.ID, contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionNotify, "ok"), OrderSummary: summarize(&o)})
}

// ---- orders, reconcile ----

func (e *Engine) handleOrders(m store.InboxEntry) {
	req, err := contract.DecodeOrders(m.Payload)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionOrders, err)
		return
	}
	rep := contract.OrdersReply{Reply: contract.OKReply(req.RequestID, contract.ActionOrders, "ok"), Orders: []contract.OrderSummary{}}
	more := false
	err = e.db.View(func(tx *store.Tx) error {
		return tx.Orders(req.After, func(o store.Order) bool {
			if req.State != "" && string(o.State) != req.State || req.Flag != "" && !o.HasFlag(req.Flag) {
				return true
			}
			if len(rep.Orders) == req.Limit {
				more = true
				return false
			}
			rep.Orders = append(rep.Orders, summarize(&o))
			return true
		})
	})
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionOrders, err)
		return
	}
	if more {
		rep.Next = rep.Orders[len(rep.Orders)-1].OutTradeNo
	}
	e.replyOnly(m.ID, rep)
	// A filtered listing may have read far into the history.
	e.releaseMemory()
}

// maxReconcile bounds one reconcile so a large window cannot hammer the
// providers.
const maxReconcile = 500

func (e *Engine) handleReconcile(ctx context.Context, m store.InboxEntry) {
	req, err := contract.DecodeReconcile(m.Payload, e.now())
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionReconcile, err)
		return
	}
	rep := contract.ReconcileReply{Reply: contract.OKReply(req.RequestID, contract.ActionReconcile, "ok")}
	if err := e.reconcile(ctx, req.Since, &rep); err != nil {
		if ctx.Err() == nil {
			e.replyErr(m, req.RequestID, contract.ActionReconcile, err)
		}
		return
	}
	e.replyOnly(m.ID, rep)
}

// reconcile compares the orders created since with the providers (at most
// maxReconcile) into rep, and acts on money the device did not know about
// like on any confirmed query: paid in time, or refunded.
func (e *Engine) reconcile(ctx context.Context, since time.Time, rep *contract.ReconcileReply) error {
	var orders []store.Order
	err := e.db.View(func(tx *store.Tx) error {
		return tx.OrdersSince(since, func(o store.Order) bool {
			orders = append(orders, o)
			return len(orders) < maxReconcile
		})
	})
	if err != nil {
		return err
	}
	rep.Mismatches = []contract.Mismatch{}
	for _, o := range orders {
		checked := false
		for _, l := range o.Legs {
			if l.State == store.LegFailed || l.State == store.LegCreating {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			st, err := e.query(ctx, o, l.Provider)
			if err != nil {
				rep.Mismatches = append(rep.Mismatches, contract.Mismatch{OutTradeNo: o.OutTradeNo, LocalState: string(o.State),
					ProviderState: "unknown", Provider: string(l.Provider), Detail: "query failed: " + err.Error()})
				continue
			}
			rep.ProviderOrders++
			checked = true
			if d := legMismatch(&o, l, st); d != "" {
				rep.Mismatches = append(rep.Mismatches, contract.Mismatch{OutTradeNo: o.OutTradeNo, LocalState: string(o.State),
					ProviderState: st.State.String(), Provider: string(l.Provider), Detail: d})
				if st.State == payment.StatePaid && l.State != store.LegPaid {
					func() {
						unlock := e.locks.lock(o.OutTradeNo)
						defer unlock()
						if _, err := e.change(o.OutTradeNo, func(w *writer) error { return w.observe(l.Provider, st, "reconcile") }); err == nil {
							e.schedule(o.OutTradeNo, e.now(), false)
						}
					}()
				}
			}
		}
		if checked {
			rep.Checked++
		}
	}
	return nil
}

// legMismatch describes a disagreement between a leg and the provider's
// answer ("" when they agree).
func legMismatch(o *store.Order, l store.Leg, st payment.Status) string {
	localPaid := l.State == store.LegPaid || l.State == store.LegRefunded
	switch {
	case st.State == payment.StatePaid && !localPaid:
		return fmt.Sprintf("provider says paid (order total %d fen); device has the order %s", st.Amount.Total, l.State)
	case st.State.WasPaid() && localPaid && l.Total != 0 && st.Amount.Total != l.Total:
		return fmt.Sprintf("order total differs: provider %d, device %d", st.Amount.Total, l.Total)
	case !st.State.WasPaid() && localPaid && l.State == store.LegPaid:
		return fmt.Sprintf("device recorded a payment; provider says %s", st.State)
	case st.State == payment.StatePaid && localPaid:
		for _, r := range o.Refunds {
			if r.Provider == l.Provider && r.State == store.RefundSuccess && r.Amount >= providerTotal(o, l.Provider) {
				return "device refunded in full; provider still reports the trade paid"
			}
		}
	case (st.State == payment.StateWaiting) && (o.State.Terminal()) && l.State != store.LegPaid:
		return "order ended on the device but is still payable at the provider"
	}
	return ""
}
