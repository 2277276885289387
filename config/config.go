// Package config loads and validates kioskpayd's TOML configuration (docs/contract.md §2).
//
// Loading is strict: unknown keys are errors, every value is range-checked,
// and every error names the key it is about, so an operator can fix a
// config from the message alone. The package holds file paths, never
// secrets: key material is read by whoever needs it (see Providers) and is
// never logged.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/device/unlock"
	unlockexec "github.com/kioskpay/kioskpay/device/unlock/exec"
	"github.com/kioskpay/kioskpay/device/unlock/gpio/gpioconf"
	"github.com/kioskpay/kioskpay/device/unlock/serial/serialconf"
	"github.com/kioskpay/kioskpay/display/fbgeom"
	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
	"github.com/kioskpay/kioskpay/payment"
)

// Config is a loaded, validated daemon configuration.
type Config struct {
	DeviceID string `toml:"device_id"`
	StateDir string `toml:"state_dir"`
	// RetentionDays is how long finished orders stay in the store (default
	// 90); an order whose result is not yet acknowledged is always kept.
	RetentionDays int                 `toml:"retention_days"`
	MQTT          MQTT                `toml:"mqtt"`
	Payment       Payment             `toml:"payment"`
	Gateway       Gateway             `toml:"gateway"`
	Merchants     map[string]Merchant `toml:"merchants"`
	Display       Display             `toml:"display"`
	Unlock        Unlock              `toml:"unlock"`
	Clock         Clock               `toml:"clock"`
	// Catalog maps an order type to the only total_fee allowed for it;
	// empty means any type at any fee up to max_fee.
	Catalog map[string]payment.Fen `toml:"catalog"`
}

// MQTT is the [mqtt] table. Exactly one of URL and URLs names the
// broker(s).
type MQTT struct {
	URL string `toml:"url"`
	// URLs are the nodes of a broker cluster that shares sessions and
	// retained messages, tried in order on every (re)connect.
	URLs         []string `toml:"urls"`
	TopicPrefix  string   `toml:"topic_prefix"`
	ClientID     string   `toml:"client_id"`
	Username     string   `toml:"username"`
	PasswordFile string   `toml:"password_file"`
	CAFile       string   `toml:"ca_file"`
	CertFile     string   `toml:"cert_file"`
	KeyFile      string   `toml:"key_file"`
}

// Brokers returns the broker URLs to connect to: URLs, or URL alone.
func (m MQTT) Brokers() []string {
	if len(m.URLs) > 0 {
		return m.URLs
	}
	if m.URL == "" {
		return nil
	}
	return []string{m.URL}
}

// Payment is the [payment] table.
type Payment struct {
	// Provider is "wxpay", "alipay" or "any" (both QR codes).
	Provider  payment.ProviderName `toml:"provider"`
	Expire    Duration             `toml:"expire"`
	MaxFee    payment.Fen          `toml:"max_fee"`
	Poll      Duration             `toml:"poll"`
	NotifyURL string               `toml:"notify_url"`
	// Backend says where the merchant keys are: on the device
	// ([merchants]) or at paygate ([gateway]).
	Backend Backend `toml:"backend"`
}

// Merchant is one [merchants.<pid>] table: the accounts of one merchant at
// each provider. A nil pointer means that provider is not configured.
type Merchant struct {
	WxPay  *WxPayMerchant  `toml:"wxpay"`
	Alipay *AlipayMerchant `toml:"alipay"`
}

// WxPayMerchant is a [merchants.<pid>.wxpay] table (public-key mode).
type WxPayMerchant struct {
	AppID          string `toml:"appid"`
	MchID          string `toml:"mchid"`
	CertSerial     string `toml:"cert_serial"`
	PrivateKeyFile string `toml:"private_key_file"`
	APIv3KeyFile   string `toml:"apiv3_key_file"`
	PublicKeyID    string `toml:"public_key_id"`
	PublicKeyFile  string `toml:"public_key_file"`
	APIBase        string `toml:"api_base"`
}

