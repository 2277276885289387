package paygate

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/accounts"
)

// Config is paygate's configuration file (docs/contract.md §2.9).
type Config struct {
	// Replica names this process in the audit log and its MQTT client id
	// (default: the host name and the process id).
	Replica string `toml:"replica"`
	// MQTT is the daemon's [mqtt] table; the client id gets the
	// replica's name appended, since replicas must not share a session.
	MQTT   config.MQTT  `toml:"mqtt"`
	Notify Notify       `toml:"notify"`
	Audit  Audit        `toml:"audit"`
	Policy PolicySet    `toml:"policy"`
	Clock  config.Clock `toml:"clock"`
	// Merchants are the daemon's [merchants] tables, checked the same way.
	Merchants map[string]config.Merchant `toml:"merchants"`

	// accounts holds the checked merchants, for Providers.
	accounts *config.Config
}

// Notify is the [notify] table: the HTTP endpoint for provider
// notifications.
type Notify struct {
	// Listen is the HTTP address; "" serves no notifications (devices
	// then detect payments by polling alone).
	Listen string `toml:"listen"`
	// PublicURL is the base URL providers reach Listen by; orders carry
	// <public_url>/notify/<pid>/<provider>. "" = poll only.
	PublicURL string `toml:"public_url"`
}

// Audit is the [audit] table.
type Audit struct {
	// File is the append-only audit log (JSON lines); rotate it by
	// renaming it and sending paygate SIGHUP.
	File string `toml:"file"`
}

// PolicySet is the [policy] table: the default policy, groups of devices
// matched by name pattern, and single devices.
type PolicySet struct {
	Default Policy `toml:"default"`
	// Groups apply to devices whose id matches one of their patterns
	// (path.Match syntax: "chair-*"); the first group in name order wins.
	Groups map[string]Group `toml:"groups"`
	// Devices override per device id.
	Devices map[string]DevicePolicy `toml:"devices"`
}

// Policy is what a device may do through paygate.
type Policy struct {
	// MaxFee is the largest order total, fen.
	MaxFee payment.Fen `toml:"max_fee"`
	// Catalog maps an order type to its only price; empty allows any type
	// at any fee up to MaxFee.
	Catalog map[string]payment.Fen `toml:"catalog"`
	// RefundWindow is how long after payment the device may refund.
	RefundWindow config.Duration `toml:"refund_window"`
	// MaxRefunds bounds the refunds per order: the device's refund
	// numbers are <out_trade_no>R1 … R<max_refunds>.
	MaxRefunds int `toml:"max_refunds"`
	// Rate and Burst are the device's token bucket (requests per second),
	// per replica.
	Rate  float64 `toml:"rate"`
	Burst int     `toml:"burst"`
}

// Override is a partial Policy: unset keys inherit.
type Override struct {
	MaxFee       *payment.Fen           `toml:"max_fee"`
	Catalog      map[string]payment.Fen `toml:"catalog"`
	RefundWindow *config.Duration       `toml:"refund_window"`
	MaxRefunds   *int                   `toml:"max_refunds"`
	Rate         *float64               `toml:"rate"`
	Burst        *int                   `toml:"burst"`
}

// Group is a [policy.groups.<name>] table.
type Group struct {
	Match []string `toml:"match"`
	Override
}

// DevicePolicy is a [policy.devices.<id>] table.
type DevicePolicy struct {
	// Group puts the device in a group whatever its patterns say.
	Group string `toml:"group"`
	// Prefix replaces the derived out_trade_no prefix (see Prefix).
	Prefix string `toml:"prefix"`
	Override
}

// Defaults of the [policy.default] table.
const (
	DefaultMaxFee       payment.Fen = 100000
	DefaultRefundWindow             = 24 * time.Hour
	DefaultMaxRefunds               = 4
	DefaultRate                     = 10.0
	DefaultBurst                    = 50
)

