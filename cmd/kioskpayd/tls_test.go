package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/logging"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/syncbuf"
)

// The daemon and doctor reach a broker that requires mutual TLS, with the
// CA, certificate and key named in [mqtt].
func TestMutualTLSBroker(t *testing.T) {
	p := mqtttest.NewPKI(t)
	srv := p.ServerTLS.Clone()
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = p.CAPool
	_, url := mqtttest.Mochi(t, nil, srv)

	e := newEnv(t)
	e.edit(t, `url = "`+e.brokerURL+`"`, `url = "`+url+`"`+"\nca_file = \""+p.CAFile+"\"\ncert_file = \""+p.ClientCert+"\"\nkey_file = \""+p.ClientKey+`"`)

	code, out := doctor(t, e)
	if code != 0 {
		t.Fatalf("doctor exit %d", code)
	}
	for _, name := range []string{"keys mqtt client certificate", "broker ssl://"} {
		if l := lineFor(out, name); !strings.HasPrefix(l, "ok") {
			t.Errorf("%s: %q", name, l)
		}
	}

	cfg, err := config.Load(e.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan int, 1)
	var stderr syncbuf.Buffer
	go func() {
		done <- daemon(ctx, cfg, io.Discard, logging.New(&stderr, slog.LevelInfo), &hooks{ready: func(string) { close(ready) }})
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not connect over mutual TLS:\n%s", stderr.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}

	// The client certificate is the credential: without a trusted one the
	// doctor's broker check fails.
	e.edit(t, `cert_file = "`+p.ClientCert+`"`, `cert_file = "`+p.OtherClientCert+`"`)
	e.edit(t, `key_file = "`+p.ClientKey+`"`, `key_file = "`+p.OtherClientKey+`"`)
	if code, out := doctor(t, e); code != exitFatal || !strings.HasPrefix(lineFor(out, "broker ssl://"), "FAIL") {
		t.Fatalf("untrusted client certificate: exit %d\n%s", code, out)
	}
}