// AlipayMerchant is a [merchants.<pid>.alipay] table.
type AlipayMerchant struct {
	AppID               string `toml:"app_id"`
	PrivateKeyFile      string `toml:"private_key_file"`
	AlipayPublicKeyFile string `toml:"alipay_public_key_file"`
	Gateway             string `toml:"gateway"`
}

// Display is the [display] table.
type Display struct {
	// Outputs is any of fb, png, web, tty.
	Outputs []Output `toml:"outputs"`
	// FBDevice is the framebuffer device.
	FBDevice string `toml:"fb_device"`
	// Rotate turns the picture clockwise by 0, 90, 180 or 270 degrees
	// before it reaches the framebuffer, for panels mounted turned.
	Rotate int `toml:"rotate"`
	// PNGPath is where the png output keeps the current screen.
	PNGPath string `toml:"png_path"`
	// WebListen is the web output's address.
	WebListen string `toml:"web_listen"`
	// FontFile is a TTF, OTF or TTC font with CJK glyphs. Without one,
	// on-screen texts are English in the built-in Go fonts.
	FontFile string `toml:"font_file"`
	Locale   Locale `toml:"locale"`
	// TTYPath is where the tty output writes (default standard output).
	TTYPath string `toml:"tty_path"`
	// FBGeometry overrides what the framebuffer driver reports, for
	// drivers whose ioctls lie and for a plain file standing in for
	// /dev/fb0; zero fields keep the driver's values. With width, height
	// and bits_per_pixel set, FBDevice may be a plain file.
	FBGeometry fbgeom.Geometry `toml:"fb_geometry"`
}

// Unlock is the [unlock] table.
type Unlock struct {
	// Driver is who starts the machine: "mqtt" (a controller acks
	// P/pay/result) or a local driver, "gpio", "serial" or "exec", whose
	// outcome is the ack (package device/unlock). Only the selected
	// driver's table is validated.
	Driver                string   `toml:"driver"`
	AckTimeout            Duration `toml:"ack_timeout"`
	OnNoAck               OnNoAck  `toml:"on_no_ack"`
	ResultKeyFile         string   `toml:"result_key_file"`
	RequireSignedRequests bool     `toml:"require_signed_requests"`

	GPIO   gpioconf.Config   `toml:"gpio"`
	Serial serialconf.Config `toml:"serial"`
	Exec   unlockexec.Config `toml:"exec"`
}

// Local reports whether a local driver (not MQTT) starts the machine.
func (u Unlock) Local() bool { return u.Driver != "" && u.Driver != unlock.DriverMQTT }

// Clock is the [clock] table.
type Clock struct {
	// SyncCheck is "kernel" (trust the clock only while the kernel reports
	// it synchronised) or "none".
	SyncCheck SyncCheck `toml:"sync_check"`
}

// Backend is payment.backend: where the merchant keys are.
type Backend string

// Values of payment.backend.
const (
	BackendLocal   Backend = "local"   // the [merchants] key files on the device
	BackendGateway Backend = "gateway" // paygate holds them; the device calls it ([gateway])
)

// Valid reports whether b is one of the values.
func (b Backend) Valid() bool { return b == BackendLocal || b == BackendGateway }

// OnNoAck is unlock.on_no_ack: what the engine does with a paid order
// whose result the controller never acknowledged.
type OnNoAck string

// Values of unlock.on_no_ack.
const (
	OnNoAckRefund OnNoAck = "refund" // refund the customer: the service was not delivered
	OnNoAckHold   OnNoAck = "hold"   // keep the order paid for the operator to decide
)

// Valid reports whether o is one of the values.
func (o OnNoAck) Valid() bool { return o == OnNoAckRefund || o == OnNoAckHold }

// Locale is display.locale: the language of the on-screen texts.
type Locale string

// Values of display.locale.
const (
	LocaleZH Locale = "zh"
	LocaleEN Locale = "en"
)

// Valid reports whether l is one of the values.
func (l Locale) Valid() bool { return l == LocaleZH || l == LocaleEN }

// Output is one entry of display.outputs.
type Output string

// Values of display.outputs.
const (
	OutputFB  Output = "fb"
	OutputPNG Output = "png"
	OutputWeb Output = "web"
	OutputTTY Output = "tty"
)

