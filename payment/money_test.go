package payment

import "testing"

func TestFenYuan(t *testing.T) {
	for _, tt := range []struct {
		f    Fen
		want string
	}{{0, "0.00"}, {1, "0.01"}, {10, "0.10"}, {1250, "12.50"}, {100000, "1000.00"}, {-5, "-0.05"}} {
		if got := tt.f.Yuan(); got != tt.want {
			t.Errorf("Fen(%d).Yuan() = %q, want %q", tt.f, got, tt.want)
		}
	}
	if got := Fen(1000).String(); got != "¥10.00" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseYuan(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Fen
		ok   bool
	}{
		{"12.50", 1250, true}, {"12.5", 1250, true}, {"12", 1200, true}, {"0.01", 1, true}, {"100000000.00", 10000000000, true},
		{"", 0, false}, {"12.", 0, false}, {".5", 0, false}, {"12.345", 0, false}, {"-1.00", 0, false},
		{"+1.00", 0, false}, {"1e3", 0, false}, {"1,00", 0, false}, {" 1.00", 0, false}, {"9999999999999.00", 0, false},
	} {
		got, err := ParseYuan(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseYuan(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseYuan(f *testing.F) {
	for _, s := range []string{"12.50", "0.01", "1", "", "1.234", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseYuan(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseYuan(%q) = %d: negative", s, v)
		}
		// Round trip: formatting and parsing again gives the same amount.
		if back, err := ParseYuan(v.Yuan()); err != nil || back != v {
			t.Fatalf("round trip %q → %d → %q → %d, %v", s, v, v.Yuan(), back, err)
		}
	})
}
