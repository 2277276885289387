package main

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kioskpay/kioskpay/payment/paysim"
)

// keysFileName holds both sides' key material. The daemon never reads it:
// it has the provider private keys, which only the simulator may hold.
const keysFileName = "paysim-keys.json"

type keysFile struct {
	AlipayAppID    string `json:"alipay_app_id"`
	AlipayApp      string `json:"alipay_app_private_key"`
	AlipayPlatform string `json:"alipay_platform_private_key"`
	WxAppID        string `json:"wx_appid"`
	WxMchID        string `json:"wx_mchid"`
	WxCertSerial   string `json:"wx_cert_serial"`
	WxMerchant     string `json:"wx_merchant_private_key"`
	WxPlatform     string `json:"wx_platform_private_key"`
	WxPublicKeyID  string `json:"wx_public_key_id"`
	WxAPIv3Key     string `json:"wx_apiv3_key"`
}

// loadOrGenerateKeys returns the keys saved in dir, or new ones it saves
// there. loaded reports which.
func loadOrGenerateKeys(dir string) (k *paysim.Keys, loaded bool, err error) {
	path := filepath.Join(dir, keysFileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, err := decodeKeys(b)
		if err != nil {
			return nil, false, fmt.Errorf("load %s: %w (delete it to generate new keys)", path, err)
		}
		return k, true, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("load keys: %w", err)
	}
	if k, err = paysim.GenerateKeys(); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("save keys: %w", err)
	}
	b, err = json.MarshalIndent(keysFile{
		AlipayAppID:    k.AlipayAppID,
		AlipayApp:      paysim.PrivatePEM(k.AlipayApp),
		AlipayPlatform: paysim.PrivatePEM(k.AlipayPlatform),
		WxAppID:        k.WxAppID,
		WxMchID:        k.WxMchID,
		WxCertSerial:   k.WxCertSerial,
		WxMerchant:     paysim.PrivatePEM(k.WxMerchant),
		WxPlatform:     paysim.PrivatePEM(k.WxPlatform),
		WxPublicKeyID:  k.WxPublicKeyID,
		WxAPIv3Key:     k.WxAPIv3Key,
	}, "", "  ")
	if err != nil {
		return nil, false, err
	}
	// Write then rename, so a crash never leaves a half file that blocks
	// the next start.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return nil, false, fmt.Errorf("save keys: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, false, fmt.Errorf("save keys: %w", err)
	}
	return k, false, nil
}

func decodeKeys(b []byte) (*paysim.Keys, error) {
	var f keysFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	k := &paysim.Keys{
		AlipayAppID:   f.AlipayAppID,
		WxAppID:       f.WxAppID,
		WxMchID:       f.WxMchID,
		WxCertSerial:  f.WxCertSerial,
		WxPublicKeyID: f.WxPublicKeyID,
		WxAPIv3Key:    f.WxAPIv3Key,
	}
	for _, p := range []struct {
		name string
		pem  string
		dst  **rsa.PrivateKey
	}{
		{"alipay_app_private_key", f.AlipayApp, &k.AlipayApp},
		{"alipay_platform_private_key", f.AlipayPlatform, &k.AlipayPlatform},
		{"wx_merchant_private_key", f.WxMerchant, &k.WxMerchant},
		{"wx_platform_private_key", f.WxPlatform, &k.WxPlatform},
	} {
		key, err := parsePrivate(p.pem)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		*p.dst = key
	}
	for name, v := range map[string]string{"alipay_app_id": k.AlipayAppID, "wx_appid": k.WxAppID, "wx_mchid": k.WxMchID,
		"wx_cert_serial": k.WxCertSerial, "wx_public_key_id": k.WxPublicKeyID} {
		if v == "" {
			return nil, fmt.Errorf("%s is empty", name)
		}
	}
	if len(k.WxAPIv3Key) != 32 {
		return nil, errors.New("wx_apiv3_key must be 32 bytes")
	}
	return k, nil
}

func parsePrivate(s string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PKCS#8 PEM private key")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}