// Valid reports whether o is one of the outputs.
func (o Output) Valid() bool {
	switch o {
	case OutputFB, OutputPNG, OutputWeb, OutputTTY:
		return true
	}
	return false
}

// SyncCheck is clock.sync_check.
type SyncCheck string

// Values of clock.sync_check.
const (
	// SyncKernel trusts the clock only while the kernel reports it
	// synchronised.
	SyncKernel SyncCheck = "kernel"
	// SyncNone always trusts the clock (tests, devices with an RTC).
	SyncNone SyncCheck = "none"
)

// Valid reports whether s is one of the values.
func (s SyncCheck) Valid() bool { return s == SyncKernel || s == SyncNone }

// Defaults of every key a file may leave out (docs/contract.md §2). They are
// the one source: Default uses them, and the engine (device.New), the
// display and fleetsim's simulated devices take the same values for what
// their callers leave zero.
const (
	DefaultStateDir                            = "/var/lib/kioskpayd"
	DefaultRetentionDays                       = 90
	DefaultMQTTURL                             = "tcp://127.0.0.1:1883"
	DefaultProvider       payment.ProviderName = contract.ProviderAny
	DefaultExpire                              = 5 * time.Minute
	DefaultMaxFee         payment.Fen          = 100000
	DefaultPoll                                = 2 * time.Second
	DefaultBackend                             = BackendLocal
	DefaultGatewayTimeout                      = 10 * time.Second
	DefaultOutput                              = OutputWeb
	DefaultFBDevice                            = "/dev/fb0"
	DefaultPNGPath                             = "/run/kioskpayd/qr.png"
	DefaultWebListen                           = "127.0.0.1:8088"
	DefaultLocale                              = LocaleZH
	DefaultAckTimeout                          = 30 * time.Second
	DefaultOnNoAck                             = OnNoAckRefund
	DefaultSyncCheck                           = SyncKernel
)

// Duration is a time.Duration written in TOML as a Go duration string
// ("5m", "2s"). Bare integers are refused: "expire = 300" would otherwise
// silently mean 300 ns.
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"30s\" or \"5m\", got %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Error is one problem with a configuration value. Key is the dotted TOML
// key ("payment.expire", "merchants.default.wxpay.mchid").
type Error struct {
	Key string
	Msg string
}

// Error formats the problem as "key: message".
func (e *Error) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return e.Key + ": " + e.Msg
}

// Default returns the configuration that applies to every key a file does
// not set (docs/contract.md §2). DeviceID is empty and must be set.
func Default() *Config {
	return &Config{
		StateDir:      DefaultStateDir,
		RetentionDays: DefaultRetentionDays,
		MQTT: MQTT{
			URL:         DefaultMQTTURL,
			TopicPrefix: contract.DefaultTopicPrefix,
		},
		Payment: Payment{
			Provider: DefaultProvider,
			Expire:   Duration{DefaultExpire},
			MaxFee:   DefaultMaxFee,
			Poll:     Duration{DefaultPoll},
			Backend:  DefaultBackend,
		},
		Gateway: Gateway{Timeout: Duration{DefaultGatewayTimeout}},
		Display: Display{
			Outputs:   []Output{DefaultOutput},
			FBDevice:  DefaultFBDevice,
			PNGPath:   DefaultPNGPath,
			WebListen: DefaultWebListen,
			Locale:    DefaultLocale,
		},
		Unlock: Unlock{
			Driver:     unlock.DriverMQTT,
			AckTimeout: Duration{DefaultAckTimeout},
			OnNoAck:    DefaultOnNoAck,
			GPIO:       gpioconf.DefaultConfig(),
			Serial:     serialconf.DefaultConfig(),
			Exec:       unlockexec.DefaultConfig(),
		},
		Clock: Clock{SyncCheck: DefaultSyncCheck},
	}
}

// Load reads, parses and validates the file at path, then checks the files
// it names: each must exist, and key files must not be readable by group or
// others. Relative paths in the file are resolved against its directory.
// Every error describes what is wrong and names the key; several problems
// are joined, one per line.
func Load(path string) (*Config, error) {
	c, errs := Check(path)
	if len(errs) > 0 {
		return nil, fmt.Errorf("config %s: %w", path, errors.Join(errs...))
	}
	return c, nil
}

