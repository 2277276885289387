package device

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kioskpay/kioskpay/contract"
	"runtime/debug"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/store"
)

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
	if (m.Topic == contract.TopicCreate || m.Topic == contract.TopicCancel) && e.stale(m) {
		e.replyErr(m, contract.RequestIDOf(m.Payload), action, staleError(m, e.now()))
		return
	}
	switch m.Topic {
	case contract.TopicCreate:
		e.handleCreate(ctx, m)
	case contract.TopicCancel:
		e.handleCancel(ctx, m)
	case contract.TopicQuery:
		e.handleQuery(m)
	case contract.TopicRefund:
		e.handleRefund(m)
	case contract.TopicAck:
		e.handleAck(m)
	case contract.TopicNotify:
		e.handleNotify(ctx, m)
	case contract.TopicOrders:
		e.handleOrders(m)
	case contract.TopicReconcile:
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
	if err := e.checkSig(req.Signed, func() error { return req.Verify(e.cfg.ResultKey, e.now()) }); err != nil {
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

// checkSig enforces signed requests when required, and rejects a bad
// signature whenever a key is configured and one was sent.
func (e *Engine) checkSig(s contract.Signed, verify func() error) error {
	if len(e.cfg.ResultKey) == 0 {
		return nil
	}
	if !e.cfg.RequireSignedRequests && !s.HasSig() {
		return nil
	}
	return verify()
}

func fingerprint(provider string, legs []payment.ProviderName, r contract.OrderRequest) string {
	other, _ := json.Marshal(r.Other)
	b, _ := json.Marshal([]any{provider, legs, r.PID, r.TotalFee, r.Subject, r.Type, string(r.Custom), string(other), int64(r.Expire.Seconds())})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (e *Engine) handleCreate(ctx context.Context, m store.InboxEntry) {
	req, err := contract.DecodeCreate(m.Payload, contract.Limits{MaxFee: e.cfg.MaxFee, DefaultExpire: e.cfg.DefaultExpire})
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCreate, err)
		return
	}
	legs, err := e.checkCreate(&req)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCreate, err)
		return
	}
	otn := req.Order.OutTradeNo
	fp := fingerprint(req.Provider, legs, req.Order)

	e.createMu.Lock()
	defer e.createMu.Unlock()
	unlock := e.locks.lock(otn)
	defer unlock()

	existing, err := e.load(otn)
	switch {
	case err == nil:
		e.recreate(ctx, m, req, fp, existing)
		return
	case !errors.Is(err, errNotFound):
		e.replyErr(m, req.RequestID, contract.ActionCreate, err)
		return
	}
	if e.storageFull() {
		e.replyErr(m, req.RequestID, contract.ActionCreate, e.storageFullError())
		return
	}
	// One device, one customer, one QR: the order on screen is closed
	// first, and a create that cannot close it does not go ahead.
	if err := e.supersede(ctx, otn); err != nil {
		e.log.Error("create refused: the previous order could not be superseded", "order", otn, "err", err)
		e.replyErr(m, req.RequestID, contract.ActionCreate, err)
		return
	}

	now := e.now()
	o := store.Order{
		OutTradeNo: otn, RequestID: req.RequestID, Fingerprint: fp, Provider: req.Provider,
		PID: req.Order.PID, TotalFee: req.Order.TotalFee, Subject: req.Order.Subject, Type: req.Order.Type,
		Custom: req.Order.Custom, Expire: req.Order.Expire,
		CreatedAt: now, ExpiresAt: now.Add(req.Order.Expire).Round(0),
	}
	if req.Order.Other != nil {
		o.Other, _ = json.Marshal(req.Order.Other)
	}
	for _, p := range legs {
		o.Legs = append(o.Legs, store.Leg{Provider: p, State: store.LegCreating})
	}
	err = e.insert(o, func(w *writer) error {
		if err := w.doneInbox(m.ID); err != nil {
			return err
		}
		return w.to(store.Creating, "create")
	})
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCreate, err)
		return
	}
	t := e.timer(otn)
	t.deadline = now.Add(req.Order.Expire) // monotonic while we run
	e.resumeCreate(ctx, o, req.RequestID, 0)
	if ctx.Err() == nil {
		e.schedule(otn, e.now(), false)
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

// recreate answers a create for an out_trade_no that already exists: the
// same QR while pending with the same parameters (seed: re-pay with the
// original number), DUPLICATE_CONFLICT with different ones, ORDER_FINISHED
// after it ended.
func (e *Engine) recreate(ctx context.Context, m store.InboxEntry, req contract.CreateRequest, fp string, o store.Order) {
	switch o.State {
	case store.Creating:
		if o.Fingerprint != fp {
			e.replyErr(m, req.RequestID, contract.ActionCreate, duplicateConflict(req, &o, "exists"))
			return
		}
		// Left over from a crash and not resumed yet: finish it and answer
		// this request.
		e.resumeCreate(ctx, o, req.RequestID, m.ID)
		e.schedule(o.OutTradeNo, e.now(), false)
		return
	case store.Pending:
		if o.Fingerprint != fp {
			e.replyErr(m, req.RequestID, contract.ActionCreate, duplicateConflict(req, &o, "is pending"))
			return
		}
		rep, err := createReply(req.RequestID, &o)
		if err != nil {
			e.replyErr(m, req.RequestID, contract.ActionCreate, err)
			return
		}
		e.replyOnly(m.ID, rep)
		// Show it again: the controller is re-presenting this order.
		if e.cfg.Observer != nil {
			e.cfg.Observer.OrderChanged(viewOf(&o))
		}
		return
	}
	e.replyErr(m, req.RequestID, contract.ActionCreate, contract.Errorf(contract.ErrOrderFinished, "order %s has ended (%s); use a new out_trade_no", o.OutTradeNo, o.State))
}

// supersede closes every other order still waiting for payment before a
// new one is shown: one device, one customer, one QR. A payment that
// sneaked in meanwhile follows the paid path. It returns an error when an
// order could not be moved to closing (its commit failed): that order is
// still payable, so the new one must not be shown. The caller holds
// createMu.
func (e *Engine) supersede(ctx context.Context, newOTN string) error {
	var live []store.Order
	err := e.db.View(func(tx *store.Tx) error {
		var err error
		live, err = tx.LiveOrders()
		return err
	})
	if err != nil {
		return err
	}
	for _, y := range live {
		if y.OutTradeNo == newOTN || (y.State != store.Pending && y.State != store.Creating) {
			continue
		}
		err := func() error {
			unlock := e.locks.lock(y.OutTradeNo)
			defer unlock()
			if y.State == store.Creating {
				if err := e.resumeCreate(ctx, y, "", 0); err != nil {
					return err
				}
			}
			_, err := e.change(y.OutTradeNo, func(w *writer) error {
				switch w.o.State {
				case store.Pending:
					w.o.CloseReason = closeSupersede
					return w.to(store.Closing, "superseded by "+newOTN)
				case store.Creating:
					return fmt.Errorf("order %s is still being created", w.o.OutTradeNo)
				}
				return errNoop
			})
			if err != nil {
				return err
			}
			e.advance(ctx, y.OutTradeNo)
			return nil
		}()
		if err != nil {
			return fmt.Errorf("supersede %s: %w", y.OutTradeNo, err)
		}
	}
	return nil
}

// resumeCreate creates the provider orders of an order in state creating
// (right after it was persisted, or after a crash) and replies to the
// create request. Create is idempotent at both providers for the same
// out_trade_no and parameters, so calling it again after a crash is safe.
// The caller holds the order lock. replyTo overrides the stored request id
// (a repeated create); inboxID is retired with the reply.
func (e *Engine) resumeCreate(ctx context.Context, o store.Order, replyTo string, inboxID uint64) error {
	requestID := o.RequestID
	if replyTo != "" {
		requestID = replyTo
	}
	if !e.now().Before(o.ExpiresAt) {
		// Down past the QR's lifetime: never show it; close whatever the
		// provider may have created.
		_, err := e.change(o.OutTradeNo, func(w *writer) error {
			for i := range w.o.Legs {
				if w.o.Legs[i].State == store.LegCreating {
					w.o.Legs[i].State = store.LegAbandon
				}
			}
			w.o.CloseReason = closeExpire
			if err := w.doneInbox(inboxID); err != nil {
				return err
			}
			if err := w.reply(contract.ErrorReply(requestID, contract.ActionCreate, contract.Errorf(contract.ErrProviderUnavailable, "order %s expired before it could be created", o.OutTradeNo))); err != nil {
				return err
			}
			return w.to(store.Closing, "expired while creating")
		})
		if err != nil {
			e.storageError(err)
			e.log.Error("expire creating order", "order", o.OutTradeNo, "err", err)
		}
		return err
	}
	var other map[string]any
	if len(o.Other) > 0 {
		d := json.NewDecoder(strings.NewReader(string(o.Other)))
		d.UseNumber()
		_ = d.Decode(&other)
	}
	type outcome struct {
		created payment.Created
		err     error
	}
	results := map[payment.ProviderName]outcome{}
	for _, l := range o.Legs {
		if l.State != store.LegCreating {
			continue
		}
		prov, err := e.provider(o.PID, l.Provider)
		if err != nil {
			results[l.Provider] = outcome{err: &payment.RejectedError{Provider: l.Provider, Op: "create", Code: "NOT_CONFIGURED", Message: err.Error()}}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		c, err := prov.Create(cctx, payment.Order{
			OutTradeNo: o.OutTradeNo, Total: o.TotalFee, Subject: o.Subject,
			NotifyURL: e.notifyURL(l.Provider), ExpireAt: o.ExpiresAt, Other: other,
		})
		cancel()
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: the next Run resumes it
		}
		if err == nil && c.CodeURL == "" {
			err = fmt.Errorf("%s create returned no code", l.Provider)
		}
		if err != nil {
			e.log.Warn("provider create failed", "order", o.OutTradeNo, "provider", l.Provider, "err", err)
		}
		results[l.Provider] = outcome{c, err}
	}
	_, err := e.change(o.OutTradeNo, func(w *writer) error {
		if w.o.State != store.Creating {
			return errNoop
		}
		open, unknown := 0, 0
		var rejected *payment.RejectedError
		var invalid error // the request itself is wrong (other overrides a daemon field)
		for i := range w.o.Legs {
			l := &w.o.Legs[i]
			r, ok := results[l.Provider]
			if !ok || l.State != store.LegCreating {
				continue
			}
			switch {
			case r.err == nil:
				l.State, l.CodeURL = store.LegOpen, r.created.CodeURL
				open++
			case errors.Is(r.err, payment.ErrOtherOverride):
				// Refused before anything was sent: nothing to close.
				l.State, l.Error = store.LegFailed, r.err.Error()
				invalid = r.err
			case payment.IsUnknown(r.err) || orderExists(r.err):
				// The provider may have created it (or says it did: a
				// create repeated after a crash can find the order paid
				// or closed): it must be queried and closed, never shown.
				l.State, l.Error = store.LegAbandon, r.err.Error()
				unknown++
			default:
				l.State, l.Error = store.LegFailed, r.err.Error()
				errors.As(r.err, &rejected)
			}
		}
		if err := w.doneInbox(inboxID); err != nil {
			return err
		}
		if open > 0 {
			rep, err := createReply(requestID, w.o)
			if err != nil {
				return err
			}
			if err := w.reply(rep); err != nil {
				return err
			}
			return w.to(store.Pending, "created")
		}
		w.o.CloseReason = closeCreateFailed
		var rerr error
		switch {
		case invalid != nil:
			rerr = contract.AsError(invalid)
		case unknown > 0 || rejected == nil:
			rerr = contract.Errorf(contract.ErrProviderUnavailable, "the payment provider did not answer; try again")
		default:
			rerr = contract.Errorf(contract.ErrProviderRejected, "%s refused the order: %s %s", rejected.Provider, rejected.Code, rejected.Message)
		}
		w.o.LastError = rerr.Error()
		if err := w.reply(contract.ErrorReply(requestID, contract.ActionCreate, rerr)); err != nil {
			return err
		}
		if unknown > 0 {
			return w.to(store.Closing, closeCreateFailed)
		}
		return w.to(store.Failed, "create_rejected")
	})
	if err != nil {
		e.storageError(err)
		e.log.Error("record create outcome", "order", o.OutTradeNo, "err", err)
	}
	return err
}

// orderExists reports whether a create was refused because the provider
// already has an order with this number (paid, closed or otherwise used):
// then a payment may be waiting at the provider, and treating the leg as
// never created would keep that money without delivery.
func orderExists(err error) bool {
	for _, code := range []string{"ORDERPAID", "ORDER_CLOSED", "OUT_TRADE_NO_USED",
		"ACQ.TRADE_HAS_SUCCESS", "ACQ.TRADE_HAS_CLOSE", "ACQ.TRADE_HAS_FINISHED"} {
		if payment.IsRejected(err, code) {
			return true
		}
	}
	return false
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
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCancel, err)
		return
	}
	if err := e.checkSig(req.Signed, func() error { return req.Verify(e.cfg.ResultKey, e.now()) }); err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCancel, staleTS(err))
		return
	}
	unlock := e.locks.lock(req.OutTradeNo)
	defer unlock()
	o, err := e.change(req.OutTradeNo, func(w *writer) error {
		switch w.o.State {
		case store.Pending, store.Creating:
			w.o.CloseReason = closeCancel
			if err := w.to(store.Closing, "cancel"); err != nil {
				return err
			}
		case store.Closing:
		default:
			return contract.Errorf(contract.ErrOrderFinished, "order %s has ended (%s)", w.o.OutTradeNo, w.o.State)
		}
		if err := w.doneInbox(m.ID); err != nil {
			return err
		}
		return w.reply(contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionCancel, "closing"), OrderSummary: summarize(w.o)})
	})
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionCancel, notFound(err, req.OutTradeNo))
		return
	}
	_ = o
	e.advance(ctx, req.OutTradeNo)
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
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionRefund, err)
		return
	}
	if err := e.checkSig(req.Signed, func() error { return req.Verify(e.cfg.ResultKey, e.now()) }); err != nil {
		e.replyErr(m, req.RequestID, contract.ActionRefund, err)
		return
	}
	unlock := e.locks.lock(req.OutTradeNo)
	defer unlock()
	_, err = e.change(req.OutTradeNo, func(w *writer) error {
		o := w.o
		reply := func(r *store.Refund, msg string) error {
			if err := w.doneInbox(m.ID); err != nil {
				return err
			}
			return w.reply(contract.RefundReply{Reply: contract.OKReply(req.RequestID, contract.ActionRefund, msg), OutTradeNo: o.OutTradeNo,
				OutRefundNo: r.OutRefundNo, RefundFee: r.Amount, State: string(r.State)})
		}
		// A repeated command (QoS 1 redelivery, operator retry) returns
		// the refund it already started instead of paying out again.
		for i := range o.Refunds {
			r := &o.Refunds[i]
			if (req.OutRefundNo != "" && r.OutRefundNo == req.OutRefundNo) || (req.RequestID != "" && r.RequestID == req.RequestID) {
				if req.RefundFee != 0 && req.RefundFee != r.Amount {
					return &contract.Error{Name: contract.ErrDuplicateConflict, Field: "refund_fee", Msg: fmt.Sprintf("refund %s exists for %d fen", r.OutRefundNo, r.Amount)}
				}
				return reply(r, "already requested")
			}
		}
		if o.Winner == "" {
			return &contract.Error{Name: contract.ErrInvalidArgument, Field: "out_trade_no", Msg: fmt.Sprintf("order %s is not paid (%s)", o.OutTradeNo, o.State)}
		}
		// The provider holds the order total at it, less what was
		// refunded or is being refunded; a refund never asks for more.
		remaining := refundable(o, o.Winner)
		if remaining <= 0 {
			return contract.Errorf(contract.ErrOrderFinished, "order %s is already refunded in full", o.OutTradeNo)
		}
		amount := req.RefundFee
		if amount == 0 {
			amount = remaining
		}
		if amount > remaining {
			total := providerTotal(o, o.Winner)
			return &contract.Error{Name: contract.ErrFeeOutOfRange, Field: "refund_fee", Msg: fmt.Sprintf("refund_fee must be at most %d fen (order total %d at the provider, refunded or refunding %d)", remaining, total, total-remaining)}
		}
		reason := req.RefundDesc
		if reason == "" {
			reason = "operator refund"
		}
		r := w.addRefund(o.Winner, amount, reason, true, req.RequestID, req.OutRefundNo)
		if o.State != store.Refunding {
			if err := w.to(store.Refunding, "operator_refund"); err != nil {
				return err
			}
		}
		return reply(r, "refunding")
	})
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionRefund, notFound(err, req.OutTradeNo))
		return
	}
	e.schedule(req.OutTradeNo, e.now(), false)
}

