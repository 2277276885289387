package paygate

import (
	"path"
	"strings"

	"github.com/kioskpay/kioskpay/contract"
)

// PolicyFor returns the policy of a device: [policy.devices.<id>] over its
// group over [policy.default]. The group is the device table's group, else
// the first group in name order with a pattern the id matches.
func (s *PolicySet) PolicyFor(device string) Policy {
	p := s.Default
	d, hasDev := s.Devices[device]
	switch {
	case hasDev && d.Group != "":
		p = s.Groups[d.Group].Override.apply(p)
	default:
		if g, ok := s.groupOf(device); ok {
			p = g.Override.apply(p)
		}
	}
	if hasDev {
		p = d.Override.apply(p)
	}
	return p
}

func (s *PolicySet) groupOf(device string) (Group, bool) {
	for _, name := range sortedKeys(s.Groups) {
		g := s.Groups[name]
		for _, m := range g.Match {
			if ok, _ := path.Match(m, device); ok {
				return g, true
			}
		}
	}
	return Group{}, false
}

// Prefix returns the out_trade_no prefix of a device: every order number
// the device uses must start with it, which keeps the orders of devices
// sharing a merchant account apart and tells paygate whose a notified
// order is.
//
// Two kinds of prefix, which can never be prefixes of one another (so no
// order number can belong to two devices):
//
//   - derived (the default): the device id with "_" written "_0" and "-"
//     written "_1", followed by "__". "chair-7" → "chair_17__". In the
//     encoding every "_" is followed by 0 or 1, so "__" first occurs at the
//     end: two derived prefixes where one starts the other are equal, and
//     the encoding is one-to-one.
//   - configured ([policy.devices.<id>] prefix = "C7"): "_C7_". It starts
//     with "_" and a letter, which no derived prefix does ("_" is always
//     followed by 0 or 1 there), and the letters and digits between the
//     two "_" make configured prefixes of different values disjoint too.
//
// WeChat Pay and Alipay allow 32 characters of out_trade_no, prefix
// included: long device ids want a configured prefix.
func (s *PolicySet) Prefix(device string) string {
	if d, ok := s.Devices[device]; ok && d.Prefix != "" {
		return "_" + d.Prefix + "_"
	}
	return DerivedPrefix(device)
}

// DerivedPrefix is a device's prefix when none is configured (see Prefix).
func DerivedPrefix(device string) string {
	var b strings.Builder
	for _, r := range device {
		switch r {
		case '_':
			b.WriteString("_0")
		case '-':
			b.WriteString("_1")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteString("__")
	return b.String()
}

// DeviceOf returns the device whose prefix starts outTradeNo, for routing
// a provider notification; false when no device's can.
func (s *PolicySet) DeviceOf(outTradeNo string) (string, bool) {
	if rest, ok := strings.CutPrefix(outTradeNo, "_"); ok && rest != "" && rest[0] != '0' && rest[0] != '1' {
		val, _, ok := strings.Cut(rest, "_")
		if !ok {
			return "", false
		}
		for id, d := range s.Devices {
			if d.Prefix == val {
				return id, true
			}
		}
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(outTradeNo); i++ {
		c := outTradeNo[i]
		if c != '_' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(outTradeNo) {
			return "", false
		}
		switch outTradeNo[i+1] {
		case '0':
			b.WriteByte('_')
		case '1':
			b.WriteByte('-')
		case '_':
			dev := b.String()
			// A device with a configured prefix does not own its derived
			// one.
			if d, ok := s.Devices[dev]; (ok && d.Prefix != "") || !contract.ValidDeviceID(dev) {
				return "", false
			}
			return dev, true
		default:
			return "", false
		}
		i++
	}
	return "", false
}

// Owns reports whether outTradeNo belongs to device.
func (s *PolicySet) Owns(device, outTradeNo string) bool {
	return strings.HasPrefix(outTradeNo, s.Prefix(device))
}
