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
	return daemonConfig("# Written by paysim -keys: a daemon config whose providers are this simulator.",
		stateDir, "", k.merchants(f, baseURL)+"\n")
}

// daemonConfig is device sim-1's config, local keys or gateway: head is the
// comment on top, backend a line for [payment], accounts the tables that
// say where the merchant accounts are.
func daemonConfig(head, stateDir, backend, accounts string) string {
	return fmt.Sprintf(`%s
device_id = "sim-1"
state_dir = %s

[mqtt]
url = "tcp://127.0.0.1:1883"
topic_prefix = "kiosk"

[payment]
%sprovider = "any"
expire = "5m"
max_fee = 100000
poll = "2s"

%s
[display]
outputs = ["web"]
web_listen = "127.0.0.1:8088"
locale = "zh"

[clock]
sync_check = "none"
`, head, strconv.Quote(stateDir), backend, accounts)
}

// merchants renders the [merchants.default] tables of the simulator's
// accounts: the daemon's with local keys, and paygate's.
func (k *Keys) merchants(f KeyFiles, baseURL string) string {
	q := strconv.Quote
	return fmt.Sprintf(`[merchants.default.wxpay]
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
gateway = %s`,
		q(k.WxAppID), q(k.WxMchID), q(k.WxCertSerial), q(f.WxMerchantPrivate), q(f.WxAPIv3Key),
		q(k.WxPublicKeyID), q(f.WxPublic), q(baseURL),
		q(k.AlipayAppID), q(f.AlipayAppPrivate), q(f.AlipayPublic), q(baseURL+"/gateway.do"))
}

// SimPrefix is the out_trade_no prefix paygate.toml gives device sim-1:
// its order numbers must start with it.
const SimPrefix = "_S1_"

// GatewayConfig renders paygate.toml: the simulator's merchant accounts,
// the broker at 127.0.0.1:1883, notifications on notifyListen, the audit
// log in dir, and device sim-1's prefix (docs/contract.md §7).
func (k *Keys) GatewayConfig(f KeyFiles, baseURL, dir, notifyListen string) string {
	q := strconv.Quote
	return fmt.Sprintf(`# Written by paysim -keys: paygate holding the simulator's merchant keys.
[mqtt]
url = "tcp://127.0.0.1:1883"
topic_prefix = "kiosk"
client_id = "paygate"

[notify]
listen = %s
public_url = %s

[audit]
file = %s

[policy.default]
max_fee = 100000
refund_window = "24h"

# Device sim-1's order numbers start with _S1_ (derived: sim_11__).
[policy.devices.sim-1]
prefix = "S1"

%s

[clock]
sync_check = "none"
`, q(notifyListen), q("http://"+notifyListen), q(filepath.Join(dir, "paygate-audit.jsonl")), k.merchants(f, baseURL))
}

// GatewayDaemonConfig renders kioskpayd-gateway.toml: device sim-1 with
// payment.backend = "gateway" and no merchant key files.
func GatewayDaemonConfig(stateDir string) string {
	return daemonConfig(`# Written by paysim -keys: a daemon whose merchant keys are at paygate
# (run paygate -config paygate.toml beside it). Order numbers must start
# with `+SimPrefix+`, the prefix paygate.toml gives sim-1.`,
		stateDir, "backend = \"gateway\"\n", "[gateway]\ntimeout = \"10s\"\n")
}

// DefaultGatewayNotifyListen is where paygate.toml's paygate receives
// notifications.
const DefaultGatewayNotifyListen = "127.0.0.1:8089"

// WriteDaemonFiles writes the key files, DIR/kioskpayd.toml, and for the
// gateway shape DIR/paygate.toml and DIR/kioskpayd-gateway.toml
// (docs/contract.md §7); it returns kioskpayd.toml's path.
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
	for name, content := range map[string]string{
		"kioskpayd.toml":         k.DaemonConfig(f, baseURL, filepath.Join(abs, "state")),
		"paygate.toml":           k.GatewayConfig(f, baseURL, abs, DefaultGatewayNotifyListen),
		"kioskpayd-gateway.toml": GatewayDaemonConfig(filepath.Join(abs, "state-gateway")),
	} {
		if err := os.WriteFile(filepath.Join(abs, name), []byte(content), 0o600); err != nil {
			return "", fmt.Errorf("write daemon config: %w", err)
		}
	}
	return path, nil
}
