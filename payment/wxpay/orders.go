package wxpay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/native"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"github.com/kioskpay/kioskpay/payment"
)

// reservedKeys are the prepay fields kioskpay sets itself; Order.Other may
// add fields (attach, goods_tag, scene_info…) but never change these.
var reservedKeys = map[string]bool{
	"appid": true, "mchid": true, "description": true, "out_trade_no": true,
	"notify_url": true, "time_expire": true, "amount": true,
}

// Create places a Native order and returns its code_url.
func (c *Client) Create(ctx context.Context, o payment.Order) (payment.Created, error) {
	notifyURL := o.NotifyURL
	if notifyURL == "" {
		notifyURL = c.cfg.NotifyURL
	}
	if notifyURL == "" {
		return payment.Created{}, fmt.Errorf("wxpay create %s: no notify_url (WeChat requires one; set payment.notify_url)", o.OutTradeNo)
	}
	req := native.PrepayRequest{
		Appid:       core.String(c.cfg.AppID),
		Mchid:       core.String(c.cfg.MchID),
		Description: core.String(o.Subject),
		OutTradeNo:  core.String(o.OutTradeNo),
		NotifyUrl:   core.String(notifyURL),
		Amount:      &native.Amount{Total: core.Int64(int64(o.Total)), Currency: core.String("CNY")},
	}
	if !o.ExpireAt.IsZero() {
		// The SDK formats the time in its own location; WeChat documents
		// +08:00, so never send UTC "Z".
		t := o.ExpireAt.In(payment.Beijing)
		req.TimeExpire = &t
	}

	var codeURL string
	if len(o.Other) == 0 {
		resp, res, err := c.native.Prepay(ctx, req)
		if err == nil {
			err = wantStatus(res, http.StatusOK)
		}
		if err != nil {
			return payment.Created{}, c.apiError("create", o.OutTradeNo, err)
		}
		if resp.CodeUrl != nil {
			codeURL = *resp.CodeUrl
		}
	} else {
		body, err := mergeOther(req, o.Other)
		if err != nil {
			return payment.Created{}, fmt.Errorf("wxpay create %s: %w", o.OutTradeNo, err)
		}
		// The SDK's own Request signs the merged body and validates the
		// response exactly as NativeApiService.Prepay does.
		result, err := c.api.Request(ctx, http.MethodPost, consts.WechatPayAPIServer+"/v3/pay/transactions/native",
			http.Header{}, nil, body, consts.ApplicationJSON)
		if err == nil {
			err = wantStatus(result, http.StatusOK)
		}
		if err != nil {
			return payment.Created{}, c.apiError("create", o.OutTradeNo, err)
		}
		var resp native.PrepayResponse
		if err := core.UnMarshalResponse(result.Response, &resp); err != nil {
			return payment.Created{}, fmt.Errorf("wxpay create %s: decode response: %w", o.OutTradeNo, err)
		}
		if resp.CodeUrl != nil {
			codeURL = *resp.CodeUrl
		}
	}
	if codeURL == "" {
		return payment.Created{}, fmt.Errorf("wxpay create %s: response has no code_url", o.OutTradeNo)
	}
	c.log.Debug("created", "order", o.OutTradeNo, "total", int64(o.Total))
	return payment.Created{CodeURL: codeURL}, nil
}

// mergeOther renders req as the SDK would (its MarshalJSON checks the
// required fields) and adds the other keys, refusing any key kioskpay sets.
func mergeOther(req native.PrepayRequest, other map[string]any) (map[string]any, error) {
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var body map[string]any
	if err := d.Decode(&body); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(other))
	for k := range other {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, set := body[k]; set || reservedKeys[k] {
			fe := &payment.FieldError{Field: "data.other." + k, Code: payment.CodeInvalidArgument,
				Reason: "is set by kioskpay and cannot be overridden"}
			return nil, fmt.Errorf("%w: %w", fe, payment.ErrOtherOverride)
		}
		body[k] = other[k]
	}
	return body, nil
}

// Query reports the order's trade_state.
func (c *Client) Query(ctx context.Context, outTradeNo string) (payment.Status, error) {
	tx, res, err := c.native.QueryOrderByOutTradeNo(ctx, native.QueryOrderByOutTradeNoRequest{
		OutTradeNo: core.String(outTradeNo),
		Mchid:      core.String(c.cfg.MchID),
	})
	if err == nil {
		err = wantStatus(res, http.StatusOK)
	}
	if err != nil {
		if status, code := apiCode(err); status == http.StatusNotFound && (code == "ORDER_NOT_EXIST" || code == "ORDERNOTEXIST") {
			return payment.Status{State: payment.StateNotCreated}, nil
		}
		return payment.Status{}, c.apiError("query", outTradeNo, err)
	}
	st, err := c.transactionStatus(tx, outTradeNo)
	if err != nil {
		return payment.Status{}, fmt.Errorf("wxpay query %s: %w", outTradeNo, err)
	}
	c.log.Debug("queried", "order", outTradeNo, "state", st.State.String())
	return st, nil
}

