// Package alipay implements payment.Provider for Alipay face-to-face
// payment (当面付: alipay.trade.precreate QR codes) over the official-style
// SDK github.com/smartwalle/alipay/v3, in public-key mode.
//
// The SDK reports business failures (code != 10000) as successful calls
// with a code in the response, not as Go errors, so every call here checks
// the code explicitly. Every Go error from the SDK — network, timeout,
// non-JSON body, missing or wrong response signature — is an unknown
// outcome, never "not paid".
package alipay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"time"

	sdk "github.com/smartwalle/alipay/v3"

	"github.com/kioskpay/kioskpay/payment"
)

// Config is one Alipay application (merchant account).
type Config struct {
	AppID              string
	PrivateKeyPEM      string // app private key, PKCS#1 or PKCS#8, PEM or bare base64
	AlipayPublicKeyPEM string // Alipay public key of the app (public-key mode), PKIX
	// Gateway is the OpenAPI gateway URL; "" is production
	// (https://openapi.alipay.com/gateway.do), else e.g. a paysim URL +
	// "/gateway.do".
	Gateway string
	Timeout time.Duration // per HTTP call, default 10s
	Logger  *slog.Logger
}

// DefaultTimeout bounds one HTTP call when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

const (
	timeLayout  = "2006-01-02 15:04:05"
	productCode = "FACE_TO_FACE_PAYMENT"
	codeSuccess = "10000"
	// The sub_codes the adapter acts on.
	subTradeNotExist   = "ACQ.TRADE_NOT_EXIST"
	subTradeStatusErr  = "ACQ.TRADE_STATUS_ERROR"
	subSystemError     = "ACQ.SYSTEM_ERROR"
	subCancelTimeOut   = "ACQ.TRADE_CANCEL_TIME_OUT"
	cancelRetries      = 3
	maxNotifyBodyBytes = 64 << 10
)

// Alipay's clock is payment.Beijing: without it the SDK stamps requests
// in time.Local (UTC on most kiosks), eight hours off, and the gateway
// refuses them.

// reservedOther are request keys that Order.Other may not set: what the
// daemon sets itself, the amount-shaping fields, and the gateway's public
// parameters (which would be meaningless inside biz_content anyway).
var reservedOther = map[string]bool{
	"out_trade_no": true, "total_amount": true, "subject": true, "product_code": true,
	"notify_url": true, "time_expire": true, "timeout_express": true, "trade_no": true,
	"discountable_amount": true, "undiscountable_amount": true,
	"app_id": true, "method": true, "format": true, "charset": true, "sign_type": true,
	"sign": true, "timestamp": true, "version": true, "biz_content": true,
	"app_auth_token": true, "return_url": true, "encrypt_type": true,
	"app_cert_sn": true, "alipay_root_cert_sn": true, "alipay_cert_sn": true,
}

// Client is an Alipay application reached through the SDK. It implements
// payment.Provider and is safe for concurrent use.
type Client struct {
	sdk   *sdk.Client
	appID string
	log   *slog.Logger
}

var _ payment.Provider = (*Client)(nil)

// New builds a client. It makes no network call.
func New(cfg Config) (*Client, error) {
	if cfg.AppID == "" {
		return nil, errors.New("alipay: app_id is required")
	}
	if cfg.PrivateKeyPEM == "" {
		return nil, errors.New("alipay: app private key is required")
	}
	if cfg.AlipayPublicKeyPEM == "" {
		return nil, errors.New("alipay: alipay public key is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Gateway != "" {
		u, err := url.Parse(cfg.Gateway)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("alipay: gateway %q: want an http(s) URL", cfg.Gateway)
		}
	}
	c, err := sdk.New(cfg.AppID, cfg.PrivateKeyPEM, true,
		sdk.WithProductionGateway(cfg.Gateway), // "" keeps the production gateway
		sdk.WithTimeLocation(payment.Beijing),
		sdk.WithHTTPClient(&http.Client{Timeout: cfg.Timeout}))
	if err != nil {
		// The SDK's message does not contain key material.
		return nil, fmt.Errorf("alipay: app private key: %w", err)
	}
	if err := c.LoadAliPayPublicKey(cfg.AlipayPublicKeyPEM); err != nil {
		return nil, fmt.Errorf("alipay: alipay public key: %w", err)
	}
	return &Client{sdk: c, appID: cfg.AppID, log: cfg.Logger.With("provider", payment.Alipay)}, nil
}