// ---- ack ----

func (e *Engine) handleAck(m store.InboxEntry) {
	req, err := contract.DecodeAck(m.Payload)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionAck, err)
		return
	}
	if err := e.checkSig(req.Signed, func() error { return req.Verify(e.cfg.ResultKey, e.now()) }); err != nil {
		e.replyErr(m, req.RequestID, contract.ActionAck, err)
		return
	}
	unlock := e.locks.lock(req.OutTradeNo)
	defer unlock()
	_, err = e.change(req.OutTradeNo, func(w *writer) error {
		o := w.o
		msg := "ok"
		if unlocking(o) && !o.HasFlag(contract.FlagUnlockInterrupted) {
			// The local driver's outcome is the ack: this one changes
			// nothing. (An interrupted one waits for exactly this: a
			// human's ack.)
			msg = "ignored: the unlock driver decides this order"
			if err := w.doneInbox(m.ID); err != nil {
				return err
			}
			return w.reply(contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionAck, msg), OrderSummary: summarize(o)})
		}
		o.Acked = true
		switch {
		case (o.State == store.Paid || o.State == store.Held) && req.OK:
			if err := w.to(store.Delivered, "ack"); err != nil {
				return err
			}
		case (o.State == store.Paid || o.State == store.Held) && !req.OK:
			reason := "ack_failed"
			if req.Reason != "" {
				reason += ": " + req.Reason
			}
			w.addRefund(o.Winner, 0, reason, true, "", "")
			if err := w.to(store.Refunding, reason); err != nil {
				return err
			}
			msg = "refunding"
		case req.OK && o.HasFlag(contract.FlagNoAck) && (o.State == store.Refunding || o.State == store.Refunded):
			// Delivered after all, but the money already went back.
			o.Flag(contract.FlagLateAck)
			if err := w.note(contract.FlagLateAck); err != nil {
				return err
			}
			msg = "late ack: the payment was already refunded"
			if _, err := w.tx.DeleteResults(o.OutTradeNo); err != nil {
				return err
			}
		default:
			// Any other outcome: the ack only stops re-publication.
			if _, err := w.tx.DeleteResults(o.OutTradeNo); err != nil {
				return err
			}
		}
		if err := w.doneInbox(m.ID); err != nil {
			return err
		}
		return w.reply(contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionAck, msg), OrderSummary: summarize(o)})
	})
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionAck, notFound(err, req.OutTradeNo))
		return
	}
	e.schedule(req.OutTradeNo, e.now(), false)
}