// transactionStatus maps a verified Transaction (from a query or a
// notification) to a payment.Status.
//
// trade_state values (Native query and notification docs): NOTPAY and
// USERPAYING are unpaid and still payable. PAYERROR ("支付失败，其他原因")
// is read as unpaid and still payable too: a failed attempt does not end
// the order, and reading it as closed would stop polling a code that can
// still take money; the deadline closes it at the provider like any unpaid
// order. REVOKED and CLOSED are closed unpaid; SUCCESS is paid; REFUND was
// paid and is (partly) refunded. Anything else is an unknown outcome.
func (c *Client) transactionStatus(tx *payments.Transaction, outTradeNo string) (payment.Status, error) {
	if tx.OutTradeNo == nil || *tx.OutTradeNo != outTradeNo {
		return payment.Status{}, fmt.Errorf("response is for out_trade_no %q", deref(tx.OutTradeNo))
	}
	if tx.Mchid != nil && *tx.Mchid != c.cfg.MchID {
		return payment.Status{}, fmt.Errorf("response is for mchid %q", *tx.Mchid)
	}
	st := payment.Status{Scanned: true, TransactionID: deref(tx.TransactionId)}
	state := deref(tx.TradeState)
	switch state {
	case "NOTPAY", "USERPAYING", "PAYERROR":
		st.State = payment.StateWaiting
		return st, nil
	case "CLOSED", "REVOKED":
		st.State = payment.StateClosed
		return st, nil
	case "SUCCESS":
		st.State = payment.StatePaid
	case "REFUND":
		st.State = payment.StateRefunded
	default:
		return payment.Status{}, fmt.Errorf("unknown trade_state %q", state)
	}
	amt, err := amounts(tx)
	if err != nil {
		return payment.Status{}, fmt.Errorf("trade_state %s: %w", state, err)
	}
	st.Amount = amt
	if tx.SuccessTime != nil && *tx.SuccessTime != "" {
		t, err := time.Parse(time.RFC3339, *tx.SuccessTime)
		if err != nil {
			return payment.Status{}, fmt.Errorf("success_time %q: %w", *tx.SuccessTime, err)
		}
		st.PaidAt = t
	}
	return st, nil
}

// amounts reads the money of a paid transaction. amount.total is the
// order total WeChat holds and the only figure the money rule uses; a paid
// answer without it cannot be verified and is an unknown outcome.
// payer_total is below it under coupons and instant discounts (立减).
// What the merchant receives is the total less non-cash coupons (type
// NOCASH, or DISCOUNT in the older naming), which are not settled through
// WeChat Pay.
func amounts(tx *payments.Transaction) (payment.Amounts, error) {
	if tx.Amount == nil || tx.Amount.Total == nil || *tx.Amount.Total <= 0 {
		return payment.Amounts{}, errors.New("no positive amount.total")
	}
	a := payment.Amounts{Total: payment.Fen(*tx.Amount.Total)}
	var promoted, nonCash payment.Fen
	for _, p := range tx.PromotionDetail {
		if p.Amount == nil || *p.Amount <= 0 {
			continue
		}
		promoted += payment.Fen(*p.Amount)
		if t := deref(p.Type); t == "NOCASH" || t == "DISCOUNT" {
			nonCash += payment.Fen(*p.Amount)
		}
	}
	if pt := tx.Amount.PayerTotal; pt != nil && *pt >= 0 && payment.Fen(*pt) <= a.Total {
		a.PayerTotal = payment.Fen(*pt)
		a.Discount = a.Total - a.PayerTotal
	} else {
		a.Discount = min(promoted, a.Total)
	}
	a.Receipt = max(a.Total-nonCash, 0)
	return a, nil
}

