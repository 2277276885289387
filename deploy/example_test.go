package deploy

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/paygate"
)

// TestExampleConfigParses loads deploy/kioskpayd.toml with the daemon's own
// parser: the example must stay a valid configuration.
func TestExampleConfigParses(t *testing.T) {
	data, err := os.ReadFile("kioskpayd.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data, "/etc/kioskpayd")
	if err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	if c.DeviceID != "chair-001" || c.MQTT.TopicPrefix != "kiosk" || c.Clock.SyncCheck != "kernel" {
		t.Fatalf("unexpected values: %+v", c)
	}
	if c.Merchants["default"].WxPay == nil || c.Merchants["default"].Alipay == nil {
		t.Fatal("example lacks a merchant")
	}
}

// TestExampleConfigHasEveryKey keeps the example complete: every key the
// daemon knows appears in it, set or commented.
func TestExampleConfigHasEveryKey(t *testing.T) {
	data, err := os.ReadFile("kioskpayd.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, key := range tomlKeys(reflect.TypeOf(config.Config{}), "") {
		parts := strings.Split(key, ".")
		leaf := parts[len(parts)-1]
		re := regexp.MustCompile(`(?m)^#?\s*` + regexp.QuoteMeta(leaf) + `\s*=`)
		if strings.HasSuffix(key, "[]") { // a table of free-form keys
			leaf = strings.TrimSuffix(key, "[]")
			re = regexp.MustCompile(`(?m)^\[` + regexp.QuoteMeta(leaf) + `\]`)
		}
		if !re.MatchString(text) {
			t.Errorf("key %s is not in deploy/kioskpayd.toml", key)
		}
	}
}

// tomlKeys lists the dotted toml keys of struct type t: tables of structs
// show as "*", tables of free-form keys end in "[]".
func tomlKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft.NumField() > 0 && ft.Field(0).Tag.Get("toml") != "":
			keys = append(keys, tomlKeys(ft, prefix+tag+".")...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, tomlKeys(ft.Elem(), prefix+tag+".*.")...)
		case ft.Kind() == reflect.Map:
			keys = append(keys, prefix+tag+"[]")
		default:
			keys = append(keys, prefix+tag)
		}
	}
	return keys
}

// TestPaygateExampleParses loads deploy/paygate.toml with paygate's own
// parser, its key paths pointing at generated keys.
func TestPaygateExampleParses(t *testing.T) {
	data, err := os.ReadFile("paygate.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := simkeys.Get(t).WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "/etc/paygate/keys/", dir+"/")
	for _, f := range []string{"mqtt_password", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		text = strings.ReplaceAll(text, "/etc/paygate/"+f, filepath.Join(dir, f))
	}
	c, err := paygate.ParseConfig([]byte(text), dir)
	if err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	if p := c.Policy.PolicyFor("chair-7"); p.MaxFee != 5000 || p.Catalog["massage_15"] != 1500 {
		t.Errorf("chair group: %+v", p)
	}
	if got := c.Policy.Prefix("chair-001"); got != "_C1_" {
		t.Errorf("chair-001 prefix %q", got)
	}
}