// Name reports payment.Alipay.
func (c *Client) Name() payment.ProviderName { return payment.Alipay }

// check turns an SDK call's outcome into the payment error model.
func (c *Client) check(op, outTradeNo string, err error, e sdk.Error) error {
	if err != nil {
		c.log.Warn("alipay call failed, outcome unknown", "op", op, "order", outTradeNo, "err", err)
		return fmt.Errorf("alipay %s %s: %w", op, outTradeNo, err)
	}
	switch {
	case string(e.Code) == codeSuccess:
		return nil
	case e.Code == sdk.CodeCallLimited:
		c.log.Warn("alipay rate limited", "op", op, "order", outTradeNo, "sub_code", e.SubCode)
		return fmt.Errorf("alipay %s %s: %s %s: %w", op, outTradeNo, e.Code, e.SubCode, payment.ErrRateLimited)
	case e.Code == sdk.CodeUnknowError || e.SubCode == subSystemError || e.Code == "" || e.Code == sdk.CodeOrderSuccessPayInProcess:
		// 20000 and ACQ.SYSTEM_ERROR say "retry"; an empty or 10003
		// code is not an answer these APIs give.
		c.log.Warn("alipay system error, outcome unknown", "op", op, "order", outTradeNo, "code", e.Code, "sub_code", e.SubCode)
		return fmt.Errorf("alipay %s %s: provider error %s %s: %s", op, outTradeNo, e.Code, e.SubCode, e.SubMsg)
	}
	code := e.SubCode
	if code == "" {
		code = string(e.Code)
	}
	msg := e.SubMsg
	if msg == "" {
		msg = e.Msg
	}
	c.log.Info("alipay rejected", "op", op, "order", outTradeNo, "code", e.Code, "sub_code", e.SubCode)
	return &payment.RejectedError{Provider: payment.Alipay, Op: op, Code: code, Message: msg}
}

// tradeNotExist reports an answer that says Alipay has no such trade (or
// refund): a definite "no", unlike a failed call.
func tradeNotExist(err error, e sdk.Error) bool {
	return err == nil && string(e.Code) != codeSuccess && e.SubCode == subTradeNotExist
}

// Create precreates a face-to-face order and returns its qr_code.
//
// The standard fields come from the SDK's own TradePreCreate type; Other is
// merged on top through a Payload, which is the SDK's way to send fields its
// types do not have.
func (c *Client) Create(ctx context.Context, o payment.Order) (payment.Created, error) {
	if o.Total <= 0 {
		return payment.Created{}, fmt.Errorf("alipay create %s: total %d fen: must be positive", o.OutTradeNo, o.Total)
	}
	keys := make([]string, 0, len(o.Other))
	for k := range o.Other {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if reservedOther[k] {
			fe := &payment.FieldError{Field: "data.other." + k, Code: payment.CodeInvalidArgument,
				Reason: "is set by kioskpay and cannot be overridden"}
			return payment.Created{}, fmt.Errorf("alipay create %s: %w: %w", o.OutTradeNo, fe, payment.ErrOtherOverride)
		}
	}
	p := sdk.TradePreCreate{Trade: sdk.Trade{
		Subject:     o.Subject,
		OutTradeNo:  o.OutTradeNo,
		TotalAmount: o.Total.Yuan(),
		ProductCode: productCode,
	}}
	if !o.ExpireAt.IsZero() {
		// Absolute, unlike timeout_express which only starts at the scan.
		p.TimeExpire = o.ExpireAt.In(payment.Beijing).Format(timeLayout)
	}
	std, err := json.Marshal(p)
	if err != nil {
		return payment.Created{}, fmt.Errorf("alipay create %s: %w", o.OutTradeNo, err)
	}
	biz := map[string]any{}
	if err := json.Unmarshal(std, &biz); err != nil {
		return payment.Created{}, fmt.Errorf("alipay create %s: %w", o.OutTradeNo, err)
	}
	for _, k := range keys {
		biz[k] = o.Other[k]
	}
	payload := sdk.NewPayload(p.APIName())
	if o.NotifyURL != "" {
		payload.AddParam("notify_url", o.NotifyURL)
	}
	for k, v := range biz {
		payload.AddBizField(k, v)
	}
	var rsp sdk.TradePreCreateRsp
	err = c.sdk.Request(ctx, payload, &rsp)
	if err := c.check("create", o.OutTradeNo, err, rsp.Error); err != nil {
		return payment.Created{}, err
	}
	if rsp.QRCode == "" || (rsp.OutTradeNo != "" && rsp.OutTradeNo != o.OutTradeNo) {
		return payment.Created{}, fmt.Errorf("alipay create %s: success without a matching qr_code (out_trade_no %q)", o.OutTradeNo, rsp.OutTradeNo)
	}
	c.log.Debug("alipay order precreated", "order", o.OutTradeNo, "total", o.Total.Yuan())
	return payment.Created{CodeURL: rsp.QRCode}, nil
}

