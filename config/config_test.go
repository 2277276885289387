package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// keyFiles writes placeholder files for every path the base config names
// and returns the directory. Contents do not matter to Load.
func keyFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"wx_key.pem", "wx_apiv3", "wx_pub.pem", "ali_key.pem", "ali_pub.pem", "mqtt_pw", "hmac", "ca.pem", "cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// base is a complete valid configuration; paths are relative so Parse
// resolves them against the test's directory.
const base = `device_id = "chair-001"
state_dir = "state"

[mqtt]
url = "ssl://broker.example:8883"
topic_prefix = "kiosk"
username = "chair-001"
password_file = "mqtt_pw"
ca_file = "ca.pem"
cert_file = "cert.pem"
key_file = "key.pem"

[payment]
provider = "any"
expire = "5m"
max_fee = 100000
poll = "2s"
notify_url = "https://relay.example"

[merchants.default.wxpay]
appid = "wxd678efh567hg6787"
mchid = "1900000109"
cert_serial = "ABC"
private_key_file = "wx_key.pem"
apiv3_key_file = "wx_apiv3"
public_key_id = "PUB_KEY_ID_01"
public_key_file = "wx_pub.pem"
api_base = "http://127.0.0.1:9999"

[merchants.default.alipay]
app_id = "2021000000000001"
private_key_file = "ali_key.pem"
alipay_public_key_file = "ali_pub.pem"
gateway = "http://127.0.0.1:9999/gateway.do"

[display]
outputs = ["web", "png"]
rotate = 90
png_path = "qr.png"
web_listen = "127.0.0.1:8088"
locale = "en"

[unlock]
ack_timeout = "45s"
on_no_ack = "hold"
result_key_file = "hmac"
require_signed_requests = true

[clock]
sync_check = "none"

[catalog]
massage_15 = 1000
`

// set replaces key (dotted, its table being everything before the last dot)
// with `key = value` in the TOML text, adding the line (and the table) when
// missing. A value of "" deletes the key.
func set(text, dotted, value string) string {
	table, key := "", dotted
	if i := strings.LastIndex(dotted, "."); i >= 0 {
		table, key = dotted[:i], dotted[i+1:]
	}
	lines := strings.Split(text, "\n")
	cur, headerAt := "", -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			cur = strings.Trim(t, "[]")
			if cur == table {
				headerAt = i
			}
			continue
		}
		if cur == table && strings.HasPrefix(t, key+" =") {
			if value == "" {
				return strings.Join(append(lines[:i:i], lines[i+1:]...), "\n")
			}
			lines[i] = key + " = " + value
			return strings.Join(lines, "\n")
		}
	}
	if value == "" {
		return text
	}
	if table == "" {
		return key + " = " + value + "\n" + text
	}
	if headerAt < 0 {
		return text + "\n[" + table + "]\n" + key + " = " + value + "\n"
	}
	lines = append(lines[:headerAt+1], append([]string{key + " = " + value}, lines[headerAt+1:]...)...)
	return strings.Join(lines, "\n")
}

