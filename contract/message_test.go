package contract

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

const validCreate = `{"request_id":"r-42","provider":"wxpay","needQRcode":true,
 "data":{"out_trade_no":"chair001_0001","total_fee":1000,"subject":"按摩 15 分钟",
  "type":"massage_15","custom":{"seat":3},"other":{},"pid":"default","expire_seconds":300}}`

func TestDecodeCreateValid(t *testing.T) {
	r, err := DecodeCreate([]byte(validCreate), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestID != "r-42" || r.Provider != "wxpay" || r.Order.OutTradeNo != "chair001_0001" ||
		r.Order.TotalFee != 1000 || r.Order.Type != "massage_15" || string(r.Order.Custom) != `{"seat":3}` ||
		r.Order.Expire != 300*time.Second || r.Order.PID != "default" {
		t.Fatalf("decoded %+v", r)
	}
}

func TestDecodeErrors(t *testing.T) {
	big := `{"request_id":"x","data":{"subject":"` + strings.Repeat("a", MaxPayload) + `"}}`
	tests := []struct {
		name    string
		decode  func([]byte) (string, error)
		payload string
		want    ErrorName
		field   string
		id      string
	}{
		{"too large", create, big, ErrPayloadTooLarge, "", "x"},
		{"too large, cut as Accept stores it", create, big[:MaxPayload+1], ErrPayloadTooLarge, "", "x"},
		{"too large without id", create, `{"data":{"subject":"` + strings.Repeat("a", MaxPayload) + `"}}`, ErrPayloadTooLarge, "", ""},
		{"bad utf8", create, "{\"request_id\":\"a\xff\"}", ErrBadJSON, "", ""},
		{"bad utf8 elsewhere", create, "{\"request_id\":\"r9\",\"data\":\"\xff\"}", ErrBadJSON, "", "r9"},
		{"not json", create, `{"request_id":`, ErrBadJSON, "", ""},
		{"array", create, `[1,2]`, ErrBadJSON, "", ""},
		{"null", create, `null`, ErrBadJSON, "", ""},
		{"request_id type", create, `{"request_id":5}`, ErrInvalidArgument, "request_id", ""},
		{"no data", create, `{"request_id":"r1"}`, ErrInvalidArgument, "data", "r1"},
		{"provider", create, `{"request_id":"r1","provider":"paypal","data":{}}`, ErrUnsupportedProvider, "provider", "r1"},
		{"provider type", create, `{"request_id":"r1","provider":1,"data":{}}`, ErrInvalidArgument, "provider", "r1"},
		{"fee string", create, `{"request_id":"r1","data":{"out_trade_no":"abcdef","total_fee":"10","subject":"s","type":"t"}}`, ErrInvalidArgument, "data.total_fee", "r1"},
		{"fee float", create, `{"data":{"out_trade_no":"abcdef","total_fee":10.5,"subject":"s","type":"t"}}`, ErrInvalidArgument, "data.total_fee", ""},
		{"fee negative", create, `{"data":{"out_trade_no":"abcdef","total_fee":-1,"subject":"s","type":"t"}}`, ErrFeeOutOfRange, "data.total_fee", ""},
		{"fee too big", create, `{"data":{"out_trade_no":"abcdef","total_fee":100001,"subject":"s","type":"t"}}`, ErrFeeOutOfRange, "data.total_fee", ""},
		{"out_trade_no short", create, `{"data":{"out_trade_no":"abc","total_fee":1,"subject":"s","type":"t"}}`, ErrInvalidArgument, "data.out_trade_no", ""},
		{"needQRcode type", create, `{"needQRcode":[1],"data":{}}`, ErrInvalidArgument, "needQRcode", ""},
		{"sig not hex", create, `{"data":{"out_trade_no":"abcdef","total_fee":1,"subject":"s","type":"t"},"ts":1,"sig":"zz"}`, ErrInvalidArgument, "sig", ""},
		{"ts string", create, `{"data":{"out_trade_no":"abcdef","total_fee":1,"subject":"s","type":"t"},"ts":"1"}`, ErrInvalidArgument, "ts", ""},
		{"cancel missing", cancel, `{"request_id":"c"}`, ErrInvalidArgument, "out_trade_no", "c"},
		{"cancel type", cancel, `{"out_trade_no":12345678}`, ErrInvalidArgument, "out_trade_no", ""},
		{"query bad no", query, `{"out_trade_no":"a-b-c-d-e"}`, ErrInvalidArgument, "out_trade_no", ""},
		{"refund fee zero", refund, `{"out_trade_no":"abcdef","refund_fee":0}`, ErrFeeOutOfRange, "refund_fee", ""},
		{"refund fee string", refund, `{"out_trade_no":"abcdef","refund_fee":"5"}`, ErrInvalidArgument, "refund_fee", ""},
		{"refund no", refund, `{"out_trade_no":"abcdef","out_refund_no":"a b"}`, ErrInvalidArgument, "out_refund_no", ""},
		{"ack no ok", ack, `{"out_trade_no":"abcdef"}`, ErrInvalidArgument, "ok", ""},
		{"ack ok string", ack, `{"out_trade_no":"abcdef","ok":"true"}`, ErrInvalidArgument, "ok", ""},
		{"notify provider", notify, `{"provider":"x","body":"a"}`, ErrUnsupportedProvider, "provider", ""},
		{"notify headers", notify, `{"provider":"wxpay","headers":{"A":1},"body":"a"}`, ErrInvalidArgument, "headers.A", ""},
		{"notify body", notify, `{"provider":"wxpay","body":{}}`, ErrInvalidArgument, "body", ""},
		{"orders state", orders, `{"state":"nope"}`, ErrInvalidArgument, "state", ""},
		{"orders limit", orders, `{"limit":201}`, ErrInvalidArgument, "limit", ""},
		{"reconcile since", reconcile, `{"request_id":"q","since":"yesterday"}`, ErrInvalidArgument, "since", "q"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.decode([]byte(tc.payload))
			e := AsError(err)
			if err == nil || e.Name != tc.want || e.Field != tc.field {
				t.Fatalf("got %v (%q, field %q), want %s field %q", err, e.Name, e.Field, tc.want, tc.field)
			}
			if id != tc.id {
				t.Fatalf("request id %q, want %q", id, tc.id)
			}
			rep := ErrorReply(id, "x", err)
			if rep.Code == 0 || rep.Error != tc.want {
				t.Fatalf("reply %+v", rep)
			}
		})
	}
}

