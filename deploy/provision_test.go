package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kioskpay/kioskpay/config"
)

// TestScriptsSyntax runs bash -n, and shellcheck when installed, on every
// script in deploy/.
func TestScriptsSyntax(t *testing.T) {
	scripts, _ := filepath.Glob("*.sh")
	if len(scripts) == 0 {
		t.Fatal("no scripts found")
	}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Log("shellcheck not installed (apt-get install shellcheck); syntax checked with bash -n only")
		return
	}
	out, err := exec.Command(sc, append([]string{"-x"}, scripts...)...).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// provision runs provision.sh with ROOT=root.
func provision(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"provision.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "ROOT="+root)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lookupUser returns the uid and gid of name in root's /etc/passwd.
func lookupUser(t *testing.T, root, name string) (int, int, bool) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "etc/passwd"))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) > 3 && p[0] == name {
			uid, _ := strconv.Atoi(p[2])
			gid, _ := strconv.Atoi(p[3])
			return uid, gid, true
		}
	}
	return 0, 0, false
}

func TestProvisionIntoRoot(t *testing.T) {
	root := t.TempDir()
	// A minimal base system: the video group exists.
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\nvideo:x:44:\n", 0o644)
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n", 0o644)

	src := t.TempDir()
	keys := filepath.Join(src, "keys")
	// Deliberately world-readable: provisioning must tighten them.
	for _, name := range []string{"wxpay_private_key.pem", "wxpay_apiv3.key", "wxpay_public_key.pem", "alipay_app_private_key.pem", "alipay_public_key.pem", "result.key"} {
		writeFile(t, filepath.Join(keys, name), "material of "+name+"\n", 0o644)
	}
	writeFile(t, filepath.Join(src, "mqtt.pw"), "s3cret\n", 0o644)
	writeFile(t, filepath.Join(src, "ca.crt"), "-----BEGIN CERTIFICATE-----\n", 0o644)

	args := []string{"--device-id", "chair-042", "--broker", "ssl://mqtt.test:8883",
		"--password-file", filepath.Join(src, "mqtt.pw"), "--ca-file", filepath.Join(src, "ca.crt"),
		"--keys", keys, "--notify-url", "https://relay.test"}
	out, err := provision(t, root, args...)
	if err != nil {
		t.Fatalf("provision: %v\n%s", err, out)
	}

	uid, gid, haveUser := lookupUser(t, root, "kioskpay")
	if os.Geteuid() == 0 && !haveUser {
		if _, err := exec.LookPath("systemd-sysusers"); err == nil {
			t.Fatalf("no kioskpay user created under ROOT:\n%s", out)
		}
	}
	type want struct {
		mode     os.FileMode
		ownerSvc bool // owned by the service user (else root)
	}
	files := map[string]want{
		"etc/kioskpayd":                                 {0o750, false},
		"etc/kioskpayd/keys":                            {0o750, false},
		"etc/kioskpayd/kioskpayd.toml":                  {0o640, false},
		"etc/kioskpayd/mqtt-ca.crt":                     {0o644, false},
		"etc/kioskpayd/keys/mqtt.password":              {0o600, true},
		"etc/kioskpayd/keys/wxpay_private_key.pem":      {0o600, true},
		"etc/kioskpayd/keys/wxpay_apiv3.key":            {0o600, true},
		"etc/kioskpayd/keys/alipay_app_private_key.pem": {0o600, true},
		"etc/kioskpayd/keys/result.key":                 {0o600, true},
		"etc/systemd/system/kioskpayd.service":          {0o644, false},
		"etc/sysusers.d/kioskpayd.conf":                 {0o644, false},
		"etc/tmpfiles.d/kioskpayd.conf":                 {0o644, false},
	}
	for rel, w := range files {
		fi, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if fi.Mode().Perm() != w.mode {
			t.Errorf("%s: mode %04o, want %04o", rel, fi.Mode().Perm(), w.mode)
		}
		if !haveUser || os.Geteuid() != 0 {
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantUID := 0
		if w.ownerSvc {
			wantUID = uid
		}
		if int(st.Uid) != wantUID {
			t.Errorf("%s: owner uid %d, want %d", rel, st.Uid, wantUID)
		}
		if strings.HasPrefix(rel, "etc/kioskpayd") && int(st.Gid) != gid {
			t.Errorf("%s: group %d, want the service group %d", rel, st.Gid, gid)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/kioskpayd/keys/mqtt.password")); string(got) != "s3cret\n" {
		t.Errorf("password file content %q", got)
	}

	c := provisionedConfig(t, root)
	for name, pair := range map[string][2]string{
		"device_id":          {c.DeviceID, "chair-042"},
		"mqtt.url":           {c.MQTT.URL, "ssl://mqtt.test:8883"},
		"mqtt.username":      {c.MQTT.Username, "chair-042"},
		"mqtt.client_id":     {c.MQTT.ClientID, "kioskpayd-chair-042"},
		"mqtt.password_file": {c.MQTT.PasswordFile, "/etc/kioskpayd/keys/mqtt.password"},
		"mqtt.ca_file":       {c.MQTT.CAFile, "/etc/kioskpayd/mqtt-ca.crt"},
		"mqtt.cert_file":     {c.MQTT.CertFile, ""},
		"payment.notify_url": {c.Payment.NotifyURL, "https://relay.test"},
		"unlock.result_key":  {c.Unlock.ResultKeyFile, "/etc/kioskpayd/keys/result.key"},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s = %q, want %q", name, pair[0], pair[1])
		}
	}
	// Every merchant key file the config names was installed.
	for _, m := range c.Merchants {
		for _, p := range []string{m.WxPay.PrivateKeyFile, m.WxPay.APIv3KeyFile, m.WxPay.PublicKeyFile, m.Alipay.PrivateKeyFile, m.Alipay.AlipayPublicKeyFile} {
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("config names %s, not installed: %v", p, err)
			}
		}
	}

	if _, err := exec.LookPath("systemctl"); err == nil {
		if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/kioskpayd.service")); err != nil {
			t.Errorf("unit not enabled under ROOT: %v\n%s", err, out)
		}
	}

	// Idempotent: a second run changes nothing and keeps no backup.
	if out, err := provision(t, root, args...); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	if baks, _ := filepath.Glob(filepath.Join(root, "etc/kioskpayd/kioskpayd.toml.bak.*")); len(baks) != 0 {
		t.Errorf("unchanged re-provision left backups %v", baks)
	}
	// A change keeps the old config.
	if out, err := provision(t, root, append(args[:len(args):len(args)], "--username", "chair-042-alt")...); err != nil {
		t.Fatalf("third run: %v\n%s", err, out)
	}
	if baks, _ := filepath.Glob(filepath.Join(root, "etc/kioskpayd/kioskpayd.toml.bak.*")); len(baks) != 1 {
		t.Errorf("changed re-provision: backups %v, want 1", baks)
	}
}