func TestParseValid(t *testing.T) {
	dir := keyFiles(t)
	c, err := Parse([]byte(base), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := c.CheckFiles(); err != nil {
		t.Fatalf("CheckFiles: %v", err)
	}
	if got, want := c.MQTT.ClientID, "kioskpayd-chair-001"; got != want {
		t.Errorf("client id = %q, want %q", got, want)
	}
	if got, want := c.Merchants["default"].WxPay.PrivateKeyFile, filepath.Join(dir, "wx_key.pem"); got != want {
		t.Errorf("relative path resolved to %q, want %q", got, want)
	}
	if got, want := c.StateDir, filepath.Join(dir, "state"); got != want {
		t.Errorf("state_dir = %q, want %q", got, want)
	}
	if c.Unlock.AckTimeout.Duration != 45*time.Second || c.Unlock.OnNoAck != "hold" || !c.Unlock.RequireSignedRequests {
		t.Errorf("unlock = %+v", c.Unlock)
	}
	if c.Catalog["massage_15"] != 1000 {
		t.Errorf("catalog = %v", c.Catalog)
	}
	if got := fmt.Sprint(c.Display.Outputs); got != "[web png]" {
		t.Errorf("outputs = %q", got)
	}
	if c.Topic() != "kiosk/chair-001" {
		t.Errorf("Topic = %q", c.Topic())
	}
	if l := c.Limits(); l.MaxFee != 100000 || l.DefaultExpire != 5*time.Minute {
		t.Errorf("Limits = %+v", l)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte("device_id = \"d1\"\n[merchants.default.wxpay]\nappid=\"a\"\nmchid=\"m\"\ncert_serial=\"s\"\nprivate_key_file=\"/k\"\napiv3_key_file=\"/v\"\npublic_key_id=\"PUB_KEY_ID_1\"\npublic_key_file=\"/p\"\n[payment]\nprovider=\"wxpay\"\n"), "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	d := Default()
	if c.StateDir != d.StateDir || c.MQTT.URL != "tcp://127.0.0.1:1883" || c.MQTT.TopicPrefix != "kiosk" || c.MQTT.ClientID != "kioskpayd-d1" {
		t.Errorf("mqtt/state defaults wrong: %+v %q", c.MQTT, c.StateDir)
	}
	if c.Payment.Expire.Duration != 5*time.Minute || c.Payment.MaxFee != 100000 || c.Payment.Poll.Duration != 2*time.Second {
		t.Errorf("payment defaults wrong: %+v", c.Payment)
	}
	if len(c.Display.Outputs) != 1 || c.Display.Outputs[0] != "web" || c.Display.Locale != "zh" || c.Display.FBDevice != "/dev/fb0" || c.Display.WebListen != "127.0.0.1:8088" || c.Display.PNGPath != "/run/kioskpayd/qr.png" {
		t.Errorf("display defaults wrong: %+v", c.Display)
	}
	if c.Unlock.AckTimeout.Duration != 30*time.Second || c.Unlock.OnNoAck != "refund" {
		t.Errorf("unlock defaults wrong: %+v", c.Unlock)
	}
	if c.Clock.SyncCheck != "kernel" {
		t.Errorf("sync_check default = %q", c.Clock.SyncCheck)
	}
}

// urls replaces url, and Brokers gives the daemon one list either way.
func TestParseBrokerList(t *testing.T) {
	c, err := Parse([]byte(set(set(base, "mqtt.url", ""), "mqtt.urls", `["ssl://n1:8883", "ssl://n2:8883", "ssl://n3:8883"]`)), "/x")
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTT.URL != "" || strings.Join(c.MQTT.Brokers(), " ") != "ssl://n1:8883 ssl://n2:8883 ssl://n3:8883" {
		t.Errorf("url %q, brokers %q", c.MQTT.URL, c.MQTT.Brokers())
	}
	c, err = Parse([]byte(base), "/x")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.MQTT.Brokers(), " ") != "ssl://broker.example:8883" {
		t.Errorf("brokers %q", c.MQTT.Brokers())
	}
}

func TestParseEmptyOutputs(t *testing.T) {
	c, err := Parse([]byte(set(base, "display.outputs", "[]")), "/x")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Display.Outputs) != 0 {
		t.Errorf("outputs = %v, want none (explicitly empty)", c.Display.Outputs)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		wantKey string // the error must name this key
		wantMsg string // and contain this text
	}{
		{"syntax", base + "\n= 1\n", "", "TOML syntax"},
		{"unknown top key", "bogus = 1\n" + base, "bogus", "unknown key"},
		{"unknown nested key", set(base, "mqtt.hots", `"x"`), "mqtt.hots", "unknown key"},
		{"unknown key suggests", set(base, "mqtt.ulr", `"x"`), "mqtt.ulr", "unknown key; did you mean mqtt.url?"},
		{"unknown merchant key", set(base, "merchants.default.wxpay.app_id", `"x"`), "merchants.default.wxpay.app_id", "unknown key; did you mean merchants.default.wxpay.appid?"},
		{"unknown locale key", set(base, "display.local", `"en"`), "display.local", "did you mean display.locale?"},
		{"unknown table", base + "\n[clocks]\nx = 1\n", "clocks", "unknown key; did you mean clock?"},
		{"wrong type", set(base, "payment.max_fee", `"100"`), "payment.max_fee", "incompatible types"},
		{"device_id missing", set(base, "device_id", ""), "device_id", "is required"},
		{"device_id bad", set(base, "device_id", `"chair 1"`), "device_id", "A-Z a-z 0-9"},
		{"device_id long", set(base, "device_id", `"`+strings.Repeat("a", 65)+`"`), "device_id", "1 to 64"},
		{"state_dir empty", set(base, "state_dir", `""`), "state_dir", "must not be empty"},
		{"mqtt url scheme", set(base, "mqtt.url", `"http://b:1"`), "mqtt.url", "scheme must be tcp, ssl, ws or wss"},
		{"mqtt url empty", set(base, "mqtt.url", `""`), "mqtt.url", "is required"},
		{"mqtt url no host", set(base, "mqtt.url", `"ssl://"`), "mqtt.url", "no host"},
		{"mqtt url creds", set(base, "mqtt.url", `"ssl://u:p@b:1"`), "mqtt.url", "must not carry credentials"},
		{"mqtt url unparsable", set(base, "mqtt.url", `"ssl://b:1:%zz"`), "mqtt.url", "not a URL"},
		{"topic prefix empty", set(base, "mqtt.topic_prefix", `""`), "mqtt.topic_prefix", "must not be empty"},
		{"topic prefix wildcard", set(base, "mqtt.topic_prefix", `"a/+"`), "mqtt.topic_prefix", "wildcards"},
		{"topic prefix slash", set(base, "mqtt.topic_prefix", `"a/"`), "mqtt.topic_prefix", "empty levels"},
		{"topic prefix sys", set(base, "mqtt.topic_prefix", `"$SYS"`), "mqtt.topic_prefix", "reserved"},
		{"client id control", set(base, "mqtt.client_id", `"a\u0001"`), "mqtt.client_id", "printable"},
		{"password without user", set(base, "mqtt.username", ""), "mqtt.password_file", "username is empty"},
		{"cert without key", set(base, "mqtt.key_file", ""), "mqtt.key_file", "mutual TLS needs both"},
		{"key without cert", set(base, "mqtt.cert_file", ""), "mqtt.cert_file", "mutual TLS needs both"},
		{"tls files on tcp", set(base, "mqtt.url", `"tcp://b:1883"`), "mqtt.ca_file", "not a TLS URL"},
		{"url and urls", set(base, "mqtt.urls", `["ssl://a:8883"]`), "mqtt.urls", "not both"},
		{"urls empty", set(set(base, "mqtt.url", ""), "mqtt.urls", `[]`), "mqtt.urls", "at least one broker"},
		{"urls bad entry", set(set(base, "mqtt.url", ""), "mqtt.urls", `["ssl://a:8883", "ssl://"]`), "mqtt.urls[1]", "no host"},
		{"urls scheme", set(set(base, "mqtt.url", ""), "mqtt.urls", `["http://a:1"]`), "mqtt.urls[0]", "scheme must be tcp, ssl, ws or wss"},
		{"urls creds", set(set(base, "mqtt.url", ""), "mqtt.urls", `["ssl://a:8883", "ssl://u:p@b:8883"]`), "mqtt.urls[1]", "must not carry credentials"},
		{"urls repeated", set(set(base, "mqtt.url", ""), "mqtt.urls", `["ssl://a:8883", "ssl://a:8883"]`), "mqtt.urls[1]", "listed twice"},
		{"urls mixed tls", set(set(base, "mqtt.url", ""), "mqtt.urls", `["ssl://a:8883", "tcp://b:1883"]`), "mqtt.urls[1]", "mixes TLS and plain"},
		{"urls not a list", set(set(base, "mqtt.url", ""), "mqtt.urls", `"ssl://a:8883"`), "mqtt.urls", "incompatible types"},
		{"tls files on tcp urls", set(set(base, "mqtt.url", ""), "mqtt.urls", `["tcp://a:1883", "tcp://b:1883"]`), "mqtt.ca_file", "not TLS URLs"},
		{"provider", set(base, "payment.provider", `"paypal"`), "payment.provider", "wxpay, alipay or any"},
		{"expire short", set(base, "payment.expire", `"59s"`), "payment.expire", "1m to 2h"},
		{"expire long", set(base, "payment.expire", `"2h1s"`), "payment.expire", "1m to 2h"},
		{"expire int", set(base, "payment.expire", `300`), "payment.expire", "want a duration"},
		{"expire garbage", set(base, "payment.expire", `"five"`), "payment.expire", "want a duration"},
		{"max_fee zero", set(base, "payment.max_fee", `0`), "payment.max_fee", "positive"},
		{"max_fee negative", set(base, "payment.max_fee", `-1`), "payment.max_fee", "positive"},
		{"poll short", set(base, "payment.poll", `"10ms"`), "payment.poll", "200ms to 5m"},
		{"notify url scheme", set(base, "payment.notify_url", `"ftp://x"`), "payment.notify_url", "http:// or https://"},
		{"notify url no host", set(base, "payment.notify_url", `"https://"`), "payment.notify_url", "no host"},
		{"notify url query", set(base, "payment.notify_url", `"https://relay.example/n?x=1"`), "payment.notify_url", "query string"},
		{"no merchants", strings.Split(base, "[merchants.default.wxpay]")[0] + "[display]\n", "merchants", "at least one merchant"},
		{"merchant id", strings.ReplaceAll(base, "merchants.default", `merchants."bad pid"`), `merchants.bad pid`, "merchant id"},
		{"merchant without provider", base + "\n[merchants.other]\n", "merchants.other", "configures no provider"},
		{"any needs alipay", set(set(set(base, "merchants.default.alipay.app_id", ""), "merchants.default.alipay.private_key_file", ""), "merchants.default.alipay.alipay_public_key_file", "") + "\n[merchants.p2.wxpay]\nappid=\"a\"\nmchid=\"m\"\ncert_serial=\"s\"\nprivate_key_file=\"/k\"\napiv3_key_file=\"/v\"\npublic_key_id=\"PUB_KEY_ID_1\"\npublic_key_file=\"/p\"\n", "merchants.p2.alipay", `payment.provider is "any"`},
		{"wxpay needs wxpay", set(strings.Split(base, "[merchants.default.wxpay]")[0]+"[merchants.default.alipay]\napp_id = \"1\"\nprivate_key_file = \"k\"\nalipay_public_key_file = \"p\"\n", "payment.provider", `"wxpay"`), "merchants.default.wxpay", `payment.provider is "wxpay"`},
		{"wx appid", set(base, "merchants.default.wxpay.appid", ""), "merchants.default.wxpay.appid", "is required"},
		{"wx mchid", set(base, "merchants.default.wxpay.mchid", ""), "merchants.default.wxpay.mchid", "is required"},
		{"wx serial", set(base, "merchants.default.wxpay.cert_serial", ""), "merchants.default.wxpay.cert_serial", "is required"},
		{"wx private key", set(base, "merchants.default.wxpay.private_key_file", ""), "merchants.default.wxpay.private_key_file", "is required"},
		{"wx apiv3", set(base, "merchants.default.wxpay.apiv3_key_file", ""), "merchants.default.wxpay.apiv3_key_file", "is required"},
		{"wx pub id", set(base, "merchants.default.wxpay.public_key_id", ""), "merchants.default.wxpay.public_key_id", "is required"},
		{"wx pub id form", set(base, "merchants.default.wxpay.public_key_id", `"123"`), "merchants.default.wxpay.public_key_id", "PUB_KEY_ID_"},
		{"wx pub file", set(base, "merchants.default.wxpay.public_key_file", ""), "merchants.default.wxpay.public_key_file", "is required"},
		{"wx api base", set(base, "merchants.default.wxpay.api_base", `"localhost:1"`), "merchants.default.wxpay.api_base", "http"},
		{"ali app id", set(base, "merchants.default.alipay.app_id", ""), "merchants.default.alipay.app_id", "is required"},
		{"ali private key", set(base, "merchants.default.alipay.private_key_file", ""), "merchants.default.alipay.private_key_file", "is required"},
		{"ali public key", set(base, "merchants.default.alipay.alipay_public_key_file", ""), "merchants.default.alipay.alipay_public_key_file", "is required"},
		{"ali gateway", set(base, "merchants.default.alipay.gateway", `"gw"`), "merchants.default.alipay.gateway", "http"},
		{"output unknown", set(base, "display.outputs", `["hdmi"]`), "display.outputs", `unknown output "hdmi"`},
		{"output twice", set(base, "display.outputs", `["web", "web"]`), "display.outputs", "twice"},
		{"rotate", set(base, "display.rotate", `45`), "display.rotate", "0, 90, 180 or 270"},
		{"fb device empty", set(set(base, "display.outputs", `["fb"]`), "display.fb_device", `""`), "display.fb_device", "must not be empty"},
		{"png path empty", set(base, "display.png_path", `""`), "display.png_path", "must not be empty"},
		{"web listen", set(base, "display.web_listen", `"8088"`), "display.web_listen", "host:port"},
		{"locale", set(base, "display.locale", `"fr"`), "display.locale", "zh or en"},
		{"ack timeout", set(base, "unlock.ack_timeout", `"0s"`), "unlock.ack_timeout", "1s to 1h"},
		{"on_no_ack", set(base, "unlock.on_no_ack", `"keep"`), "unlock.on_no_ack", "refund or hold"},
		{"signed needs key", set(base, "unlock.result_key_file", ""), "unlock.require_signed_requests", "result_key_file"},
		{"sync check", set(base, "clock.sync_check", `"ntp"`), "clock.sync_check", "kernel or none"},
		{"catalog zero", set(base, "catalog.massage_15", `0`), "catalog.massage_15", "positive"},
		{"catalog above max", set(base, "catalog.massage_15", `100001`), "catalog.massage_15", "above payment.max_fee"},
		{"catalog type", set(base, "catalog.Massage", `100`), "catalog.Massage", "a-z 0-9 _"},
		{"catalog string", set(base, "catalog.massage_15", `"1000"`), "catalog.massage_15", "incompatible types"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.text), "/etc/kioskpayd")
			if err == nil {
				t.Fatalf("Parse succeeded, want an error naming %q", tt.wantKey)
			}
			if !hasKeyError(err, tt.wantKey, tt.wantMsg) {
				t.Fatalf("error %q does not name key %q with %q", err, tt.wantKey, tt.wantMsg)
			}
		})
	}
}

