package config

import (
	"errors"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
)

// Gateway is the [gateway] table: how the daemon reaches paygate when
// payment.backend = "gateway" (docs/contract.md §2.8).
type Gateway struct {
	// Timeout bounds one call through paygate; past it the outcome is
	// unknown and the engine asks again later, as after a provider
	// timeout.
	Timeout Duration `toml:"timeout"`
	// Merchants lists, per merchant id, the providers the device may use
	// through paygate. Empty means {"default": ["wxpay", "alipay"]}.
	Merchants map[string][]payment.ProviderName `toml:"merchants"`
}

// Accounts returns the merchant accounts the device uses through paygate:
// gateway.merchants, or by default the merchant "default" at both
// providers (paygate refuses, as UNSUPPORTED_PROVIDER, a provider it has
// no account for).
func (g Gateway) Accounts() map[string][]payment.ProviderName {
	if len(g.Merchants) == 0 {
		return map[string][]payment.ProviderName{"default": {payment.WxPay, payment.Alipay}}
	}
	return g.Merchants
}

// validate checks the [gateway] table; provider is payment.provider,
// whose providers every listed merchant needs.
func (g Gateway) validate(p *problems, provider payment.ProviderName) {
	if t := g.Timeout.Duration; t < time.Second || t > time.Minute {
		p.add("gateway.timeout", "must be from 1s to 1m, got %s", t)
	}
	for _, pid := range sortedKeys(g.Merchants) {
		key := "gateway.merchants." + pid
		if !contract.ValidPID(pid) {
			p.add(key, "merchant id must be 1 to 64 characters of A-Z a-z 0-9 _ -")
		}
		ps := g.Merchants[pid]
		if len(ps) == 0 {
			p.add(key, "lists no provider; want [\"wxpay\"], [\"alipay\"] or both")
		}
		seen := map[payment.ProviderName]bool{}
		for _, name := range ps {
			if name != payment.WxPay && name != payment.Alipay {
				p.add(key, "unknown provider %q; want wxpay or alipay", name)
			}
			if seen[name] {
				p.add(key, "lists %q twice", name)
			}
			seen[name] = true
		}
		for _, need := range []payment.ProviderName{payment.WxPay, payment.Alipay} {
			if !seen[need] && len(ps) > 0 && (provider == need || provider == contract.ProviderAny) {
				p.add(key, "must list %s because payment.provider is %q", need, provider)
			}
		}
	}
}

// MerchantFiles loads [merchants] tables for a program other than the
// daemon (paygate): it resolves their relative paths against dir, checks
// them as the daemon does (no provider required of every merchant) and
// their files, and returns them as a configuration that accounts.Providers
// builds the accounts from. Errors name the key.
func MerchantFiles(merchants map[string]Merchant, dir string) (*Config, error) {
	c := &Config{Merchants: merchants}
	c.ResolvePaths(dir)
	var p problems
	validateMerchants(&p, merchants, "")
	if err := errors.Join(p...); err != nil {
		return nil, err
	}
	if err := c.CheckFiles(); err != nil {
		return nil, err
	}
	return c, nil
}