// Check loads the file at path as Load does but does not stop at a
// problem: it returns every problem it finds (each an *Error naming its
// key, where there is one) together with the configuration as far as it
// could be read, defaults standing in for what could not. The
// configuration is nil only when the file cannot be read or decoded at
// all. kioskpayd doctor uses it to report everything at once and to go on
// with the checks that do not depend on a broken key.
func Check(path string) (*Config, []error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{fmt.Errorf("read config: %w", err)}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, []error{fmt.Errorf("read config: %w", err)}
	}
	c, errs := parse(data, filepath.Dir(abs))
	if c == nil {
		return nil, errs
	}
	return c, append(errs, splitErrors(c.CheckFiles())...)
}

// Parse decodes and validates a configuration without touching the file
// system. Relative file paths are made absolute against dir (unless dir is
// empty). Defaults fill every key the data does not set.
func Parse(data []byte, dir string) (*Config, error) {
	c, errs := parse(data, dir)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// parse is Parse that keeps the configuration along with its problems;
// the configuration is nil when the data cannot be decoded.
func parse(data []byte, dir string) (*Config, []error) {
	// Syntax first: the parser's "last key" for a syntax error is just the
	// key before the mistake, which would mislead if reported as the culprit.
	var syntax map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&syntax); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, []error{&Error{Msg: fmt.Sprintf("TOML syntax error at line %d, column %d: %s", pe.Position.Line, pe.Position.Col, pe.Message)}}
		}
		return nil, []error{&Error{Msg: "TOML syntax error: " + err.Error()}}
	}
	c := Default()
	// The defaults hold a slice; a file that sets outputs must replace it,
	// not merge into it.
	c.Display.Outputs = nil
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, []error{decodeError(err)}
	}
	if !md.IsDefined("display", "outputs") {
		c.Display.Outputs = []Output{DefaultOutput}
	}
	if md.IsDefined("mqtt", "urls") && !md.IsDefined("mqtt", "url") {
		// urls replaces the default url; both set is an error (Validate).
		c.MQTT.URL = ""
	}
	errs := unknownKeys(md.Undecoded())
	if c.MQTT.ClientID == "" && c.DeviceID != "" {
		c.MQTT.ClientID = "kioskpayd-" + c.DeviceID
	}
	c.ResolvePaths(dir)
	return c, append(errs, splitErrors(c.Validate())...)
}

// ResolvePaths makes every relative file path of the configuration
// absolute against dir (the configuration file's directory); an empty dir
// changes nothing.
func (c *Config) ResolvePaths(dir string) {
	if dir == "" {
		return
	}
	for _, p := range c.paths() {
		if *p.path != "" && !filepath.IsAbs(*p.path) {
			*p.path = filepath.Join(dir, *p.path)
		}
	}
}

// splitErrors undoes errors.Join.
func splitErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// decodeError turns a TOML decoding error into an *Error naming the key
// when the decoder knows it.
func decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{Key: pe.LastKey, Msg: fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)}
	}
	// Type mismatches are plain errors of the form
	// `toml: line 3 (last key "payment.max_fee"): incompatible types: …`.
	if m := tomlKeyErrRE.FindStringSubmatch(err.Error()); m != nil {
		msg := m[3]
		if m[1] != "" {
			msg = "line " + m[1] + ": " + msg
		}
		return &Error{Key: m[2], Msg: msg}
	}
	return &Error{Msg: "TOML: " + err.Error()}
}

var tomlKeyErrRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

// Validate checks every value, table by table; every problem is an *Error
// naming its key, and all of them are returned (joined), so doctor can list
// them at once. It does not look at the file system.
func (c *Config) Validate() error {
	var p problems
	c.validateTop(&p)
	c.MQTT.validate(&p)
	c.Payment.validate(&p)
	switch c.Payment.Backend {
	case BackendLocal:
		validateMerchants(&p, c.Merchants, c.Payment.Provider)
	case BackendGateway:
		if len(c.Merchants) > 0 {
			p.add("merchants", "must not be set with payment.backend = \"gateway\": paygate holds the merchant keys; list the merchants the device may use in gateway.merchants")
		}
		c.Gateway.validate(&p, c.Payment.Provider)
	}
	c.Display.validate(&p)
	c.Unlock.validate(&p, c.Catalog)
	c.Clock.validate(&p)
	validateCatalog(&p, c.Catalog, c.Payment.MaxFee)
	return errors.Join(p...)
}