// DefaultConfig returns the configuration every key a file does not set
// takes.
func DefaultConfig() *Config {
	host, _ := os.Hostname()
	return &Config{
		Replica: fmt.Sprintf("%s-%d", host, os.Getpid()),
		MQTT: config.MQTT{
			URL:         "tcp://127.0.0.1:1883",
			TopicPrefix: "kiosk",
			ClientID:    "paygate",
		},
		Audit: Audit{File: "/var/log/paygate/audit.jsonl"},
		Policy: PolicySet{Default: Policy{
			MaxFee:       DefaultMaxFee,
			RefundWindow: config.Duration{Duration: DefaultRefundWindow},
			MaxRefunds:   DefaultMaxRefunds,
			Rate:         DefaultRate,
			Burst:        DefaultBurst,
		}},
		Clock: config.Clock{SyncCheck: config.SyncKernel},
	}
}

// LoadConfig reads and checks a configuration file; every problem names
// its key.
func LoadConfig(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(data, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

// ParseConfig decodes and validates a configuration; relative paths are
// resolved against dir. The merchants' key files are checked too.
func ParseConfig(data []byte, dir string) (*Config, error) {
	c := DefaultConfig()
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, &config.Error{Msg: "TOML: " + err.Error()}
	}
	if md.IsDefined("mqtt", "urls") && !md.IsDefined("mqtt", "url") {
		c.MQTT.URL = ""
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, &config.Error{Key: k.String(), Msg: "unknown key"})
	}
	for _, p := range []*string{&c.MQTT.PasswordFile, &c.MQTT.CAFile, &c.MQTT.CertFile, &c.MQTT.KeyFile, &c.Audit.File} {
		if *p != "" && !filepath.IsAbs(*p) && dir != "" {
			*p = filepath.Join(dir, *p)
		}
	}
	errs = append(errs, c.Validate())
	if len(c.Merchants) == 0 {
		errs = append(errs, &config.Error{Key: "merchants", Msg: "at least one merchant is required, e.g. [merchants.default.wxpay]"})
	} else if c.accounts, err = config.MerchantFiles(c.Merchants, dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

var explicitPrefixRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,11}$`)

// Validate checks every value except the merchants (ParseConfig checks
// those with the daemon's own rules).
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &config.Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Replica == "" {
		bad("replica", "must not be empty")
	}
	if _, err := brokerurl.CheckList(c.MQTT.Brokers()); err != nil {
		bad("mqtt.url", "%v", err)
	}
	if c.MQTT.TopicPrefix == "" || !wireSafe(c.MQTT.TopicPrefix) {
		bad("mqtt.topic_prefix", "must be a topic without wildcards or empty levels, got %q", c.MQTT.TopicPrefix)
	}
	if c.MQTT.ClientID == "" {
		bad("mqtt.client_id", "must not be empty")
	}
	if c.Notify.PublicURL != "" && c.Notify.Listen == "" {
		bad("notify.public_url", "is set but notify.listen is empty: nothing would receive the notifications")
	}
	if c.Audit.File == "" {
		bad("audit.file", "is required: every decision is audited")
	}
	switch c.Clock.SyncCheck {
	case config.SyncKernel, config.SyncNone:
	default:
		bad("clock.sync_check", "must be kernel or none, got %q", c.Clock.SyncCheck)
	}
	checkPolicy := func(key string, p Policy) {
		if p.MaxFee < 1 {
			bad(key+".max_fee", "must be a positive number of fen, got %d", int64(p.MaxFee))
		}
		for _, typ := range sortedKeys(p.Catalog) {
			if !contract.ValidOrderType(typ) {
				bad(key+".catalog."+typ, "order type must be 1 to 32 characters of a-z 0-9 _")
			}
			if fee := p.Catalog[typ]; fee < 1 || fee > p.MaxFee {
				bad(key+".catalog."+typ, "must be 1 to max_fee (%d) fen, got %d", int64(p.MaxFee), int64(fee))
			}
		}
		if w := p.RefundWindow.Duration; w < time.Minute || w > 365*24*time.Hour {
			bad(key+".refund_window", "must be from 1m to 8760h, got %s", w)
		}
		if p.MaxRefunds < 1 || p.MaxRefunds > 20 {
			bad(key+".max_refunds", "must be from 1 to 20, got %d", p.MaxRefunds)
		}
		if p.Rate <= 0 || p.Burst < 1 {
			bad(key+".rate", "rate must be positive and burst at least 1, got %g and %d", p.Rate, p.Burst)
		}
	}
	checkPolicy("policy.default", c.Policy.Default)
	for _, name := range sortedKeys(c.Policy.Groups) {
		g := c.Policy.Groups[name]
		key := "policy.groups." + name
		if len(g.Match) == 0 {
			bad(key+".match", "lists no device pattern")
		}
		for _, m := range g.Match {
			if _, err := path.Match(m, ""); err != nil {
				bad(key+".match", "bad pattern %q: %v", m, err)
			}
		}
		checkPolicy(key, g.Override.apply(c.Policy.Default))
	}
	prefixes := map[string]string{}
	for _, id := range sortedKeys(c.Policy.Devices) {
		d := c.Policy.Devices[id]
		key := "policy.devices." + id
		if !contract.ValidDeviceID(id) {
			bad(key, "device id must be 1 to 64 characters of A-Z a-z 0-9 _ -")
		}
		base := c.Policy.Default
		if d.Group != "" {
			g, ok := c.Policy.Groups[d.Group]
			if !ok {
				bad(key+".group", "no group %q in policy.groups", d.Group)
			}
			base = g.Override.apply(base)
		}
		if d.Prefix != "" {
			if !explicitPrefixRE.MatchString(d.Prefix) {
				bad(key+".prefix", "must be a letter and up to 11 more letters or digits (it becomes _<prefix>_), got %q", d.Prefix)
			} else if other, dup := prefixes[d.Prefix]; dup {
				bad(key+".prefix", "%q is already device %s's prefix", d.Prefix, other)
			}
			prefixes[d.Prefix] = id
		}
		checkPolicy(key, d.Override.apply(base))
	}
	return errors.Join(errs...)
}

func wireSafe(p string) bool {
	for i, r := range p {
		if r == '+' || r == '#' || r == 0 || (i == 0 && (r == '/' || r == '$')) {
			return false
		}
	}
	return p[len(p)-1] != '/' && !bytes.Contains([]byte(p), []byte("//"))
}

// apply returns base with the override's keys replaced.
func (o Override) apply(base Policy) Policy {
	p := base
	if o.MaxFee != nil {
		p.MaxFee = *o.MaxFee
	}
	if o.Catalog != nil {
		p.Catalog = o.Catalog
	}
	if o.RefundWindow != nil {
		p.RefundWindow = *o.RefundWindow
	}
	if o.MaxRefunds != nil {
		p.MaxRefunds = *o.MaxRefunds
	}
	if o.Rate != nil {
		p.Rate = *o.Rate
	}
	if o.Burst != nil {
		p.Burst = *o.Burst
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// Providers builds the merchant accounts from the checked [merchants]
// tables with the daemon's own adapters. Orders carry paygate's notify URL.
func (c *Config) Providers(logger *slog.Logger) (Accounts, error) {
	if c.accounts == nil {
		return nil, errors.New("paygate: configuration not loaded with ParseConfig")
	}
	return accounts.Providers(c.accounts, logger)
}

// Broker returns the broker options, reading the password and TLS files.
// The client id is <mqtt.client_id>-<replica>: replicas must not take over
// each other's connection.
func (c *Config) Broker() (mqttclient.Config, error) {
	pw, tc, err := mqttclient.Files{PasswordFile: c.MQTT.PasswordFile, CAFile: c.MQTT.CAFile, CertFile: c.MQTT.CertFile, KeyFile: c.MQTT.KeyFile}.Read(c.MQTT.Brokers())
	if fe, ok := err.(*mqttclient.FileError); ok {
		err = &config.Error{Key: "mqtt." + fe.Key, Msg: fe.Err.Error()}
	}
	return mqttclient.Config{
		Brokers: mqttclient.NewBrokers(c.MQTT.Brokers()), ClientID: c.MQTT.ClientID + "-" + c.Replica,
		Username: c.MQTT.Username, Password: pw, TLS: tc, WriteTimeout: ReplyTimeout,
	}, err
}
