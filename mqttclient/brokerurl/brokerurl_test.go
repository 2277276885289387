package brokerurl

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckBrokers(t *testing.T) {
	for _, c := range []struct {
		urls    []string
		tls     bool
		index   int    // of the bad entry, when wantErr
		wantErr string // substring of the error; "" = valid
	}{
		{urls: []string{"tcp://127.0.0.1:1883"}},
		{urls: []string{"ssl://a:8883", "wss://b:443/mqtt"}, tls: true},
		{urls: []string{"tcp://a:1883", "tcp://b:1883", "ws://c:80/mqtt"}},
		{urls: nil, index: -1, wantErr: "no broker URL"},
		{urls: []string{"mqtt://a:1883"}, wantErr: "scheme must be tcp, ssl, ws or wss"},
		{urls: []string{"tcp://a:1", "a:1883"}, index: 1, wantErr: "scheme"},
		{urls: []string{"tcp://"}, wantErr: "has no host"},
		{urls: []string{"tcp://u:pw@a:1883"}, wantErr: "must not carry credentials"},
		{urls: []string{"tcp://a:1", "tcp://b:1", "tcp://a:1"}, index: 2, wantErr: "listed twice (also entry 0)"},
		{urls: []string{"ssl://a:8883", "tcp://b:1883"}, index: 1, wantErr: "mixes TLS and plain"},
		{urls: []string{"tcp://%zz"}, wantErr: "not a URL"},
		{urls: strings.Split(strings.Repeat("tcp://a:1,", Max+1), ",")[:Max+1], index: Max, wantErr: "at most 16"},
	} {
		isTLS, err := CheckList(c.urls)
		if c.wantErr == "" {
			if err != nil || isTLS != c.tls {
				t.Errorf("CheckList(%q) = %v, %v; want %v, nil", c.urls, isTLS, err, c.tls)
			}
			continue
		}
		var be *Error
		if !errors.As(err, &be) || !strings.Contains(err.Error(), c.wantErr) || be.Index != c.index {
			t.Errorf("CheckList(%q) = %v; want a Error at %d containing %q", c.urls, err, c.index, c.wantErr)
		}
	}
}

func TestSplitBrokers(t *testing.T) {
	got, err := Split(" tcp://a:1883, tcp://b:1883 ,,tcp://c:1883")
	if err != nil || strings.Join(got, " ") != "tcp://a:1883 tcp://b:1883 tcp://c:1883" {
		t.Fatalf("Split = %q, %v", got, err)
	}
	if _, err := Split(" , "); err == nil {
		t.Fatal("an empty list was accepted")
	}
	// The password of a URL never reaches an error message.
	if _, err := Split("tcp://u:hunter2@a:1"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error = %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	if got := Redact("ssl://u:secret@b:8883"); got != "ssl://b:8883" {
		t.Fatalf("Redact = %q", got)
	}
}