// problems collects what the checks of Validate find.
type problems []error

// add records a problem with key.
func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// validateTop checks the keys outside any table.
func (c *Config) validateTop(p *problems) {
	switch {
	case c.DeviceID == "":
		p.add("device_id", "is required")
	case !contract.ValidDeviceID(c.DeviceID):
		p.add("device_id", "must be 1 to 64 characters of A-Z a-z 0-9 _ -, got %q", c.DeviceID)
	}
	if c.StateDir == "" {
		p.add("state_dir", "must not be empty")
	}
	if c.RetentionDays < 1 || c.RetentionDays > 3650 {
		p.add("retention_days", "must be from 1 to 3650 days, got %d", c.RetentionDays)
	}
}

// validate checks the [mqtt] table.
func (m MQTT) validate(p *problems) {
	tlsScheme, brokersOK := m.validateBrokers(p)
	switch tp := m.TopicPrefix; {
	case tp == "":
		p.add("mqtt.topic_prefix", "must not be empty")
	case strings.ContainsAny(tp, "+#\x00"):
		p.add("mqtt.topic_prefix", "must not contain MQTT wildcards (+ #), got %q", tp)
	case strings.HasPrefix(tp, "/") || strings.HasSuffix(tp, "/") || strings.Contains(tp, "//"):
		p.add("mqtt.topic_prefix", "must not start or end with / or contain empty levels, got %q", tp)
	case strings.HasPrefix(tp, "$"):
		p.add("mqtt.topic_prefix", "must not start with $ (reserved for broker topics)")
	}
	if id := m.ClientID; len(id) > 65535 || strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		p.add("mqtt.client_id", "must be printable and shorter than 64 KiB")
	}
	if m.PasswordFile != "" && m.Username == "" {
		p.add("mqtt.password_file", "is set but mqtt.username is empty")
	}
	if (m.CertFile == "") != (m.KeyFile == "") {
		if m.CertFile == "" {
			p.add("mqtt.cert_file", "is required with mqtt.key_file (mutual TLS needs both)")
		} else {
			p.add("mqtt.key_file", "is required with mqtt.cert_file (mutual TLS needs both)")
		}
	}
	if !tlsScheme && brokersOK {
		for key, v := range map[string]string{"mqtt.ca_file": m.CAFile, "mqtt.cert_file": m.CertFile, "mqtt.key_file": m.KeyFile} {
			if v == "" {
				continue
			}
			if m.URL != "" {
				p.add(key, "is set but mqtt.url %q is not a TLS URL (ssl:// or wss://)", m.URL)
			} else {
				p.add(key, "is set but the brokers in mqtt.urls are not TLS URLs (ssl:// or wss://)")
			}
		}
	}
}

// validate checks the [payment] table.
func (pay Payment) validate(p *problems) {
	if !contract.ValidProvider(string(pay.Provider)) {
		p.add("payment.provider", "must be wxpay, alipay or any, got %q", pay.Provider)
	}
	if e := pay.Expire.Duration; e < contract.MinExpire || e > contract.MaxExpire {
		p.add("payment.expire", "must be from 1m to 2h, got %s", e)
	}
	if pay.MaxFee <= 0 {
		p.add("payment.max_fee", "must be a positive number of fen, got %d", int64(pay.MaxFee))
	}
	if d := pay.Poll.Duration; d < 200*time.Millisecond || d > 5*time.Minute {
		p.add("payment.poll", "must be from 200ms to 5m, got %s", d)
	}
	if !pay.Backend.Valid() {
		p.add("payment.backend", "must be local or gateway, got %q", pay.Backend)
	}
	if pay.NotifyURL != "" {
		if msg := checkHTTPURL(pay.NotifyURL); msg != "" {
			p.add("payment.notify_url", "%s", msg)
		} else if strings.ContainsAny(pay.NotifyURL, "?#") {
			// WeChat Pay refuses notify URLs with a query string.
			p.add("payment.notify_url", "must not have a query string or fragment")
		}
	}
}

