package contract

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// SignatureWindow is how far a signed request's ts may be from the device
// clock (docs/contract.md §3.5: ±300 s).
const SignatureWindow = 300 * time.Second

func hmacHex(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	for i, p := range parts {
		if i > 0 {
			m.Write([]byte{'\n'})
		}
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// ResultSignature computes a result's sig (docs/contract.md §3.5): lowercase hex
// HMAC-SHA256(key, out_trade_no "\n" status "\n" total_fee "\n" seq "\n" ts).
func ResultSignature(key []byte, outTradeNo string, status ResultStatus, totalFee payment.Fen, seq uint64, ts int64) string {
	return hmacHex(key, outTradeNo, string(status),
		strconv.FormatInt(int64(totalFee), 10), strconv.FormatUint(seq, 10), strconv.FormatInt(ts, 10))
}

// Sign sets r.Sig from its fields; a nil or empty key leaves it unsigned.
func (r *Result) Sign(key []byte) {
	if len(key) == 0 {
		r.Sig = ""
		return
	}
	r.Sig = ResultSignature(key, r.OutTradeNo, r.Status, r.TotalFee, r.Seq, r.TS)
}

// VerifySignature reports whether r.Sig is valid under key, the check a
// controller runs before unlocking.
func (r Result) VerifySignature(key []byte) bool {
	want := ResultSignature(key, r.OutTradeNo, r.Status, r.TotalFee, r.Seq, r.TS)
	return hmac.Equal([]byte(want), []byte(r.Sig))
}

// RequestSignature computes a signed request's sig (docs/contract.md §3.5):
// HMAC-SHA256(key, out_trade_no "\n" amount "\n" kind "\n" ts) in lowercase
// hex. For create, amount is total_fee and kind the order type, exactly as
// the contract states. The contract first defined only the create message; kioskpay signs
// the other money-moving commands the same way with the topic suffix as
// kind ("pay/cancel", "pay/refund", "unlock/ack"), which no order type can
// equal (types have no "/"), so one command's signature never validates
// another. See SignCancel, SignRefund, SignAck.
func RequestSignature(key []byte, outTradeNo string, amount int64, kind string, ts int64) string {
	return hmacHex(key, outTradeNo, strconv.FormatInt(amount, 10), kind, strconv.FormatInt(ts, 10))
}

// SignCreate signs a create request.
func SignCreate(key []byte, outTradeNo string, totalFee payment.Fen, orderType string, ts int64) string {
	return RequestSignature(key, outTradeNo, int64(totalFee), orderType, ts)
}

// SignCancel signs a cancel request (amount 0, kind "pay/cancel").
func SignCancel(key []byte, outTradeNo string, ts int64) string {
	return RequestSignature(key, outTradeNo, 0, TopicCancel, ts)
}

// SignRefund signs a refund request (amount refund_fee, 0 for a full
// refund; kind "pay/refund").
func SignRefund(key []byte, outTradeNo string, refundFee payment.Fen, ts int64) string {
	return RequestSignature(key, outTradeNo, int64(refundFee), TopicRefund, ts)
}

// SignAck signs an unlock ack (amount 1 for ok, 0 for not ok; kind
// "unlock/ack").
func SignAck(key []byte, outTradeNo string, ok bool, ts int64) string {
	var a int64
	if ok {
		a = 1
	}
	return RequestSignature(key, outTradeNo, a, TopicAck, ts)
}

// VerifyRequest checks a request signature computed as want, and that ts is
// within SignatureWindow of now. It returns a SIGNATURE_INVALID *Error that
// says which check failed.
func VerifyRequest(s Signed, want string, now time.Time) error {
	if s.Sig == "" || s.TS == 0 {
		return &Error{Name: ErrSignatureInvalid, Field: "sig", Msg: "a signed request (ts and sig) is required"}
	}
	if !hmac.Equal([]byte(want), []byte(s.Sig)) {
		return &Error{Name: ErrSignatureInvalid, Field: "sig", Msg: "signature does not match"}
	}
	d := now.Sub(time.Unix(s.TS, 0))
	if d > SignatureWindow || d < -SignatureWindow {
		return &Error{Name: ErrSignatureInvalid, Field: "ts", Msg: "ts is more than 300 s away from the device clock"}
	}
	return nil
}

// Verify checks a create request's signature against key at now.
func (r CreateRequest) Verify(key []byte, now time.Time) error {
	return VerifyRequest(r.Signed, SignCreate(key, r.Order.OutTradeNo, r.Order.TotalFee, r.Order.Type, r.TS), now)
}

// Verify checks a cancel request's signature.
func (r CancelRequest) Verify(key []byte, now time.Time) error {
	return VerifyRequest(r.Signed, SignCancel(key, r.OutTradeNo, r.TS), now)
}

// Verify checks a refund request's signature.
func (r RefundRequest) Verify(key []byte, now time.Time) error {
	return VerifyRequest(r.Signed, SignRefund(key, r.OutTradeNo, r.RefundFee, r.TS), now)
}

// Verify checks an ack's signature.
func (r AckRequest) Verify(key []byte, now time.Time) error {
	return VerifyRequest(r.Signed, SignAck(key, r.OutTradeNo, r.OK, r.TS), now)
}