// hasKeyError reports whether err (possibly joined) holds an *Error for key
// whose text contains msg.
func hasKeyError(err error, key, msg string) bool {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var ce *Error
		if errors.As(e, &ce) && ce.Key == key && strings.Contains(ce.Error(), msg) {
			return true
		}
	}
	return false
}

// TestUnknownKeyOnce: a misspelt table is one mistake, reported once,
// and a key far from every valid one gets no guess.
func TestUnknownKeyOnce(t *testing.T) {
	_, err := Parse([]byte(base+"\n[merchant.second.wxpay]\nappid = \"x\"\nmchid = \"y\"\n\n[zz]\nquux = 1\n"), "/x")
	var unknown []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if strings.Contains(e.Error(), "unknown key") {
			unknown = append(unknown, e.Error())
		}
	}
	want := []string{"merchant: unknown key; did you mean merchants?", "zz: unknown key"}
	if strings.Join(unknown, "|") != strings.Join(want, "|") {
		t.Fatalf("unknown-key errors %q, want %q", unknown, want)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	text := set(set(base, "payment.max_fee", "0"), "display.locale", `"fr"`)
	_, err := Parse([]byte(text), "/x")
	if !hasKeyError(err, "payment.max_fee", "positive") || !hasKeyError(err, "display.locale", "zh or en") {
		t.Fatalf("want both problems reported, got %v", err)
	}
}