func create(b []byte) (string, error) { r, err := DecodeCreate(b, testLimits); return r.RequestID, err }
func cancel(b []byte) (string, error) { r, err := DecodeCancel(b); return r.RequestID, err }
func query(b []byte) (string, error)  { r, err := DecodeQuery(b); return r.RequestID, err }
func refund(b []byte) (string, error) { r, err := DecodeRefund(b); return r.RequestID, err }
func ack(b []byte) (string, error)    { r, err := DecodeAck(b); return r.RequestID, err }
func notify(b []byte) (string, error) { r, err := DecodeNotify(b); return r.RequestID, err }
func orders(b []byte) (string, error) { r, err := DecodeOrders(b); return r.RequestID, err }
func reconcile(b []byte) (string, error) {
	r, err := DecodeReconcile(b, time.Now())
	return r.RequestID, err
}

func TestErrorCodes(t *testing.T) {
	want := map[ErrorName]int{
		ErrBadJSON: 400, ErrPayloadTooLarge: 400, ErrInvalidArgument: 400, ErrUnsupportedProvider: 400,
		ErrUnknownMerchant: 400, ErrFeeOutOfRange: 400, ErrPriceMismatch: 400, ErrDuplicateConflict: 409,
		ErrOrderFinished: 409, ErrOrderNotFound: 400, ErrSignatureInvalid: 400, ErrClockNotSynced: 503,
		ErrProviderUnavailable: 503, ErrProviderRejected: 409, ErrInternal: 500,
	}
	for n, c := range want {
		if n.Code() != c {
			t.Errorf("%s code %d, want %d", n, n.Code(), c)
		}
	}
}