// Close closes an unpaid order. ORDERPAID means the buyer paid in time.
func (c *Client) Close(ctx context.Context, outTradeNo string) (payment.Closed, error) {
	res, err := c.native.CloseOrder(ctx, native.CloseOrderRequest{
		OutTradeNo: core.String(outTradeNo),
		Mchid:      core.String(c.cfg.MchID),
	})
	if err == nil {
		// Only 204 is "closed": the SDK takes every 2xx for success, and
		// a 202 means accepted but not processed yet, to be repeated.
		err = wantStatus(res, http.StatusNoContent)
	}
	if err != nil {
		status, code := apiCode(err)
		if status >= 400 && status < 500 {
			switch code {
			case "ORDERPAID":
				c.log.Info("close refused: order paid", "order", outTradeNo)
				return payment.Closed{Paid: true}, nil
			case "ORDER_NOT_EXIST", "ORDERNOTEXIST", "ORDER_CLOSED", "ORDERCLOSED":
				// Nothing that could be paid exists any more.
				return payment.Closed{}, nil
			}
		}
		return payment.Closed{}, c.apiError("close", outTradeNo, err)
	}
	c.log.Debug("closed", "order", outTradeNo)
	return payment.Closed{}, nil
}

// Refund asks for money back; WeChat refunds once per OutRefundNo.
func (c *Client) Refund(ctx context.Context, r payment.RefundRequest) (payment.RefundStatus, error) {
	if err := r.CheckAmount(payment.WxPay); err != nil {
		return payment.RefundStatus{}, err
	}
	req := refunddomestic.CreateRequest{
		OutTradeNo:  core.String(r.OutTradeNo),
		OutRefundNo: core.String(r.OutRefundNo),
		Amount: &refunddomestic.AmountReq{
			Refund:   core.Int64(int64(r.Refund)),
			Total:    core.Int64(int64(r.Total)),
			Currency: core.String("CNY"),
		},
	}
	if r.Reason != "" {
		req.Reason = core.String(r.Reason)
	}
	if n := r.NotifyURL; n != "" {
		req.NotifyUrl = core.String(n)
	} else if c.cfg.NotifyURL != "" {
		req.NotifyUrl = core.String(c.cfg.NotifyURL)
	}
	resp, res, err := c.refunds.Create(ctx, req)
	if err == nil {
		err = wantStatus(res, http.StatusOK)
	}
	if err != nil {
		return payment.RefundStatus{}, c.apiError("refund", r.OutRefundNo, err)
	}
	st, err := refundStatus(resp, r.OutTradeNo, r.OutRefundNo)
	if err != nil {
		return payment.RefundStatus{}, fmt.Errorf("wxpay refund %s: %w", r.OutRefundNo, err)
	}
	c.log.Debug("refund requested", "order", r.OutTradeNo, "refund", r.OutRefundNo, "state", st.State.String())
	return st, nil
}

// QueryRefund reports a refund's status.
func (c *Client) QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (payment.RefundStatus, error) {
	resp, res, err := c.refunds.QueryByOutRefundNo(ctx, refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String(outRefundNo)})
	if err == nil {
		err = wantStatus(res, http.StatusOK)
	}
	if err != nil {
		if status, code := apiCode(err); status == http.StatusNotFound && code == "RESOURCE_NOT_EXISTS" {
			return payment.RefundStatus{State: payment.RefundNotFound}, nil
		}
		return payment.RefundStatus{}, c.apiError("refund_query", outRefundNo, err)
	}
	st, err := refundStatus(resp, outTradeNo, outRefundNo)
	if err != nil {
		return payment.RefundStatus{}, fmt.Errorf("wxpay refund_query %s: %w", outRefundNo, err)
	}
	return st, nil
}

func refundStatus(r *refunddomestic.Refund, outTradeNo, outRefundNo string) (payment.RefundStatus, error) {
	if deref(r.OutRefundNo) != outRefundNo {
		return payment.RefundStatus{}, fmt.Errorf("response is for out_refund_no %q", deref(r.OutRefundNo))
	}
	if outTradeNo != "" && r.OutTradeNo != nil && *r.OutTradeNo != outTradeNo {
		return payment.RefundStatus{}, fmt.Errorf("refund %s belongs to out_trade_no %q", outRefundNo, *r.OutTradeNo)
	}
	st := payment.RefundStatus{RefundID: deref(r.RefundId)}
	if r.Amount != nil && r.Amount.Refund != nil {
		st.Amount = payment.Fen(*r.Amount.Refund)
	}
	var status refunddomestic.Status
	if r.Status != nil {
		status = *r.Status
	}
	switch status {
	case refunddomestic.STATUS_SUCCESS:
		st.State = payment.RefundSuccess
	case refunddomestic.STATUS_PROCESSING:
		st.State = payment.RefundProcessing
	case refunddomestic.STATUS_ABNORMAL:
		// The buyer's card could not take the money; it waits for a
		// human at the merchant platform and is not final.
		st.State = payment.RefundAbnormal
	case refunddomestic.STATUS_CLOSED:
		st.State = payment.RefundClosed
	default:
		return payment.RefundStatus{}, fmt.Errorf("unknown refund status %q", status)
	}
	return st, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