// ---- notify ----

// handleNotify verifies a relayed provider notification with the merchant
// keys, then confirms it with a query before anything changes: the relay
// and the notification are only hints.
func (e *Engine) handleNotify(ctx context.Context, m store.InboxEntry) {
	req, err := contract.DecodeNotify(m.Payload)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionNotify, err)
		return
	}
	var n payment.Notification
	pid := ""
	pids := e.merchantIDs()
	for _, p := range pids {
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
	unlock := e.locks.lock(n.OutTradeNo)
	defer unlock()
	o, err := e.load(n.OutTradeNo)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionNotify, notFound(err, n.OutTradeNo))
		return
	}
	if o.PID != pid || o.Leg(req.Provider) == nil {
		e.replyErr(m, req.RequestID, contract.ActionNotify, contract.Errorf(contract.ErrSignatureInvalid, "notification is not from order %s's merchant", o.OutTradeNo))
		return
	}
	e.log.Debug("notification verified", "order", o.OutTradeNo, "provider", req.Provider, "kind", n.Kind)
	switch n.Kind {
	case payment.NotifyRefund:
		// The refund step queries every unsettled refund that is due;
		// the notification makes this one due now, whatever its schedule
		// (an ABNORMAL refund a person settled is otherwise queried only
		// at the slow rate).
		delete(e.timer(o.OutTradeNo).refundAt, n.OutRefundNo)
	default:
		if err := e.confirm(ctx, o, req.Provider, "notify"); err != nil {
			e.log.Warn("confirm notification", "order", o.OutTradeNo, "err", err)
		}
	}
	e.advance(ctx, o.OutTradeNo)
	cur, err := e.load(o.OutTradeNo)
	if err != nil {
		e.replyErr(m, req.RequestID, contract.ActionNotify, err)
		return
	}
	e.replyOnly(m.ID, contract.QueryReply{Reply: contract.OKReply(req.RequestID, contract.ActionNotify, "ok"), OrderSummary: summarize(&cur)})
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
