package display

import (
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/qrtest"
	"github.com/kioskpay/kioskpay/payment"
)

// Realistic provider contents: a WeChat code_url and an Alipay qr_code.
const (
	wxContent  = "weixin://wxpay/bizpayurl?pr=JyC91EIz1"
	aliContent = "https://qr.alipay.com/bax03431ljhokirwl38f00a7"
)

// cjkFonts are Debian's CJK fonts (fonts-wqy-microhei, fonts-noto-cjk).
var cjkFonts = []string{
	"/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
	"/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
}

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func payScreen(codes ...Code) Screen {
	return Screen{
		Kind:       Pay,
		Codes:      codes,
		Amount:     1000,
		Subject:    "按摩椅 15分钟 Massage chair",
		ExpiresAt:  testNow.Add(4*time.Minute + 59*time.Second),
		OutTradeNo: "KP20250301120000001",
	}
}

var (
	wxCode  = Code{Provider: payment.WxPay, Content: wxContent}
	aliCode = Code{Provider: payment.Alipay, Content: aliContent}
)

// zbar returns the path of zbarimg or skips the test.
func zbar(t testing.TB) string { return qrtest.Zbar(t) }

// decodeQR returns every QR content zbarimg finds in img, sorted.
func decodeQR(t testing.TB, img image.Image) []string { return qrtest.Decode(t, img) }

func wantCodes(t testing.TB, got []string, want ...string) { qrtest.Want(t, got, want...) }

// preview writes img to $KIOSKPAY_DISPLAY_PREVIEW/name.png when that is
// set, so that a person can look at the screens.
func preview(t testing.TB, name string, img image.Image) {
	dir := os.Getenv("KIOSKPAY_DISPLAY_PREVIEW")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name+".png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

func testFonts(t testing.TB, withCJK bool) *fontSet {
	t.Helper()
	path := ""
	if withCJK {
		if path = cjkFontIfPresent(); path == "" {
			t.Skipf("no CJK font (%s): apt-get install -y fonts-wqy-microhei", strings.Join(cjkFonts, ", "))
		}
	}
	fs, err := loadFonts(path)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func renderScreen(t testing.TB, fs *fontSet, locale config.Locale, s Screen, w, h int) *image.RGBA {
	t.Helper()
	c := newComposer(fs, locale)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	f := &frame{Screen: s, seq: 1, start: testNow}
	if _, err := c.render(img, f, testNow); err != nil {
		t.Fatal(err)
	}
	return img
}

func cjkFontIfPresent() string {
	for _, p := range cjkFonts {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}