// validateMerchants checks the [merchants.<pid>] tables: each merchant has
// the accounts payment.provider needs, each account every key.
func validateMerchants(p *problems, merchants map[string]Merchant, provider payment.ProviderName) {
	if len(merchants) == 0 {
		p.add("merchants", "at least one merchant is required, e.g. [merchants.default.wxpay] or [merchants.default.alipay]")
	}
	for _, pid := range sortedKeys(merchants) {
		m := merchants[pid]
		base := "merchants." + pid
		if !contract.ValidPID(pid) {
			p.add(base, "merchant id must be 1 to 64 characters of A-Z a-z 0-9 _ -")
		}
		if m.WxPay == nil && m.Alipay == nil {
			p.add(base, "configures no provider; add a wxpay or alipay table")
		}
		need := func(name payment.ProviderName, present bool) {
			if !present && (provider == name || provider == contract.ProviderAny) {
				p.add(base+"."+string(name), "is required because payment.provider is %q", provider)
			}
		}
		need(payment.WxPay, m.WxPay != nil)
		need(payment.Alipay, m.Alipay != nil)
		if m.WxPay != nil {
			m.WxPay.validate(p, base+".wxpay.")
		}
		if m.Alipay != nil {
			m.Alipay.validate(p, base+".alipay.")
		}
	}
}

// validate checks a [merchants.<pid>.wxpay] table; k is its key prefix.
func (w *WxPayMerchant) validate(p *problems, k string) {
	for key, v := range map[string]string{
		"appid": w.AppID, "mchid": w.MchID, "cert_serial": w.CertSerial,
		"private_key_file": w.PrivateKeyFile, "apiv3_key_file": w.APIv3KeyFile,
		"public_key_id": w.PublicKeyID, "public_key_file": w.PublicKeyFile,
	} {
		if v == "" {
			p.add(k+key, "is required")
		}
	}
	if w.PublicKeyID != "" && !strings.HasPrefix(w.PublicKeyID, "PUB_KEY_ID_") {
		p.add(k+"public_key_id", "must start with PUB_KEY_ID_ (WeChat Pay public-key mode)")
	}
	if w.APIBase != "" {
		if msg := checkHTTPURL(w.APIBase); msg != "" {
			p.add(k+"api_base", "%s", msg)
		}
	}
}

// validate checks a [merchants.<pid>.alipay] table; k is its key prefix.
func (a *AlipayMerchant) validate(p *problems, k string) {
	for key, v := range map[string]string{
		"app_id": a.AppID, "private_key_file": a.PrivateKeyFile, "alipay_public_key_file": a.AlipayPublicKeyFile,
	} {
		if v == "" {
			p.add(k+key, "is required")
		}
	}
	if a.Gateway != "" {
		if msg := checkHTTPURL(a.Gateway); msg != "" {
			p.add(k+"gateway", "%s", msg)
		}
	}
}

// validate checks the [display] table.
func (d Display) validate(p *problems) {
	seen := map[Output]bool{}
	for _, o := range d.Outputs {
		if !o.Valid() {
			p.add("display.outputs", "unknown output %q; want any of fb, png, web, tty", o)
		}
		if seen[o] {
			p.add("display.outputs", "lists %q twice", o)
		}
		seen[o] = true
	}
	switch d.Rotate {
	case 0, 90, 180, 270:
	default:
		p.add("display.rotate", "must be 0, 90, 180 or 270, got %d", d.Rotate)
	}
	if seen[OutputFB] && d.FBDevice == "" {
		p.add("display.fb_device", "must not be empty when outputs has fb")
	}
	if seen[OutputPNG] && d.PNGPath == "" {
		p.add("display.png_path", "must not be empty when outputs has png")
	}
	if seen[OutputWeb] {
		if _, port, err := net.SplitHostPort(d.WebListen); err != nil || port == "" {
			p.add("display.web_listen", "must be host:port, got %q", d.WebListen)
		}
	}
	if g := d.FBGeometry; g.Width != 0 && g.Height != 0 && g.BitsPerPixel != 0 {
		// A complete override is the whole truth about the panel: check it
		// now. A partial one is merged with the driver's answer and checked
		// when the framebuffer is opened.
		if _, err := g.Standalone(); err != nil {
			p.add("display.fb_geometry", "%v", err)
		}
	}
	if !d.Locale.Valid() {
		p.add("display.locale", "must be zh or en, got %q", d.Locale)
	}
}

