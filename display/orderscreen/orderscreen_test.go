package orderscreen

import (
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/display"
	"github.com/kioskpay/kioskpay/payment"
)

func TestScreenFor(t *testing.T) {
	exp := time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)
	codes := []device.CodeView{{Provider: payment.WxPay, CodeURL: "weixin://x"}, {Provider: payment.Alipay, CodeURL: "https://qr.alipay.com/y"}}
	tests := []struct {
		state   string
		codes   []device.CodeView
		kind    display.Kind
		show    bool
		outcome bool
	}{
		{"creating", nil, 0, false, false},
		{"pending", nil, 0, false, false},
		{"pending", codes, display.Pay, true, false},
		{"closing", nil, 0, false, false},
		{"paid", nil, display.Paid, true, true},
		{"delivered", nil, display.Paid, true, true},
		{"held", nil, display.Paid, true, true},
		{"expired", nil, display.Expired, true, true},
		{"cancelled", nil, display.Idle, true, false},
		{"failed", nil, display.Error, true, true},
		{"refunding", nil, display.Error, true, true},
		{"refunded", nil, display.Error, true, true},
		{"refund_failed", nil, display.Error, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			v := device.View{OutTradeNo: "o_000001", State: tt.state, Total: 1000, Subject: "Wash", Codes: tt.codes, ExpiresAt: exp, Reason: "why"}
			scr, show, outcome := screenFor(v)
			if show != tt.show || outcome != tt.outcome {
				t.Fatalf("show %v outcome %v, want %v %v", show, outcome, tt.show, tt.outcome)
			}
			if !show {
				return
			}
			if scr.Kind != tt.kind || scr.Amount != 1000 || scr.OutTradeNo != "o_000001" {
				t.Fatalf("screen %+v", scr)
			}
			if tt.kind == display.Pay {
				if len(scr.Codes) != 2 || scr.Codes[0].Content != "weixin://x" || scr.Codes[1].Provider != payment.Alipay || !scr.ExpiresAt.Equal(exp) {
					t.Fatalf("codes %+v", scr.Codes)
				}
			}
			if tt.kind == display.Error && scr.Message != "why" {
				t.Fatalf("message %q", scr.Message)
			}
		})
	}
}
