package wxpay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/wechatpay-apiv3/wechatpay-go/services/payments"

	"github.com/kioskpay/kioskpay/payment"
)

// MaxNotifyBody bounds the notification body ParseNotify accepts.
const MaxNotifyBody = 64 << 10

// refundResource is the decrypted REFUND.* resource (docs/providers.md B6).
type refundResource struct {
	Mchid         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	OutRefundNo   string `json:"out_refund_no"`
	RefundID      string `json:"refund_id"`
	RefundStatus  string `json:"refund_status"`
	Amount        struct {
		Total  int64 `json:"total"`
		Refund int64 `json:"refund"`
	} `json:"amount"`
}

// ParseNotify verifies a WeChat Pay notification with the SDK's notify
// handler (signature with the WeChat Pay public key, 5-minute timestamp
// window, AES-256-GCM decryption with the APIv3 key) and decodes it.
func (c *Client) ParseNotify(ctx context.Context, header http.Header, body []byte) (payment.Notification, error) {
	if len(body) > MaxNotifyBody {
		return payment.Notification{}, fmt.Errorf("wxpay notify: body of %d bytes is too large", len(body))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/", bytes.NewReader(body))
	if err != nil {
		return payment.Notification{}, fmt.Errorf("wxpay notify: %w", err)
	}
	// A relay may hand over header names in any case; the SDK looks them
	// up canonically.
	for k, vs := range header {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		req.Header[ck] = append(req.Header[ck], vs...)
	}
	var plain json.RawMessage
	n, err := c.notify.ParseNotifyRequest(ctx, req, &plain)
	if err != nil {
		return payment.Notification{}, fmt.Errorf("wxpay notify: %w", sdkNotifyError(err))
	}
	if n.Resource == nil {
		return payment.Notification{}, errors.New("wxpay notify: no resource")
	}
	switch {
	case n.EventType == "TRANSACTION.SUCCESS" && n.Resource.OriginalType == "transaction":
		var tx payments.Transaction
		if err := json.Unmarshal(plain, &tx); err != nil {
			return payment.Notification{}, fmt.Errorf("wxpay notify %s: transaction: %w", n.ID, err)
		}
		if tx.Appid != nil && *tx.Appid != c.cfg.AppID {
			return payment.Notification{}, fmt.Errorf("wxpay notify %s: for appid %q", n.ID, *tx.Appid)
		}
		st, err := c.transactionStatus(&tx, deref(tx.OutTradeNo))
		if err != nil {
			return payment.Notification{}, fmt.Errorf("wxpay notify %s: %w", n.ID, err)
		}
		if st.State != payment.StatePaid {
			return payment.Notification{}, fmt.Errorf("wxpay notify %s: TRANSACTION.SUCCESS with trade_state %q", n.ID, deref(tx.TradeState))
		}
		return payment.Notification{
			Kind:          payment.NotifyPayment,
			OutTradeNo:    *tx.OutTradeNo,
			State:         st.State,
			Amount:        st.Amount,
			TransactionID: st.TransactionID,
			ID:            n.ID,
		}, nil
	case strings.HasPrefix(n.EventType, "REFUND.") && n.Resource.OriginalType == "refund":
		var rr refundResource
		if err := json.Unmarshal(plain, &rr); err != nil {
			return payment.Notification{}, fmt.Errorf("wxpay notify %s: refund: %w", n.ID, err)
		}
		if rr.Mchid != c.cfg.MchID || rr.OutTradeNo == "" || rr.OutRefundNo == "" {
			return payment.Notification{}, fmt.Errorf("wxpay notify %s: refund for mchid %q out_trade_no %q out_refund_no %q", n.ID, rr.Mchid, rr.OutTradeNo, rr.OutRefundNo)
		}
		// REFUND.SUCCESS, REFUND.ABNORMAL and REFUND.CLOSED carry the
		// matching refund_status; the resource decides.
		var rs payment.RefundState
		switch rr.RefundStatus {
		case "SUCCESS":
			rs = payment.RefundSuccess
		case "CLOSED":
			rs = payment.RefundClosed
		case "ABNORMAL":
			rs = payment.RefundAbnormal
		case "PROCESSING":
			rs = payment.RefundProcessing
		default:
			return payment.Notification{}, fmt.Errorf("wxpay notify %s: refund_status %q", n.ID, rr.RefundStatus)
		}
		return payment.Notification{
			Kind:          payment.NotifyRefund,
			OutTradeNo:    rr.OutTradeNo,
			TransactionID: rr.TransactionID,
			OutRefundNo:   rr.OutRefundNo,
			RefundState:   rs,
			ID:            n.ID,
		}, nil
	}
	return payment.Notification{}, fmt.Errorf("wxpay notify %s: unsupported event %q (resource %q)", n.ID, n.EventType, n.Resource.OriginalType)
}

// sdkNotifyError drops the request dump the SDK appends to verification
// errors: it is long and adds nothing to a log line.
func sdkNotifyError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ", request: "); i >= 0 {
		return errors.New(msg[:i])
	}
	return err
}
