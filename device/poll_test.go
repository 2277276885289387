package device

import (
	"testing"
	"time"
)

func TestPollInterval(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name string
		base time.Duration
		pace pollPace
		want time.Duration
	}{
		{"cold order polls at the base", 2 * s, pollPace{}, 2 * s},
		{"hot WeChat order twice as often", 2 * s, pollPace{hot: true}, s},
		{"scanned Alipay order twice as often", 2 * s, pollPace{scanned: true}, s},
		{"never below 500 ms", 600 * time.Millisecond, pollPace{hot: true}, 500 * time.Millisecond},
		{"a base below 500 ms is kept", 200 * time.Millisecond, pollPace{scanned: true}, 200 * time.Millisecond},
		{"with the relay, polling is the fallback", 2 * s, pollPace{relayed: true, hot: true}, 6 * s},
		{"a scanned buyer is polled fast even with the relay", 2 * s, pollPace{relayed: true, scanned: true}, s},
	} {
		if got := pollInterval(tc.base, tc.pace); got != tc.want {
			t.Errorf("%s: pollInterval(%v, %+v) = %v, want %v", tc.name, tc.base, tc.pace, got, tc.want)
		}
	}
}

// TestPollFasterWhileHot drives a WeChat order on the injected clock: about
// one query a second in its first two minutes, one every two seconds after.
func TestPollFasterWhileHot(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PollInterval = 2 * time.Second })
	h.createOK("r1", "order_hot1", 100, "wxpay")
	queries := func(span time.Duration) int {
		before := h.wx().count("query")
		for step := time.Duration(0); step < span; step += 250 * time.Millisecond {
			h.advance(250 * time.Millisecond)
			time.Sleep(20 * time.Millisecond) // let the engine run the due poll
		}
		time.Sleep(100 * time.Millisecond)
		return h.wx().count("query") - before
	}
	queries(3 * time.Second) // past the first poll
	hot := queries(10 * time.Second)
	h.advance(hotWindow)
	queries(3 * time.Second) // into the cold schedule
	cold := queries(10 * time.Second)
	if hot < 8 || hot > 14 || cold < 4 || cold > 7 {
		t.Fatalf("queries in 10 s: %d while hot (want about 10), %d after (want about 5)", hot, cold)
	}
}

func TestParseRetry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Retry
		ok   bool
	}{
		{"", DefaultRetry, true},
		{"3/2s", Retry{StuckAfter: 3, Slow: 2 * time.Second}, true},
		{"3", Retry{}, false},
		{"0/2s", Retry{}, false},
		{"3/0s", Retry{}, false},
		{"x/2s", Retry{}, false},
		{"3/soon", Retry{}, false},
	} {
		got, err := ParseRetry(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRetry(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