// validate checks the [unlock] table and the selected driver's table; the
// gpio tables must cover catalog.
func (u Unlock) validate(p *problems, catalog map[string]payment.Fen) {
	if t := u.AckTimeout.Duration; t < time.Second || t > time.Hour {
		p.add("unlock.ack_timeout", "must be from 1s to 1h, got %s", t)
	}
	if !u.OnNoAck.Valid() {
		p.add("unlock.on_no_ack", "must be refund or hold, got %q", u.OnNoAck)
	}
	if u.RequireSignedRequests && u.ResultKeyFile == "" {
		p.add("unlock.require_signed_requests", "needs unlock.result_key_file (requests are checked with that key)")
	}
	u.validateDriver(p, catalog)
}

// validate checks the [clock] table.
func (k Clock) validate(p *problems) {
	if !k.SyncCheck.Valid() {
		p.add("clock.sync_check", "must be kernel or none, got %q", k.SyncCheck)
	}
}

// validateCatalog checks the [catalog] table against payment.max_fee.
func validateCatalog(p *problems, catalog map[string]payment.Fen, maxFee payment.Fen) {
	for _, typ := range sortedKeys(catalog) {
		fee := catalog[typ]
		key := "catalog." + typ
		if !contract.ValidOrderType(typ) {
			p.add(key, "order type must be 1 to 32 characters of a-z 0-9 _")
		}
		if fee <= 0 {
			p.add(key, "must be a positive number of fen, got %d", int64(fee))
		} else if maxFee > 0 && fee > maxFee {
			p.add(key, "%d fen is above payment.max_fee (%d); no order of this type could be placed", int64(fee), int64(maxFee))
		}
	}
}

// validateBrokers checks mqtt.url or mqtt.urls (exactly one of the two)
// and reports whether the brokers use TLS and whether they are valid.
func (m MQTT) validateBrokers(p *problems) (isTLS, ok bool) {
	switch {
	case m.URL != "" && m.URLs != nil:
		p.add("mqtt.urls", "set either mqtt.url (one broker) or mqtt.urls (the nodes of a cluster), not both")
		return false, false
	case m.URL == "" && m.URLs == nil:
		p.add("mqtt.url", "is required (or mqtt.urls, a list of brokers to fail over between)")
		return false, false
	case m.URL != "":
		isTLS, err := brokerurl.Check(m.URL)
		if err != nil {
			p.add("mqtt.url", "%v", err)
			return false, false
		}
		return isTLS, true
	}
	isTLS, err := brokerurl.CheckList(m.URLs)
	var be *brokerurl.Error
	switch {
	case err == nil:
		return isTLS, true
	case errors.As(err, &be) && be.Index >= 0:
		p.add(fmt.Sprintf("mqtt.urls[%d]", be.Index), "%s", be.Msg)
	case errors.As(err, &be):
		p.add("mqtt.urls", "must list at least one broker URL")
	default:
		p.add("mqtt.urls", "%v", err)
	}
	return false, false
}

func checkHTTPURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Sprintf("must be an http:// or https:// URL, got %q", s)
	}
	if u.Host == "" {
		return fmt.Sprintf("has no host: %q", s)
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// pathRef is a configured file path and the key that sets it.
type pathRef struct {
	key    string
	path   *string
	secret bool // key material: must not be readable by group or others
	dir    bool // a directory, created by the daemon if missing
}

// paths lists every file path the configuration names, in a stable order.
func (c *Config) paths() []pathRef {
	refs := []pathRef{
		{key: "state_dir", path: &c.StateDir, dir: true},
		{key: "mqtt.password_file", path: &c.MQTT.PasswordFile, secret: true},
		{key: "mqtt.ca_file", path: &c.MQTT.CAFile},
		{key: "mqtt.cert_file", path: &c.MQTT.CertFile},
		{key: "mqtt.key_file", path: &c.MQTT.KeyFile, secret: true},
		{key: "display.png_path", path: &c.Display.PNGPath},
		{key: "display.font_file", path: &c.Display.FontFile},
		{key: "unlock.result_key_file", path: &c.Unlock.ResultKeyFile, secret: true},
	}
	for _, pid := range sortedKeys(c.Merchants) {
		m := c.Merchants[pid]
		if w := m.WxPay; w != nil {
			k := "merchants." + pid + ".wxpay."
			refs = append(refs,
				pathRef{key: k + "private_key_file", path: &w.PrivateKeyFile, secret: true},
				pathRef{key: k + "apiv3_key_file", path: &w.APIv3KeyFile, secret: true},
				pathRef{key: k + "public_key_file", path: &w.PublicKeyFile},
			)
		}
		if a := m.Alipay; a != nil {
			k := "merchants." + pid + ".alipay."
			refs = append(refs,
				pathRef{key: k + "private_key_file", path: &a.PrivateKeyFile, secret: true},
				pathRef{key: k + "alipay_public_key_file", path: &a.AlipayPublicKeyFile},
			)
		}
	}
	return refs
}

// inputFiles are the keys whose files the daemon reads at start and which
// must therefore exist. display.png_path is written, state_dir created.
var inputFiles = []string{"mqtt.password_file", "mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file", "display.font_file", "unlock.result_key_file"}

// CheckFiles checks the files the configuration names: the ones the daemon
// reads must be regular files, and key files must not be readable by group
// or others (a leaked merchant key is a leaked till).
func (c *Config) CheckFiles() error {
	var errs []error
	for _, p := range c.paths() {
		if *p.path == "" || p.dir || p.key == "display.png_path" {
			continue
		}
		if !slices.Contains(inputFiles, p.key) && !strings.HasPrefix(p.key, "merchants.") {
			continue
		}
		fi, err := os.Stat(*p.path)
		if err != nil {
			errs = append(errs, &Error{Key: p.key, Msg: fmt.Sprintf("file %s: %v", *p.path, errors.Unwrap(err))})
			continue
		}
		if !fi.Mode().IsRegular() {
			errs = append(errs, &Error{Key: p.key, Msg: fmt.Sprintf("file %s is not a regular file", *p.path)})
			continue
		}
		if p.secret && fi.Mode().Perm()&0o077 != 0 {
			errs = append(errs, &Error{Key: p.key, Msg: fmt.Sprintf("key file %s has mode %04o and is readable by group or others; run chmod 600 %s", *p.path, fi.Mode().Perm(), *p.path)})
		}
	}
	return errors.Join(errs...)
}

// ReadSecret reads a key file named by the configuration and trims
// surrounding whitespace (files written by editors end in a newline). The
// error names the key and the file, never the content.
func ReadSecret(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &Error{Key: key, Msg: fmt.Sprintf("read %s: %v", path, errors.Unwrap(err))}
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", &Error{Key: key, Msg: fmt.Sprintf("file %s is empty", path)}
	}
	return s, nil
}

// Topic returns the topic prefix P = <topic_prefix>/<device_id> (docs/contract.md §3).
func (c *Config) Topic() string { return c.MQTT.TopicPrefix + "/" + c.DeviceID }

// Retention is how long finished orders are kept.
func (c *Config) Retention() time.Duration { return time.Duration(c.RetentionDays) * 24 * time.Hour }

// Limits returns the bounds create requests are checked against.
func (c *Config) Limits() contract.Limits {
	return contract.Limits{MaxFee: c.Payment.MaxFee, DefaultExpire: c.Payment.Expire.Duration}
}

// NotifyURL is the notify_url orders at provider p carry:
// <payment.notify_url>/notify/<device_id>/<provider>, the notifyrelay's
// path; "" when notifications are off.
func (c *Config) NotifyURL(p payment.ProviderName) string {
	return contract.NotifyURL(c.Payment.NotifyURL, c.DeviceID, p)
}