// amounts reads the money of a paid trade. total_amount is the order
// total Alipay holds and the only figure the money rule uses; without it a
// paid answer cannot be verified. buyer_pay_amount and receipt_amount are
// lower under discounts and are very often "0.00" in real query answers
// for paid trades: "0.00" and absent both mean "not reported" here.
// discount_amount (platform) and mdiscount_amount (merchant) are returned
// when asked for; without them the discount is what the buyer amount, or
// failing that the receipt amount, falls short of the total.
func amounts(total, buyer, receipt, platformDiscount, merchantDiscount string) (payment.Amounts, error) {
	t, err := payment.ParseYuan(total)
	if err != nil || t <= 0 {
		return payment.Amounts{}, fmt.Errorf("total_amount %q: not a positive amount", total)
	}
	a := payment.Amounts{Total: t}
	opt := func(s string) payment.Fen {
		if f, err := payment.ParseYuan(s); err == nil && f > 0 && f <= t {
			return f
		}
		return 0
	}
	a.PayerTotal, a.Receipt = opt(buyer), opt(receipt)
	switch d := opt(platformDiscount) + opt(merchantDiscount); {
	case a.PayerTotal > 0:
		a.Discount = t - a.PayerTotal
	case d > 0:
		a.Discount = min(d, t)
	case a.Receipt > 0:
		a.Discount = t - a.Receipt
	}
	return a, nil
}

// Query reports the trade's state. A precreated order nobody scanned yet has
// no trade: StateNotCreated, definitely unpaid.
func (c *Client) Query(ctx context.Context, outTradeNo string) (payment.Status, error) {
	rsp, err := c.sdk.TradeQuery(ctx, sdk.TradeQuery{OutTradeNo: outTradeNo})
	var e sdk.Error
	if rsp != nil {
		e = rsp.Error
	}
	if tradeNotExist(err, e) {
		return payment.Status{State: payment.StateNotCreated}, nil
	}
	if err := c.check("query", outTradeNo, err, e); err != nil {
		return payment.Status{}, err
	}
	if rsp.OutTradeNo != "" && rsp.OutTradeNo != outTradeNo {
		return payment.Status{}, fmt.Errorf("alipay query %s: answer is for out_trade_no %q", outTradeNo, rsp.OutTradeNo)
	}
	st := payment.Status{Scanned: true, TransactionID: rsp.TradeNo}
	paid := func() error {
		amt, err := amounts(rsp.TotalAmount, rsp.BuyerPayAmount, rsp.ReceiptAmount, rsp.DiscountAmount, rsp.MdiscountAmount)
		if err != nil {
			return fmt.Errorf("alipay query %s: %w", outTradeNo, err)
		}
		st.Amount = amt
		if rsp.SendPayDate != "" {
			if t, err := time.ParseInLocation(timeLayout, rsp.SendPayDate, payment.Beijing); err == nil {
				st.PaidAt = t
			} else {
				c.log.Warn("alipay send_pay_date unparsable", "order", outTradeNo, "send_pay_date", rsp.SendPayDate)
			}
		}
		return nil
	}
	switch rsp.TradeStatus {
	case sdk.TradeStatusWaitBuyerPay:
		st.State = payment.StateWaiting
	case sdk.TradeStatusSuccess, sdk.TradeStatusFinished:
		st.State = payment.StatePaid
		if err := paid(); err != nil {
			return payment.Status{}, err
		}
	case sdk.TradeStatusClosed:
		// Closed unpaid, or paid and then fully refunded: only the latter
		// has a payment date.
		st.State = payment.StateClosed
		if rsp.TradeNo != "" && rsp.SendPayDate != "" {
			st.State = payment.StateRefunded
			if err := paid(); err != nil {
				return payment.Status{}, err
			}
		}
	default:
		return payment.Status{}, fmt.Errorf("alipay query %s: unexpected trade_status %q", outTradeNo, rsp.TradeStatus)
	}
	return st, nil
}

