package display

import (
	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/payment"
)

// texts are the words on screen in one language.
type texts struct {
	Lang         string
	IdleTitle    string
	IdleHint     string
	Accepted     string
	PayTitle     string
	TimeLeft     string
	Order        string
	PaidTitle    string
	PaidHint     string
	ExpiredTitle string
	ExpiredHint  string
	ErrorTitle   string
	ErrorHint    string
	WxPay        string
	Alipay       string
}

var textsZH = texts{
	Lang:         "zh",
	IdleTitle:    "欢迎使用",
	IdleHint:     "请在设备上选择服务，然后扫码支付",
	Accepted:     "支持",
	PayTitle:     "请扫码支付",
	TimeLeft:     "剩余时间",
	Order:        "订单号",
	PaidTitle:    "支付成功",
	PaidHint:     "感谢使用，服务即将开始",
	ExpiredTitle: "二维码已过期",
	ExpiredHint:  "请重新下单",
	ErrorTitle:   "暂时无法支付",
	ErrorHint:    "请稍后重试",
	WxPay:        "微信支付",
	Alipay:       "支付宝",
}

var textsEN = texts{
	Lang:         "en",
	IdleTitle:    "Welcome",
	IdleHint:     "Choose a service on the device, then scan to pay",
	Accepted:     "We accept",
	PayTitle:     "Scan to pay",
	TimeLeft:     "Time left",
	Order:        "Order",
	PaidTitle:    "Payment received",
	PaidHint:     "Thank you, your service is starting",
	ExpiredTitle: "This QR code has expired",
	ExpiredHint:  "Please place a new order",
	ErrorTitle:   "Payment unavailable",
	ErrorHint:    "Please try again later",
	WxPay:        "WeChat Pay",
	Alipay:       "Alipay",
}

func (t *texts) all() string {
	return t.IdleTitle + t.IdleHint + t.Accepted + t.PayTitle + t.TimeLeft + t.Order +
		t.PaidTitle + t.PaidHint + t.ExpiredTitle + t.ExpiredHint + t.ErrorTitle + t.ErrorHint +
		t.WxPay + t.Alipay
}

// provider returns the on-screen name of a provider.
func (t *texts) provider(p payment.ProviderName) string {
	switch p {
	case payment.WxPay:
		return t.WxPay
	case payment.Alipay:
		return t.Alipay
	}
	return string(p)
}

// textsOf returns the texts of locale ("zh" or "en").
func textsOf(locale config.Locale) *texts {
	if locale == "zh" {
		return &textsZH
	}
	return &textsEN
}

// textsFor picks the language of an output that draws its own text (fb,
// png, tty). Chinese needs a font with CJK glyphs; without one the screen
// speaks English rather than drawing boxes.
func textsFor(locale config.Locale, ts *typesetter) *texts {
	if locale == "zh" && ts.covers(textsZH.all()) {
		return &textsZH
	}
	return &textsEN
}
