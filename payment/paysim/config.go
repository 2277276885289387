package paysim

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// DaemonConfig renders a complete kioskpayd.toml that uses the key files in
// f and points both providers at the simulator at baseURL (docs/contract.md §7).
func (k *Keys) DaemonConfig(f KeyFiles, baseURL, stateDir string) string {
	q := strconv.Quote
	return fmt.Sprintf(`# Written by paysim -keys: a daemon config whose providers are this simulator.
device_id = "sim-1"
state_dir = %s

[mqtt]
url = "tcp://127.0.0.1:1883"
topic_prefix = "kiosk"

[payment]
provider = "any"
expire = "5m"
max_fee = 100000
poll = "2s"

[merchants.default.wxpay]
appid = %s
mchid = %s
cert_serial = %s
private_key_file = %s
apiv3_key_file = %s
public_key_id = %s
public_key_file = %s
api_base = %s

[merchants.default.alipay]
app_id = %s
private_key_file = %s
alipay_public_key_file = %s
gateway = %s

[display]
outputs = ["web"]
web_listen = "127.0.0.1:8088"
locale = "zh"

[clock]
sync_check = "none"
`, q(stateDir),
		q(k.WxAppID), q(k.WxMchID), q(k.WxCertSerial), q(f.WxMerchantPrivate), q(f.WxAPIv3Key),
		q(k.WxPublicKeyID), q(f.WxPublic), q(baseURL),
		q(k.AlipayAppID), q(f.AlipayAppPrivate), q(f.AlipayPublic), q(baseURL+"/gateway.do"))
}

// WriteDaemonFiles writes the key files and DIR/kioskpayd.toml (docs/contract.md §7) and
// returns the config's path.
func (k *Keys) WriteDaemonFiles(dir, baseURL string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("write daemon files: %w", err)
	}
	f, err := k.WriteFiles(abs)
	if err != nil {
		return "", err
	}
	path := filepath.Join(abs, "kioskpayd.toml")
	if err := os.WriteFile(path, []byte(k.DaemonConfig(f, baseURL, filepath.Join(abs, "state"))), 0o600); err != nil {
		return "", fmt.Errorf("write daemon config: %w", err)
	}
	return path, nil
}