// Close invalidates the order's QR code. A scanned, unpaid trade is closed
// with alipay.trade.close; a code nobody scanned has no trade to close, so it
// is burned with alipay.trade.cancel (which refunds, and says so, if a
// payment slipped in meanwhile). A trade that turns out paid is reported
// with Closed.Paid, not as an error.
func (c *Client) Close(ctx context.Context, outTradeNo string) (payment.Closed, error) {
	rsp, err := c.sdk.TradeClose(ctx, sdk.TradeClose{OutTradeNo: outTradeNo})
	var e sdk.Error
	if rsp != nil {
		e = rsp.Error
	}
	if err == nil && string(e.Code) != codeSuccess {
		switch e.SubCode {
		case subTradeNotExist:
			return c.cancel(ctx, outTradeNo)
		case subTradeStatusErr:
			st, err := c.Query(ctx, outTradeNo)
			if err != nil {
				return payment.Closed{}, err
			}
			switch st.State {
			case payment.StatePaid:
				return payment.Closed{Paid: true}, nil
			case payment.StateRefunded:
				return payment.Closed{Refunded: true}, nil
			case payment.StateClosed:
				return payment.Closed{}, nil
			}
			return payment.Closed{}, fmt.Errorf("alipay close %s: ACQ.TRADE_STATUS_ERROR but trade is %s", outTradeNo, st.State)
		}
	}
	if err := c.check("close", outTradeNo, err, e); err != nil {
		return payment.Closed{}, err
	}
	c.log.Debug("alipay trade closed", "order", outTradeNo)
	return payment.Closed{}, nil
}

func (c *Client) cancel(ctx context.Context, outTradeNo string) (payment.Closed, error) {
	for attempt := 1; ; attempt++ {
		rsp, err := c.sdk.TradeCancel(ctx, sdk.TradeCancel{OutTradeNo: outTradeNo})
		var e sdk.Error
		if rsp != nil {
			e = rsp.Error
		}
		if err == nil && e.SubCode == subCancelTimeOut {
			// Only reached after close found no trade: the code was never
			// scanned, and an unscanned QR dies after 2h, long before
			// cancel's 24h window ends. Nothing can be paid any more.
			c.log.Info("alipay cancel window over for an unscanned order", "order", outTradeNo)
			return payment.Closed{}, nil
		}
		if err := c.check("cancel", outTradeNo, err, e); err != nil {
			return payment.Closed{}, err
		}
		if rsp.RetryFlag == "Y" {
			if attempt >= cancelRetries {
				return payment.Closed{}, fmt.Errorf("alipay cancel %s: still retry_flag=Y after %d attempts", outTradeNo, attempt)
			}
			t := time.NewTimer(time.Duration(attempt) * 500 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return payment.Closed{}, fmt.Errorf("alipay cancel %s: %w", outTradeNo, ctx.Err())
			case <-t.C:
			}
			continue
		}
		switch rsp.Action {
		case "refund":
			c.log.Warn("alipay cancel refunded a payment", "order", outTradeNo)
			return payment.Closed{Refunded: true}, nil
		case "close", "":
			c.log.Debug("alipay order cancelled", "order", outTradeNo, "action", rsp.Action)
			return payment.Closed{}, nil
		}
		return payment.Closed{}, fmt.Errorf("alipay cancel %s: unexpected action %q", outTradeNo, rsp.Action)
	}
}