func TestDecodeOthersValid(t *testing.T) {
	n, err := DecodeNotify([]byte(`{"provider":"wxpay","headers":{"Wechatpay-Serial":"S","X":["a","b"]},"body":"{\"id\":1}"}`))
	if err != nil || n.Header.Get("wechatpay-serial") != "S" || len(n.Header.Values("X")) != 2 || string(n.Body) != `{"id":1}` {
		t.Fatalf("notify %+v %v", n, err)
	}
	r, err := DecodeRefund([]byte(`{"request_id":"z","out_trade_no":"abcdef","refund_fee":50,"out_refund_no":"abcdefR9"}`))
	if err != nil || r.RefundFee != 50 || r.OutRefundNo != "abcdefR9" {
		t.Fatalf("refund %+v %v", r, err)
	}
	o, err := DecodeOrders([]byte(`{}`))
	if err != nil || o.Limit != DefaultOrdersLimit {
		t.Fatalf("orders %+v %v", o, err)
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	rc, err := DecodeReconcile([]byte(`{}`), now)
	if err != nil || !rc.Since.Equal(now.Add(-24*time.Hour)) {
		t.Fatalf("reconcile %+v %v", rc, err)
	}
}

// TestOutTradeNoOf: the order a command is about is the out_trade_no its
// decoder would read, at the top or in a create's data; anything else
// names no order.
func TestOutTradeNoOf(t *testing.T) {
	for _, tc := range []struct{ topic, payload, want string }{
		{TopicCreate, validCreate, "chair001_0001"},
		{TopicAck, `{"request_id":"a","out_trade_no":"abcdef","ok":true}`, "abcdef"},
		{TopicQuery, `{"out_trade_no":"abcdef","data":{"out_trade_no":"ghijkl"}}`, "abcdef"},
		// A create acts on data.out_trade_no, whatever else the payload says.
		{TopicCreate, `{"out_trade_no":"abcdef","data":{"out_trade_no":"ghijkl"}}`, "ghijkl"},
		{TopicCreate, `{"out_trade_no":"abcdef"}`, ""},
		{TopicQuery, `{"request_id":7,"out_trade_no":"abcdef"}`, "abcdef"}, // a bad request_id does not hide it
		{TopicCancel, `{"out_trade_no":"ab"}`, ""},
		{TopicRefund, `{"out_trade_no":"abc-def"}`, ""},
		{TopicQuery, `{"out_trade_no":123456}`, ""},
		{TopicCreate, `{"data":{"out_trade_no":null}}`, ""},
		{TopicCreate, `{"data":"abcdef"}`, ""},
		{TopicQuery, `{"OUT_TRADE_NO":"abcdef"}`, ""}, // the decoders match keys exactly
		{TopicNotify, `{"provider":"wxpay","out_trade_no":"abcdef","body":"{}"}`, ""},
		{TopicOrders, `{"out_trade_no":"abcdef"}`, ""},
		{TopicQuery, `[1,2]`, ""},
		{TopicQuery, `not json`, ""},
		{TopicQuery, `{"out_trade_no":"abcdef","x":"` + strings.Repeat("a", MaxPayload) + `"}`, ""},
	} {
		if got := OutTradeNoOf(tc.topic, []byte(tc.payload)); got != tc.want {
			t.Errorf("OutTradeNoOf(%s, %.60s) = %q, want %q", tc.topic, tc.payload, got, tc.want)
		}
	}
}

func TestResultSignature(t *testing.T) {
	key := []byte("k")
	r := Result{OutTradeNo: "chair001_0001", Status: ResultPaid, TotalFee: 1000, Seq: 7, TS: 1700000000}
	r.Sign(key)
	// Independently computed: printf 'chair001_0001\npaid\n1000\n7\n1700000000' | openssl dgst -sha256 -hmac k
	if r.Sig != "021010ded209c91da3a34096c15fa165430b8d65354c4f950b15dcf87c0c9b00" || !r.VerifySignature(key) {
		t.Fatalf("sig %q", r.Sig)
	}
	r2 := r
	r2.TotalFee = 1
	if r2.VerifySignature(key) {
		t.Fatal("changed amount still verifies")
	}
	b, _ := json.Marshal(r)
	if !strings.Contains(string(b), `"sig":"`+r.Sig+`"`) {
		t.Fatalf("json %s", b)
	}
}

func TestRequestSignature(t *testing.T) {
	key := []byte("secret")
	now := time.Unix(1700000000, 0)
	req, err := DecodeCreate([]byte(validCreate), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Verify(key, now); AsError(err).Name != ErrSignatureInvalid {
		t.Fatalf("unsigned: %v", err)
	}
	req.TS = now.Unix() - 299
	req.Sig = SignCreate(key, "chair001_0001", 1000, "massage_15", req.TS)
	if err := req.Verify(key, now); err != nil {
		t.Fatalf("valid: %v", err)
	}
	if err := req.Verify([]byte("other"), now); err == nil {
		t.Fatal("wrong key accepted")
	}
	if err := req.Verify(key, now.Add(2*time.Second)); AsError(err).Field != "ts" {
		t.Fatalf("stale: %v", err)
	}
	// A create signature must not authorise a refund of the same amount.
	rf := RefundRequest{OutTradeNo: "chair001_0001", RefundFee: 1000, Signed: req.Signed}
	if rf.Verify(key, now) == nil {
		t.Fatal("create signature accepted for refund")
	}
	ak := AckRequest{OutTradeNo: "x12345", OK: true, Signed: Signed{TS: now.Unix()}}
	ak.Sig = SignAck(key, ak.OutTradeNo, true, ak.TS)
	if ak.Verify(key, now) != nil {
		t.Fatal("ack")
	}
	ak.OK = false
	if ak.Verify(key, now) == nil {
		t.Fatal("ack ok flipped still verifies")
	}
}

// fuzzSeeds are shared by every decoder fuzz target.
var fuzzSeeds = []string{
	validCreate,
	`{}`, `[]`, `null`, `"x"`, `{"request_id":"r"}`,
	`{"out_trade_no":"abcdef","ok":true,"reason":"done"}`,
	`{"out_trade_no":"abcdef","refund_fee":1,"refund_desc":"d","out_refund_no":"abcdefR1","ts":1,"sig":"` + strings.Repeat("a", 64) + `"}`,
	`{"provider":"alipay","headers":{"Content-Type":"application/x-www-form-urlencoded"},"body":"a=b&sign=c"}`,
	`{"provider":"wxpay","headers":{"Wechatpay-Signature":["x"]},"body":"{}"}`,
	`{"state":"paid","limit":10,"after":"abcdef"}`,
	`{"since":"2025-01-01T00:00:00Z"}`,
	`{"data":{"out_trade_no":"abcdef","total_fee":1e3,"subject":"s","type":"t"}}`,
	"{\"request_id\":\"\xff\"}",
}

func fuzzDecoder(f *testing.F, decode func([]byte) (string, error)) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := decode(b)
		if err != nil {
			e := AsError(err)
			if e.Name == "" || e.Name.Code() == 0 || e.Msg == "" {
				t.Fatalf("error without name/message: %#v", err)
			}
			if e.Name == ErrInternal {
				t.Fatalf("decoder returned INTERNAL for %q: %v", b, err)
			}
			rep, mErr := json.Marshal(ErrorReply(id, "x", err))
			if mErr != nil || !json.Valid(rep) {
				t.Fatalf("reply not JSON: %v", mErr)
			}
		}
		if len(id) > 4*MaxRequestID {
			t.Fatalf("request id too long: %d", len(id))
		}
	})
}

