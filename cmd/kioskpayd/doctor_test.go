package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

func doctor(t *testing.T, e *env) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"doctor", "-config", e.path}, nil, &out, &errOut)
	text := out.String() + errOut.String()
	t.Logf("doctor exit %d:\n%s", code, text)
	k := simkeys.Get(t)
	for _, secret := range []string{k.WxAPIv3Key, "PRIVATE KEY", "MII", "s3cret-pw"} {
		if strings.Contains(text, secret) {
			t.Fatalf("doctor output contains secret material %q", secret)
		}
	}
	return code, out.String()
}

// lineFor returns the report line of the named check.
func lineFor(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 6 && strings.HasPrefix(strings.TrimSpace(l[6:]), name) {
			return l
		}
	}
	return ""
}

func TestDoctorAllPass(t *testing.T) {
	e := newEnv(t)
	code, out := doctor(t, e)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, name := range []string{"config", "keys merchants.default", "clock", "state_dir", "broker ", "provider wxpay (default)", "provider alipay (default)", "display web"} {
		if l := lineFor(out, name); !strings.HasPrefix(l, "ok") {
			t.Errorf("check %q: %q", name, l)
		}
	}
	if !strings.Contains(out, "all checks passed") {
		t.Error("no summary")
	}
}

func TestDoctorFailures(t *testing.T) {
	e := newEnv(t)
	// Nothing listens on the broker address.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "tcp://" + ln.Addr().String()
	ln.Close()
	e.edit(t, `url = "`+e.brokerURL+`"`, `url = "`+dead+`"`)
	// WeChat answers 5xx: no definite answer.
	if err := e.sim.InjectFault(paysim.Fault{Provider: "wxpay", Kind: paysim.Fault5xx}); err != nil {
		t.Fatal(err)
	}
	// Alipay's answers are signed with the wrong key: not trustworthy.
	if err := e.sim.InjectFault(paysim.Fault{Provider: "alipay", Kind: paysim.FaultBadSign}); err != nil {
		t.Fatal(err)
	}
	code, out := doctor(t, e)
	if code != exitFatal {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, name := range []string{"broker ", "provider wxpay (default)", "provider alipay (default)"} {
		if l := lineFor(out, name); !strings.HasPrefix(l, "FAIL") {
			t.Errorf("check %q: %q, want FAIL", name, l)
		}
	}
	if l := lineFor(out, "config"); !strings.HasPrefix(l, "ok") {
		t.Errorf("config: %q", l)
	}
}

func TestDoctorBadConfig(t *testing.T) {
	e := newEnv(t)
	e.edit(t, `provider = "any"`, `provider = "paypal"`)
	code, out := doctor(t, e)
	if code != exitBadConfig || !strings.Contains(lineFor(out, "config"), "payment.provider") {
		t.Fatalf("exit %d, out %q", code, out)
	}
}

// TestDoctorSeveralConfigErrors: every configuration problem has a line
// of its own, and the checks that do not depend on a broken key still run.
func TestDoctorSeveralConfigErrors(t *testing.T) {
	e := newEnv(t)
	e.edit(t, `provider = "any"`, `provider = "paypal"`)
	e.edit(t, `locale = "en"`, `locale = "fr"`+"\nfont = \"x\"")
	e.edit(t, `url = "`+e.brokerURL+`"`, `url = "ftp://`+strings.TrimPrefix(e.brokerURL, "tcp://")+`"`)
	code, out := doctor(t, e)
	if code != exitBadConfig {
		t.Fatalf("exit %d, want 2", code)
	}
	for name, want := range map[string]string{
		"config payment.provider":   "FAIL",
		"config display.locale":     "FAIL",
		"config display.font":       "FAIL",
		"config mqtt.url":           "FAIL",
		"broker ":                   "skip",
		"display":                   "skip",
		"keys merchants.default":    "ok",
		"provider wxpay (default)":  "ok",
		"provider alipay (default)": "ok",
		"clock":                     "ok",
		"state_dir":                 "ok",
	} {
		if l := lineFor(out, name); !strings.HasPrefix(l, want) {
			t.Errorf("check %q: %q, want %s", name, l, want)
		}
	}
	if l := lineFor(out, "config display.font"); !strings.Contains(l, "did you mean display.font_file?") {
		t.Errorf("unknown key line %q", l)
	}
	if l := lineFor(out, "broker "); !strings.Contains(l, "until mqtt.url is fixed") {
		t.Errorf("broker line %q", l)
	}
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 200 {
			t.Errorf("a line of %d characters: %q", len(l), l)
		}
	}
	if !strings.Contains(out, "4 of them in the configuration") {
		t.Errorf("summary: %s", out)
	}
}

// TestDoctorUnreadableConfig: a file that is not TOML stops the checks
// with one line saying where.
func TestDoctorUnreadableConfig(t *testing.T) {
	e := newEnv(t)
	e.edit(t, `provider = "any"`, `provider = `)
	code, out := doctor(t, e)
	if code != exitBadConfig || !strings.HasPrefix(lineFor(out, "config"), "FAIL") || !strings.Contains(out, "TOML syntax error at line") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// passwordHook accepts only user "dev" with password "s3cret-pw".
type passwordHook struct{ mochi.HookBase }

func (h *passwordHook) ID() string { return "password" }
func (h *passwordHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *passwordHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	return string(pk.Connect.Username) == "dev" && string(pk.Connect.Password) == "s3cret-pw"
}
func (h *passwordHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

func TestDoctorBrokerCredentials(t *testing.T) {
	_, url := mqtttest.Mochi(t, new(passwordHook), nil)
	for _, tt := range []struct {
		pw   string
		want string
	}{{"s3cret-pw", "ok"}, {"wrong", "FAIL"}} {
		t.Run(tt.want, func(t *testing.T) {
			e := newEnv(t)
			pwFile := filepath.Join(e.dir, "mqtt_password")
			os.WriteFile(pwFile, []byte(tt.pw+"\n"), 0o600)
			e.edit(t, `url = "`+e.brokerURL+`"`, `url = "`+url+`"`+"\nusername = \"dev\"\npassword_file = \""+pwFile+`"`)
			_, out := doctor(t, e)
			if l := lineFor(out, "broker "); !strings.HasPrefix(l, tt.want) {
				t.Fatalf("broker line %q, want %s", l, tt.want)
			}
			if strings.Contains(out, tt.pw) {
				t.Fatal("password printed")
			}
		})
	}
}
