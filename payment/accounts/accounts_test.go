package accounts

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/internal/simkeys"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/paysim"
)

// simConfig writes paysim's key files and daemon config into a temp dir and
// loads it.
func simConfig(t *testing.T) (*config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	path, err := simkeys.Get(t).WriteDaemonFiles(dir, "http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("Load paysim config: %v", err)
	}
	return c, dir
}

func TestProviders(t *testing.T) {
	c, _ := simConfig(t)
	ps, err := Providers(c, nil)
	if err != nil {
		t.Fatalf("Providers: %v", err)
	}
	d := ps["default"]
	if d[payment.WxPay] == nil || d[payment.WxPay].Name() != payment.WxPay {
		t.Errorf("wxpay provider missing: %v", d)
	}
	if d[payment.Alipay] == nil || d[payment.Alipay].Name() != payment.Alipay {
		t.Errorf("alipay provider missing: %v", d)
	}
}

func TestProvidersErrors(t *testing.T) {
	k := simkeys.Get(t)
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.WxMerchant)}))
	tests := []struct {
		name    string
		file    func(f paysim.KeyFiles) string
		content string
		wantKey string
		wantMsg string
	}{
		{"wx pkcs1", func(f paysim.KeyFiles) string { return f.WxMerchantPrivate }, pkcs1, "merchants.default.wxpay.private_key_file", "PKCS#8"},
		{"wx private not pem", func(f paysim.KeyFiles) string { return f.WxMerchantPrivate }, "garbage", "merchants.default.wxpay.private_key_file", "no PEM block"},
		{"wx apiv3 short", func(f paysim.KeyFiles) string { return f.WxAPIv3Key }, "short", "merchants.default.wxpay.apiv3_key_file", "32 bytes, got 5"},
		{"wx apiv3 empty", func(f paysim.KeyFiles) string { return f.WxAPIv3Key }, "\n", "merchants.default.wxpay.apiv3_key_file", "is empty"},
		{"wx public is private", func(f paysim.KeyFiles) string { return f.WxPublic }, paysim.PrivatePEM(k.WxPlatform), "merchants.default.wxpay.public_key_file", "want PUBLIC KEY"},
		{"ali private garbage", func(f paysim.KeyFiles) string { return f.AlipayAppPrivate }, garbagePEM, "merchants.default.alipay.private_key_file", "not a valid PKCS#8"},
		{"ali public garbage", func(f paysim.KeyFiles) string { return f.AlipayPublic }, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "merchants.default.alipay.alipay_public_key_file", "not a valid PKIX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, dir := simConfig(t)
			f := paysim.KeyFiles{
				AlipayAppPrivate:  filepath.Join(dir, "alipay_app_private_key.pem"),
				AlipayPublic:      filepath.Join(dir, "alipay_public_key.pem"),
				WxMerchantPrivate: filepath.Join(dir, "wxpay_apiclient_key.pem"),
				WxAPIv3Key:        filepath.Join(dir, "wxpay_apiv3_key"),
				WxPublic:          filepath.Join(dir, "wxpay_pub_key.pem"),
			}
			if err := os.WriteFile(tt.file(f), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Providers(c, nil)
			if err == nil {
				t.Fatal("Providers succeeded")
			}
			if !hasKeyError(err, tt.wantKey, tt.wantMsg) {
				t.Fatalf("error %q does not name %q with %q", err, tt.wantKey, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "MII") || strings.Contains(err.Error(), k.WxAPIv3Key) {
				t.Fatalf("error leaks key material: %v", err)
			}
		})
	}
}

func TestKeysMatch(t *testing.T) {
	k := simkeys.Get(t)
	priv, err := ParsePrivateKeyPEM(paysim.PrivatePEM(k.AlipayApp), true)
	if err != nil {
		t.Fatal(err)
	}
	if !KeysMatch(priv, &k.AlipayApp.PublicKey) {
		t.Error("matching pair reported as mismatched")
	}
	if KeysMatch(priv, &k.WxMerchant.PublicKey) {
		t.Error("different keys reported as a pair")
	}
	var _ *rsa.PublicKey = &k.AlipayApp.PublicKey
}

// garbagePEM is a PRIVATE KEY block whose content is not a key. It is built
// at run time so that no key-shaped text is committed.
var garbagePEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE " + "KEY", Bytes: []byte{0, 0, 0}}))

// hasKeyError reports whether err (possibly joined) holds a *config.Error
// for key whose text contains msg.
func hasKeyError(err error, key, msg string) bool {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	return slices.ContainsFunc(errs, func(e error) bool {
		var ce *config.Error
		return errors.As(e, &ce) && ce.Key == key && strings.Contains(ce.Error(), msg)
	})
}
