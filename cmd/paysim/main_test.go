package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

// start runs paysim in-process until the test ends and returns its base URL
// and what it printed.
func start(t *testing.T, dir string, flags ...string) (string, *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncbuf.Buffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-listen", "127.0.0.1:0", "-keys", dir}, flags...), out, io.Discard, func(u string) { ready <- u })
	}()
	var base string
	select {
	case base = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("paysim exited: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("paysim did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("paysim run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("paysim did not stop")
		}
	})
	return base, out
}

type daemonConfig struct {
	DeviceID  string `toml:"device_id"`
	StateDir  string `toml:"state_dir"`
	Merchants map[string]struct {
		WxPay struct {
			AppID          string `toml:"appid"`
			MchID          string `toml:"mchid"`
			CertSerial     string `toml:"cert_serial"`
			PrivateKeyFile string `toml:"private_key_file"`
			APIv3KeyFile   string `toml:"apiv3_key_file"`
			PublicKeyID    string `toml:"public_key_id"`
			PublicKeyFile  string `toml:"public_key_file"`
			APIBase        string `toml:"api_base"`
		} `toml:"wxpay"`
		Alipay struct {
			Gateway string `toml:"gateway"`
		} `toml:"alipay"`
	} `toml:"merchants"`
	Clock struct {
		SyncCheck string `toml:"sync_check"`
	} `toml:"clock"`
}

func readConfig(t *testing.T, dir string) daemonConfig {
	t.Helper()
	var c daemonConfig
	if _, err := toml.DecodeFile(filepath.Join(dir, "kioskpayd.toml"), &c); err != nil {
		t.Fatalf("kioskpayd.toml: %v", err)
	}
	return c
}

// wxClient builds the adapter from the files paysim wrote, as the daemon would.
func wxClient(t *testing.T, c daemonConfig) *wxpay.Client {
	t.Helper()
	w := c.Merchants["default"].WxPay
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cl, err := wxpay.New(wxpay.Config{
		AppID: w.AppID, MchID: w.MchID, CertSerial: w.CertSerial,
		PrivateKeyPEM: read(w.PrivateKeyFile), APIv3Key: read(w.APIv3KeyFile),
		PublicKeyID: w.PublicKeyID, PublicKeyPEM: read(w.PublicKeyFile),
		APIBase: w.APIBase, Timeout: 5 * time.Second, NotifyURL: "https://relay.example.com/notify/sim-1/wxpay",
	})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestPaysimWritesConfigAndServesBothAPIs(t *testing.T) {
	dir := t.TempDir()
	base, out := start(t, dir)

	c := readConfig(t, dir)
	w := c.Merchants["default"].WxPay
	if c.DeviceID != "sim-1" || c.Clock.SyncCheck != "none" || w.APIBase != base || c.Merchants["default"].Alipay.Gateway != base+"/gateway.do" {
		t.Fatalf("config: %+v (base %s)", c, base)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	for _, want := range []string{base + "/gateway.do", base + "/v3/", "/_sim/pay", "kioskpayd -config " + filepath.Join(dir, "kioskpayd.toml"), "generated"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	// WeChat Pay: a full create through the real SDK with the written keys.
	ctx := context.Background()
	cl := wxClient(t, c)
	if _, err := cl.Create(ctx, payment.Order{OutTradeNo: "CMD_TEST_1", Total: 100, Subject: "test", ExpireAt: time.Now().Add(5 * time.Minute)}); err != nil {
		t.Fatalf("wxpay create: %v", err)
	}
	if st, err := cl.Query(ctx, "CMD_TEST_1"); err != nil || st.State != payment.StateWaiting {
		t.Fatalf("wxpay query: %+v, %v", st, err)
	}

	// Alipay: the gateway answers (its own tests cover the protocol).
	resp, err := http.PostForm(base+"/gateway.do", url.Values{"method": {"alipay.trade.query"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		t.Fatalf("alipay gateway: HTTP %d", resp.StatusCode)
	}

	// Hooks are served.
	resp, err = http.Get(base + "/_sim/stats")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"wxpay.native":1`) {
		t.Fatalf("stats: %s", b)
	}
}

// TestPaysimRestartKeepsKeys: a daemon configured from the first run still
// works against a second run on another port.
func TestPaysimRestartKeepsKeys(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-keys", dir}, io.Discard, io.Discard, func(u string) { ready <- u })
	}()
	<-ready
	first := readConfig(t, dir)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("first run: %v", err)
	}

	base, out := start(t, dir)
	second := readConfig(t, dir)
	if !strings.Contains(out.String(), "loaded") {
		t.Errorf("second run did not load the keys:\n%s", out.String())
	}
	fw, sw := first.Merchants["default"].WxPay, second.Merchants["default"].WxPay
	if fw.CertSerial != sw.CertSerial || sw.APIBase != base {
		t.Fatalf("serial %s → %s, api_base %s (want %s)", fw.CertSerial, sw.CertSerial, sw.APIBase, base)
	}
	cl := wxClient(t, second)
	if st, err := cl.Query(context.Background(), "NOT_THERE_1"); err != nil || st.State != payment.StateNotCreated {
		t.Fatalf("query after restart: %+v, %v", st, err)
	}
}

func TestPaysimUsage(t *testing.T) {
	err := run(context.Background(), []string{"-listen", "127.0.0.1:0"}, io.Discard, io.Discard, nil)
	if !errors.Is(err, errUsage) {
		t.Fatalf("without -keys: err = %v, want usage", err)
	}
	err = run(context.Background(), []string{"-bogus"}, io.Discard, io.Discard, nil)
	if !errors.Is(err, errUsage) {
		t.Fatalf("unknown flag: err = %v, want usage", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, keysFileName), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"-listen", "127.0.0.1:0", "-keys", dir}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), keysFileName) {
		t.Fatalf("corrupt keys file: err = %v", err)
	}
}

// The realism flags reach the simulator, which says on startup how it
// behaves; nonsense values are usage errors.
func TestPaysimRealismFlags(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{nil, `realism: WeChat refunds complete after 1s-10s; Alipay trades finish 8760h0m0s after payment; Alipay query amounts "0.00"; WeChat refund total strict`},
		{[]string{"-refund-delay", "never", "-refund-window", "0", "-alipay-zero-amounts=false", "-strict-refund-total=false"},
			`realism: WeChat refunds stay PROCESSING until /_sim/refund-complete; Alipay trades never finish; Alipay query amounts filled; WeChat refund total lenient`},
		{[]string{"-refund-delay", "2s"}, "WeChat refunds complete after 2s-2s;"},
		{[]string{"-refund-delay", "0s-500ms"}, "WeChat refunds complete after 0s-500ms;"},
	} {
		_, out := start(t, t.TempDir(), tc.flags...)
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v: output lacks %q:\n%s", tc.flags, tc.want, out.String())
		}
	}
	for _, bad := range [][]string{
		{"-refund-delay", "soon"}, {"-refund-delay", "2s-1s"}, {"-refund-delay", "1s-x"}, {"-refund-window", "-1h"},
	} {
		err := run(context.Background(), append([]string{"-listen", "127.0.0.1:0", "-keys", t.TempDir()}, bad...), io.Discard, io.Discard, nil)
		if !errors.Is(err, errUsage) {
			t.Errorf("%v: err = %v, want usage", bad, err)
		}
	}
}
