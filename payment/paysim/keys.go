package paysim

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
)

// Keys is the key material of one simulated merchant at both providers. The
// simulator holds both sides: it verifies requests with the merchant's public
// keys and signs responses and notifications with the providers' private keys.
type Keys struct {
	AlipayAppID    string
	AlipayApp      *rsa.PrivateKey // the merchant's application key (daemon signs)
	AlipayPlatform *rsa.PrivateKey // Alipay's key (simulator signs)

	WxAppID       string
	WxMchID       string
	WxCertSerial  string          // serial of the merchant API certificate
	WxMerchant    *rsa.PrivateKey // merchant API key (daemon signs)
	WxPlatform    *rsa.PrivateKey // WeChat Pay platform key (simulator signs)
	WxPublicKeyID string          // PUB_KEY_ID_… of WxPlatform's public key
	WxAPIv3Key    string          // 32 ASCII bytes, AES-256-GCM key for notifications
}

// GenerateKeys makes fresh key material. RSA-2048 generation takes a moment;
// tests share one Keys per package.
func GenerateKeys() (*Keys, error) {
	gen := func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }
	k := &Keys{
		AlipayAppID:   "2021000000000001",
		WxAppID:       "wxd678efh567hg6787",
		WxMchID:       "1900000109",
		WxPublicKeyID: "PUB_KEY_ID_0000000000000024101100397200000006",
	}
	var err error
	for _, p := range []**rsa.PrivateKey{&k.AlipayApp, &k.AlipayPlatform, &k.WxMerchant, &k.WxPlatform} {
		if *p, err = gen(); err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	k.WxCertSerial = strings.ToUpper(serial.Text(16))
	k.WxAPIv3Key = RandomString(Alphanumeric, 32)
	return k, nil
}

// SignSHA256 is the signature both providers use (SHA256withRSA, PKCS #1
// v1.5: Alipay's RSA2, WeChat's WECHATPAY2-SHA256-RSA2048) of msg, in
// base64.
func SignSHA256(key *rsa.PrivateKey, msg []byte) string {
	sum := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err) // only fails for a broken key
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// VerifySHA256 checks a base64 SignSHA256 signature of msg.
func VerifySHA256(key *rsa.PublicKey, msg []byte, sigBase64 string) error {
	sig, err := base64.StdEncoding.DecodeString(sigBase64)
	if err != nil {
		return fmt.Errorf("signature not base64: %w", err)
	}
	sum := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	return nil
}

// PrivatePEM encodes a private key as PKCS#8 PEM ("PRIVATE KEY"), the form
// both SDKs load (wechatpay-go refuses PKCS#1).
func PrivatePEM(k *rsa.PrivateKey) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // cannot fail for an RSA key
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// PublicPEM encodes a public key as PKIX PEM ("PUBLIC KEY").
func PublicPEM(k *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// KeyFiles are the paths WriteFiles wrote, as a daemon config names them.
type KeyFiles struct {
	AlipayAppPrivate  string
	AlipayPublic      string
	WxMerchantPrivate string
	WxAPIv3Key        string
	WxPublic          string
}

// WriteFiles writes the merchant-side key files a daemon needs into dir,
// each with mode 0600.
func (k *Keys) WriteFiles(dir string) (KeyFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return KeyFiles{}, fmt.Errorf("write keys: %w", err)
	}
	f := KeyFiles{
		AlipayAppPrivate:  filepath.Join(dir, "alipay_app_private_key.pem"),
		AlipayPublic:      filepath.Join(dir, "alipay_public_key.pem"),
		WxMerchantPrivate: filepath.Join(dir, "wxpay_apiclient_key.pem"),
		WxAPIv3Key:        filepath.Join(dir, "wxpay_apiv3_key"),
		WxPublic:          filepath.Join(dir, "wxpay_pub_key.pem"),
	}
	for path, content := range map[string]string{
		f.AlipayAppPrivate:  PrivatePEM(k.AlipayApp),
		f.AlipayPublic:      PublicPEM(&k.AlipayPlatform.PublicKey),
		f.WxMerchantPrivate: PrivatePEM(k.WxMerchant),
		f.WxAPIv3Key:        k.WxAPIv3Key,
		f.WxPublic:          PublicPEM(&k.WxPlatform.PublicKey),
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return KeyFiles{}, fmt.Errorf("write keys: %w", err)
		}
		// WriteFile keeps the mode of an existing file; force it.
		if err := os.Chmod(path, 0o600); err != nil {
			return KeyFiles{}, fmt.Errorf("write keys: %w", err)
		}
	}
	return f, nil
}