// Refund returns r.Refund of a paid trade. out_request_no = OutRefundNo makes
// it idempotent: a repeat answers fund_change=N and pays nothing.
func (c *Client) Refund(ctx context.Context, r payment.RefundRequest) (payment.RefundStatus, error) {
	if r.OutRefundNo == "" {
		return payment.RefundStatus{}, fmt.Errorf("alipay refund %s: out_refund_no is required for idempotency", r.OutTradeNo)
	}
	if err := r.CheckAmount(payment.Alipay); err != nil {
		return payment.RefundStatus{}, err
	}
	rsp, err := c.sdk.TradeRefund(ctx, sdk.TradeRefund{
		OutTradeNo:   r.OutTradeNo,
		RefundAmount: r.Refund.Yuan(),
		OutRequestNo: r.OutRefundNo,
		RefundReason: r.Reason,
	})
	var e sdk.Error
	if rsp != nil {
		e = rsp.Error
	}
	if err := c.check("refund", r.OutTradeNo, err, e); err != nil {
		return payment.RefundStatus{}, err
	}
	if rsp.OutTradeNo != "" && rsp.OutTradeNo != r.OutTradeNo {
		return payment.RefundStatus{}, fmt.Errorf("alipay refund %s: answer is for out_trade_no %q", r.OutTradeNo, rsp.OutTradeNo)
	}
	c.log.Debug("alipay refund done", "order", r.OutTradeNo, "out_refund_no", r.OutRefundNo, "amount", r.Refund.Yuan(), "fund_change", rsp.FundChange)
	// Alipay refunds settle synchronously; it has no refund id.
	return payment.RefundStatus{State: payment.RefundSuccess, Amount: r.Refund}, nil
}

// QueryRefund reports a refund made with Refund. Alipay answers 10000
// without refund fields when it has no such refund: RefundNotFound, and the
// caller may repeat the refund with the same number.
func (c *Client) QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (payment.RefundStatus, error) {
	rsp, err := c.sdk.TradeFastPayRefundQuery(ctx, sdk.TradeFastPayRefundQuery{OutTradeNo: outTradeNo, OutRequestNo: outRefundNo})
	var e sdk.Error
	if rsp != nil {
		e = rsp.Error
	}
	if tradeNotExist(err, e) {
		return payment.RefundStatus{State: payment.RefundNotFound}, nil
	}
	if err := c.check("query_refund", outTradeNo, err, e); err != nil {
		return payment.RefundStatus{}, err
	}
	if rsp.OutRequestNo != "" && rsp.OutRequestNo != outRefundNo {
		return payment.RefundStatus{}, fmt.Errorf("alipay query_refund %s: answer is for out_request_no %q", outTradeNo, rsp.OutRequestNo)
	}
	// For refunds made with alipay.trade.refund the answer carries the
	// refund (out_request_no, refund_amount) once it succeeded, with
	// refund_status REFUND_SUCCESS or, in older answers, none at all; no
	// refund data means it was not received or failed, and repeating it
	// with the same out_request_no is safe.
	switch {
	case rsp.RefundStatus == "REFUND_SUCCESS" || rsp.RefundStatus == "" && rsp.RefundAmount != "":
		amt, err := payment.ParseYuan(rsp.RefundAmount)
		if err != nil {
			return payment.RefundStatus{}, fmt.Errorf("alipay query_refund %s: refund_amount: %w", outTradeNo, err)
		}
		return payment.RefundStatus{State: payment.RefundSuccess, Amount: amt}, nil
	case rsp.RefundStatus == "":
		return payment.RefundStatus{State: payment.RefundNotFound}, nil
	}
	return payment.RefundStatus{State: payment.RefundProcessing}, nil
}