func TestCheckFiles(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(dir string) error
		wantKey string
		wantMsg string
	}{
		{"wx private key world readable", func(dir string) error { return os.Chmod(filepath.Join(dir, "wx_key.pem"), 0o644) }, "merchants.default.wxpay.private_key_file", "wx_key.pem has mode 0644"},
		{"apiv3 group readable", func(dir string) error { return os.Chmod(filepath.Join(dir, "wx_apiv3"), 0o640) }, "merchants.default.wxpay.apiv3_key_file", "readable by group or others"},
		{"alipay private key", func(dir string) error { return os.Chmod(filepath.Join(dir, "ali_key.pem"), 0o604) }, "merchants.default.alipay.private_key_file", "ali_key.pem"},
		{"mqtt password", func(dir string) error { return os.Chmod(filepath.Join(dir, "mqtt_pw"), 0o660) }, "mqtt.password_file", "mqtt_pw"},
		{"mqtt key", func(dir string) error { return os.Chmod(filepath.Join(dir, "key.pem"), 0o644) }, "mqtt.key_file", "key.pem"},
		{"hmac key", func(dir string) error { return os.Chmod(filepath.Join(dir, "hmac"), 0o644) }, "unlock.result_key_file", "hmac"},
		{"missing public key", func(dir string) error { return os.Remove(filepath.Join(dir, "ali_pub.pem")) }, "merchants.default.alipay.alipay_public_key_file", "no such file"},
		{"missing ca", func(dir string) error { return os.Remove(filepath.Join(dir, "ca.pem")) }, "mqtt.ca_file", "no such file"},
		{"key is a directory", func(dir string) error {
			os.Remove(filepath.Join(dir, "wx_apiv3"))
			return os.Mkdir(filepath.Join(dir, "wx_apiv3"), 0o700)
		}, "merchants.default.wxpay.apiv3_key_file", "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := keyFiles(t)
			if err := tt.prepare(dir); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "kioskpayd.toml")
			if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !hasKeyError(errors.Unwrap(err), tt.wantKey, tt.wantMsg) {
				t.Fatalf("error %q does not name %q with %q", err, tt.wantKey, tt.wantMsg)
			}
		})
	}
	t.Run("public key may be world readable", func(t *testing.T) {
		dir := keyFiles(t)
		for _, f := range []string{"wx_pub.pem", "ali_pub.pem", "ca.pem", "cert.pem"} {
			if err := os.Chmod(filepath.Join(dir, f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		path := filepath.Join(dir, "kioskpayd.toml")
		os.WriteFile(path, []byte(base), 0o644)
		if _, err := Load(path); err != nil {
			t.Fatalf("Load: %v", err)
		}
	})
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Fatalf("err = %v, want it to name the file", err)
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	os.WriteFile(p, []byte("  s3cret\n"), 0o600)
	s, err := ReadSecret("unlock.result_key_file", p)
	if err != nil || s != "s3cret" {
		t.Fatalf("ReadSecret = %q, %v", s, err)
	}
	os.WriteFile(p, []byte("\n"), 0o600)
	if _, err := ReadSecret("unlock.result_key_file", p); !hasKeyError(err, "unlock.result_key_file", "is empty") {
		t.Fatalf("empty: %v", err)
	}
	_, err = ReadSecret("mqtt.password_file", filepath.Join(dir, "missing"))
	if !hasKeyError(err, "mqtt.password_file", "missing") {
		t.Fatalf("missing: %v", err)
	}
}

// Errors must never carry the content of the file, only its name.
func TestErrorsNeverShowSecrets(t *testing.T) {
	dir := keyFiles(t)
	secret := "TOPSECRET-APIV3-KEY-0123456789ab"
	os.WriteFile(filepath.Join(dir, "wx_apiv3"), []byte(secret), 0o600)
	os.Chmod(filepath.Join(dir, "wx_apiv3"), 0o644)
	path := filepath.Join(dir, "kioskpayd.toml")
	os.WriteFile(path, []byte(base), 0o600)
	_, err := Load(path)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseFBGeometry(t *testing.T) {
	dir := keyFiles(t)
	geom := "\n[display.fb_geometry]\nwidth = 800\nheight = 480\nbits_per_pixel = 16\nline_length = 1664\n"
	c, err := Parse([]byte(base+geom), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if g := c.Display.FBGeometry; g.Width != 800 || g.Height != 480 || g.BitsPerPixel != 16 || g.LineLength != 1664 {
		t.Errorf("fb_geometry = %+v", g)
	}
	for _, bad := range []string{
		"\n[display.fb_geometry]\nwidth = 800\nheight = 480\nbits_per_pixel = 7\n",
		"\n[display.fb_geometry]\nwidth = 800\nheight = 480\nbits_per_pixel = 32\nline_length = 100\n",
		"\n[display.fb_geometry]\nwidth = 800\nheight = 480\nbits_per_pixel = 16\nred = {offset = 8, length = 8}\ngreen = {offset = 5, length = 6}\nblue = {offset = 0, length = 5}\n",
	} {
		_, err := Parse([]byte(base+bad), dir)
		if err == nil || !strings.Contains(err.Error(), "display.fb_geometry") {
			t.Errorf("%q: err = %v, want one naming display.fb_geometry", bad, err)
		}
	}
	if _, err := Parse([]byte(base+"\n[display.fb_geometry]\nwidht = 800\n"), dir); err == nil || !strings.Contains(err.Error(), "widht") {
		t.Errorf("misspelt key: err = %v", err)
	}
}

func TestRetentionDays(t *testing.T) {
	dir := keyFiles(t)
	c, err := Parse([]byte(base), dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Retention() != 90*24*time.Hour {
		t.Errorf("default retention %v, want 90 days", c.Retention())
	}
	c, err = Parse([]byte("retention_days = 7\n"+base), dir)
	if err != nil || c.Retention() != 7*24*time.Hour {
		t.Errorf("retention_days = 7: %v, %v", c.Retention(), err)
	}
	for _, v := range []string{"0", "-1", "3651"} {
		if _, err := Parse([]byte("retention_days = "+v+"\n"+base), dir); err == nil || !strings.Contains(err.Error(), "retention_days") {
			t.Errorf("retention_days = %s: err = %v", v, err)
		}
	}
}

func TestNotifyURL(t *testing.T) {
	c := &Config{DeviceID: "sim-1"}
	if got := c.NotifyURL(payment.WxPay); got != "" {
		t.Errorf("NotifyURL without payment.notify_url = %q", got)
	}
	c.Payment.NotifyURL = "https://relay.example/base/"
	if got, want := c.NotifyURL(payment.Alipay), "https://relay.example/base/notify/sim-1/alipay"; got != want {
		t.Errorf("NotifyURL = %q, want %q", got, want)
	}
}
