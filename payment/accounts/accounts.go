// Package accounts builds a configuration's merchant accounts: one
// payment.Provider per [merchants.<pid>.<provider>] table, from its key
// files, through the provider adapters. The daemon (assemble) and paygate
// both build theirs here; it links the provider SDKs and nothing of the
// daemon.
package accounts

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/alipay"
	"github.com/kioskpay/kioskpay/payment/wxpay"
)

// PollOnlyNotifyURL is the notify_url given to WeChat Pay when
// payment.notify_url is empty: WeChat requires one on every order, and a
// name under the reserved .invalid domain can never receive anything, so
// payment is detected by polling alone.
const PollOnlyNotifyURL = "https://notify.invalid/kioskpay/poll-only"

// Providers reads every merchant's key files and builds one
// payment.Provider per configured account, keyed by pid and provider. No
// network I/O happens here. Errors name the merchant's key and file, never
// key material.
func Providers(c *config.Config, logger *slog.Logger) (map[string]map[payment.ProviderName]payment.Provider, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	out := make(map[string]map[payment.ProviderName]payment.Provider, len(c.Merchants))
	var errs []error
	for _, pid := range slices.Sorted(maps.Keys(c.Merchants)) {
		m := c.Merchants[pid]
		accounts := map[payment.ProviderName]payment.Provider{}
		if w := m.WxPay; w != nil {
			p, err := wxpayProvider(c, pid, w, logger)
			if err != nil {
				errs = append(errs, err)
			} else {
				accounts[payment.WxPay] = p
			}
		}
		if a := m.Alipay; a != nil {
			p, err := alipayProvider(pid, a, logger)
			if err != nil {
				errs = append(errs, err)
			} else {
				accounts[payment.Alipay] = p
			}
		}
		out[pid] = accounts
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func wxpayProvider(c *config.Config, pid string, w *config.WxPayMerchant, logger *slog.Logger) (payment.Provider, error) {
	k := "merchants." + pid + ".wxpay."
	priv, err := config.ReadSecret(k+"private_key_file", w.PrivateKeyFile)
	if err != nil {
		return nil, err
	}
	if err := CheckPrivateKeyPEM(priv, true); err != nil {
		return nil, &config.Error{Key: k + "private_key_file", Msg: fmt.Sprintf("file %s: %v", w.PrivateKeyFile, err)}
	}
	v3, err := config.ReadSecret(k+"apiv3_key_file", w.APIv3KeyFile)
	if err != nil {
		return nil, err
	}
	if len(v3) != 32 {
		return nil, &config.Error{Key: k + "apiv3_key_file", Msg: fmt.Sprintf("file %s: the APIv3 key must be 32 bytes, got %d", w.APIv3KeyFile, len(v3))}
	}
	pub, err := config.ReadSecret(k+"public_key_file", w.PublicKeyFile)
	if err != nil {
		return nil, err
	}
	if _, err := ParsePublicKeyPEM(pub); err != nil {
		return nil, &config.Error{Key: k + "public_key_file", Msg: fmt.Sprintf("file %s: %v", w.PublicKeyFile, err)}
	}
	notify := PollOnlyNotifyURL
	if c.Payment.NotifyURL != "" {
		notify = c.NotifyURL(payment.WxPay)
	}
	p, err := wxpay.New(wxpay.Config{
		AppID: w.AppID, MchID: w.MchID, CertSerial: w.CertSerial,
		PrivateKeyPEM: priv, APIv3Key: v3,
		PublicKeyID: w.PublicKeyID, PublicKeyPEM: pub,
		APIBase:   w.APIBase,
		NotifyURL: notify,
		Logger:    logger.With("pid", pid),
	})
	if err != nil {
		return nil, &config.Error{Key: "merchants." + pid + ".wxpay", Msg: err.Error()}
	}
	return p, nil
}

func alipayProvider(pid string, a *config.AlipayMerchant, logger *slog.Logger) (payment.Provider, error) {
	k := "merchants." + pid + ".alipay."
	priv, err := config.ReadSecret(k+"private_key_file", a.PrivateKeyFile)
	if err != nil {
		return nil, err
	}
	if err := CheckPrivateKeyPEM(priv, false); err != nil {
		return nil, &config.Error{Key: k + "private_key_file", Msg: fmt.Sprintf("file %s: %v", a.PrivateKeyFile, err)}
	}
	pub, err := config.ReadSecret(k+"alipay_public_key_file", a.AlipayPublicKeyFile)
	if err != nil {
		return nil, err
	}
	if _, err := ParsePublicKeyPEM(pub); err != nil {
		return nil, &config.Error{Key: k + "alipay_public_key_file", Msg: fmt.Sprintf("file %s: %v", a.AlipayPublicKeyFile, err)}
	}
	p, err := alipay.New(alipay.Config{
		AppID: a.AppID, PrivateKeyPEM: priv, AlipayPublicKeyPEM: pub,
		Gateway: a.Gateway,
		Logger:  logger.With("pid", pid),
	})
	if err != nil {
		return nil, &config.Error{Key: "merchants." + pid + ".alipay", Msg: err.Error()}
	}
	return p, nil
}

// CheckPrivateKeyPEM checks that s is a PEM private key: PKCS#8, or, when
// pkcs8Only is false, PKCS#1 too (Alipay accepts both; the WeChat Pay SDK
// only PKCS#8). Errors never include key material.
func CheckPrivateKeyPEM(s string, pkcs8Only bool) error {
	_, err := ParsePrivateKeyPEM(s, pkcs8Only)
	return err
}

// ParsePrivateKeyPEM parses a PEM private key (see CheckPrivateKeyPEM).
func ParsePrivateKeyPEM(s string, pkcs8Only bool) (crypto.Signer, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no PEM block; want a PEM file with a PRIVATE KEY block (PKCS#8)")
	}
	switch b.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, errors.New("not a valid PKCS#8 private key")
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("unsupported private key type")
		}
		return signer, nil
	case "RSA PRIVATE KEY":
		if pkcs8Only {
			return nil, errors.New("PKCS#1 (BEGIN RSA PRIVATE KEY) key; WeChat Pay needs PKCS#8: openssl pkcs8 -topk8 -nocrypt")
		}
		k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
		if err != nil {
			return nil, errors.New("not a valid PKCS#1 RSA private key")
		}
		return k, nil
	case "EC PRIVATE KEY":
		if pkcs8Only {
			return nil, errors.New("SEC 1 EC key; want PKCS#8")
		}
		k, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, errors.New("not a valid EC private key")
		}
		return k, nil
	}
	return nil, fmt.Errorf("PEM block is %q, want PRIVATE KEY", b.Type)
}

// ParsePublicKeyPEM parses a PKIX ("BEGIN PUBLIC KEY") public key.
func ParsePublicKeyPEM(s string) (crypto.PublicKey, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no PEM block; want a -----BEGIN PUBLIC KEY----- file")
	}
	if b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM block is %q, want PUBLIC KEY", b.Type)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, errors.New("not a valid PKIX public key")
	}
	return k, nil
}

// KeysMatch reports whether a private and a public key are one pair.
func KeysMatch(priv crypto.Signer, pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		if e, ok := priv.Public().(equaler); ok {
			return e.Equal(pub)
		}
	}
	return false
}

// CertificateExpiry reports when a PEM certificate file's first
// certificate stops being valid, for doctor's warnings.
func CertificateExpiry(pemText string) (time.Time, error) {
	b, _ := pem.Decode([]byte(pemText))
	if b == nil || b.Type != "CERTIFICATE" {
		return time.Time{}, errors.New("no CERTIFICATE PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return time.Time{}, errors.New("not a valid X.509 certificate")
	}
	return c.NotAfter, nil
}