// ParseNotify verifies an Alipay asynchronous notification (the form body
// POSTed to notify_url; headers carry nothing) and decodes it.
func (c *Client) ParseNotify(ctx context.Context, _ http.Header, body []byte) (payment.Notification, error) {
	if len(body) > maxNotifyBodyBytes {
		return payment.Notification{}, fmt.Errorf("alipay notify: body of %d bytes is too large", len(body))
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return payment.Notification{}, fmt.Errorf("alipay notify: form: %w", err)
	}
	for k, vs := range form {
		if len(vs) != 1 {
			return payment.Notification{}, fmt.Errorf("alipay notify: parameter %q repeated", k)
		}
	}
	if form.Has("alipay_cert_sn") {
		// Public-key mode has no certificates; an unknown serial would make
		// the SDK download one from the gateway on hostile input.
		return payment.Notification{}, errors.New("alipay notify: alipay_cert_sn present in public-key mode")
	}
	if form.Get("sign") == "" {
		return payment.Notification{}, errors.New("alipay notify: unsigned")
	}
	if st := form.Get("sign_type"); st != "RSA2" {
		return payment.Notification{}, fmt.Errorf("alipay notify: sign_type %q, want RSA2", st)
	}
	n, err := c.sdk.DecodeNotification(ctx, form)
	if err != nil {
		return payment.Notification{}, fmt.Errorf("alipay notify: verify: %w", err)
	}
	if n.AppId != c.appID {
		return payment.Notification{}, fmt.Errorf("alipay notify: for app_id %q, not ours", n.AppId)
	}
	if n.OutTradeNo == "" {
		return payment.Notification{}, errors.New("alipay notify: no out_trade_no")
	}
	out := payment.Notification{OutTradeNo: n.OutTradeNo, TransactionID: n.TradeNo, ID: n.NotifyId}
	paid := func() error {
		amt, err := amounts(n.TotalAmount, n.BuyerPayAmount, n.ReceiptAmount, "", "")
		if err != nil {
			return fmt.Errorf("alipay notify %s: %w", n.OutTradeNo, err)
		}
		out.Amount = amt
		return nil
	}
	switch n.TradeStatus {
	case sdk.TradeStatusSuccess, sdk.TradeStatusFinished:
		out.Kind, out.State = payment.NotifyPayment, payment.StatePaid
	case sdk.TradeStatusClosed:
		out.Kind, out.State = payment.NotifyClosed, payment.StateClosed
		if n.GmtPayment != "" {
			out.State = payment.StateRefunded
		}
	case sdk.TradeStatusWaitBuyerPay:
		out.Kind, out.State = payment.NotifyPayment, payment.StateWaiting
	default:
		return payment.Notification{}, fmt.Errorf("alipay notify %s: unknown trade_status %q", n.OutTradeNo, n.TradeStatus)
	}
	if out.State.WasPaid() {
		if err := paid(); err != nil {
			return payment.Notification{}, err
		}
	}
	if isRefundNotice(n) {
		// A refund is reported as the trade's new status plus refund_fee
		// and out_biz_no (the refund's out_request_no).
		out.Kind = payment.NotifyRefund
		out.OutRefundNo = n.OutBizNo
		out.RefundState = payment.RefundSuccess
		if out.OutRefundNo == "" {
			out.OutRefundNo = n.OutTradeNo // a refund without out_request_no is keyed by out_trade_no
		}
	}
	return out, nil
}

// isRefundNotice tells a refund notification from a payment one. Payment
// notifications can carry refund_fee=0.00 too, TRADE_FINISHED ones among
// them (the refund window ended): only a refund_fee above zero or a
// gmt_refund on a refundable or closed trade reports a refund.
func isRefundNotice(n *sdk.Notification) bool {
	if n.TradeStatus != sdk.TradeStatusSuccess && n.TradeStatus != sdk.TradeStatusClosed {
		return false
	}
	fee, err := payment.ParseYuan(n.RefundFee)
	return err == nil && fee > 0 || n.GmtRefund != ""
}