func FuzzDecodeCreate(f *testing.F)    { fuzzDecoder(f, create) }
func FuzzDecodeCancel(f *testing.F)    { fuzzDecoder(f, cancel) }
func FuzzDecodeQuery(f *testing.F)     { fuzzDecoder(f, query) }
func FuzzDecodeRefund(f *testing.F)    { fuzzDecoder(f, refund) }
func FuzzDecodeAck(f *testing.F)       { fuzzDecoder(f, ack) }
func FuzzDecodeNotify(f *testing.F)    { fuzzDecoder(f, notify) }
func FuzzDecodeOrders(f *testing.F)    { fuzzDecoder(f, orders) }
func FuzzDecodeReconcile(f *testing.F) { fuzzDecoder(f, reconcile) }

// FuzzOutTradeNoOf: the inbox key of any payload is "" or a valid order
// number, and it is the order the decoders act on whenever they accept
// the command (the daemon serialises by it before they run).
func FuzzOutTradeNoOf(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"out_trade_no":"abcdef","data":{"out_trade_no":"ghijkl","total_fee":1,"subject":"s","type":"t"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		decoders := map[string]func() (string, error){
			TopicCreate: func() (string, error) { r, err := DecodeCreate(b, testLimits); return r.Order.OutTradeNo, err },
			TopicCancel: func() (string, error) { r, err := DecodeCancel(b); return r.OutTradeNo, err },
			TopicQuery:  func() (string, error) { r, err := DecodeQuery(b); return r.OutTradeNo, err },
			TopicRefund: func() (string, error) { r, err := DecodeRefund(b); return r.OutTradeNo, err },
			TopicAck:    func() (string, error) { r, err := DecodeAck(b); return r.OutTradeNo, err },
		}
		for topic, decode := range decoders {
			key := OutTradeNoOf(topic, b)
			if key != "" && !payment.ValidOutTradeNo(key) {
				t.Fatalf("OutTradeNoOf(%s, %q) = %q, not a valid order number", topic, b, key)
			}
			if acted, err := decode(); err == nil && acted != key {
				t.Fatalf("%s: the decoder acts on %q, the inbox key is %q: %q", topic, acted, key, b)
			}
		}
	})
}