// --broker with several URLs writes mqtt.urls (and comments mqtt.url
// out); a single URL again restores mqtt.url.
func TestProvisionBrokerList(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\nvideo:x:44:\n", 0o644)
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n", 0o644)
	keys := filepath.Join(t.TempDir(), "keys")
	for _, name := range []string{"wxpay_private_key.pem", "wxpay_apiv3.key", "wxpay_public_key.pem", "alipay_app_private_key.pem", "alipay_public_key.pem"} {
		writeFile(t, filepath.Join(keys, name), "material of "+name+"\n", 0o600)
	}
	parse := func(args ...string) *config.Config {
		t.Helper()
		base := []string{"--device-id", "chair-043", "--keys", keys}
		if out, err := provision(t, root, append(base, args...)...); err != nil {
			t.Fatalf("provision %v: %v\n%s", args, err, out)
		}
		return provisionedConfig(t, root)
	}
	c := parse("--broker", "tcp://n1.test:1883, tcp://n2.test:1883,tcp://n3.test:1883")
	if c.MQTT.URL != "" || strings.Join(c.MQTT.Brokers(), " ") != "tcp://n1.test:1883 tcp://n2.test:1883 tcp://n3.test:1883" {
		t.Fatalf("url %q urls %q", c.MQTT.URL, c.MQTT.URLs)
	}
	c = parse("--broker", "tcp://one.test:1883")
	if c.MQTT.URL != "tcp://one.test:1883" || c.MQTT.URLs != nil {
		t.Fatalf("url %q urls %q", c.MQTT.URL, c.MQTT.URLs)
	}
}

// provisionedConfig parses the config provisioning wrote under root.
func provisionedConfig(t *testing.T, root string) *config.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "etc/kioskpayd/kioskpayd.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data, "/etc/kioskpayd")
	if err != nil {
		t.Fatalf("provisioned config does not parse: %v\n%s", err, data)
	}
	return c
}

func TestProvisionRefusesBadInput(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--device-id is required"},
		{[]string{"--device-id", "bad id"}, "want 1-64 characters"},
		{[]string{"--device-id", "backend"}, "reserved"},
		{[]string{"--device-id", "d1", "--cert-file", "/etc/hostname"}, "--cert-file needs --key-file"},
		{[]string{"--device-id", "d1", "--password-file", "/nonexistent"}, "cannot read /nonexistent"},
		{[]string{"--device-id", "d1", "--frobnicate"}, "unknown option"},
		{[]string{"--device-id", "d1", "--broker", `ssl://x"y`}, "quotes"},
	} {
		out, err := provision(t, root, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: err %v, output %q; want failure containing %q", tc.args, err, out, tc.want)
		}
	}
}
