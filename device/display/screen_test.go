package display

import (
	"fmt"
	"image"
	"testing"
	"time"
)

var sizes = []struct{ w, h int }{
	{1080, 1920}, {480, 800}, {800, 480}, {1920, 1080}, {600, 600},
}

func TestPayScreenDecodes(t *testing.T) {
	fs := testFonts(t, true)
	for _, sz := range sizes {
		for _, tc := range []struct {
			name  string
			codes []Code
			want  []string
		}{
			{"wxpay", []Code{wxCode}, []string{wxContent}},
			{"alipay", []Code{aliCode}, []string{aliContent}},
			{"any", []Code{wxCode, aliCode}, []string{wxContent, aliContent}},
		} {
			if sz.w*sz.h > 1e6 && len(tc.codes) == 1 {
				continue // big screens: the dual layout is the one at risk
			}
			name := fmt.Sprintf("%s_%dx%d", tc.name, sz.w, sz.h)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				img := renderScreen(t, fs, "zh", payScreen(tc.codes...), sz.w, sz.h)
				preview(t, "pay_"+name, img)
				wantCodes(t, decodeQR(t, img), tc.want...)
			})
		}
	}
}

func TestStatusScreensPreview(t *testing.T) {
	fs := testFonts(t, true)
	for _, loc := range []string{"zh", "en"} {
		for _, s := range []Screen{
			{Kind: Idle},
			{Kind: Paid, Amount: 1000, OutTradeNo: "KP1"},
			{Kind: Expired, OutTradeNo: "KP1"},
			{Kind: Error, Message: "WeChat Pay is not reachable (timeout)"},
		} {
			for _, sz := range []struct{ w, h int }{{1080, 1920}, {800, 480}} {
				img := renderScreen(t, fs, loc, s, sz.w, sz.h)
				preview(t, fmt.Sprintf("%s_%s_%dx%d", s.Kind, loc, sz.w, sz.h), img)
			}
		}
	}
}

func TestCountdown(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{5 * time.Minute, "5:00"},
		{4*time.Minute + 59*time.Second + time.Millisecond, "5:00"},
		{59 * time.Second, "0:59"},
		{time.Millisecond, "0:01"},
		{0, "0:00"},
		{-time.Second, "0:00"},
		{2*time.Hour + 3*time.Second, "2:00:03"},
	} {
		if got := formatCountdown(remaining(testNow.Add(tc.d), testNow)); got != tc.want {
			t.Errorf("countdown %v = %q, want %q", tc.d, got, tc.want)
		}
	}
}

var _ = image.Rect
