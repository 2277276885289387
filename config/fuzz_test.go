package config

import (
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, and a
// configuration it accepts must validate again unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(base))
	f.Add([]byte(set(base, "payment.expire", "300")))
	f.Add([]byte("device_id = \"x\"\n[merchants.a.alipay]\napp_id=\"1\"\nprivate_key_file=\"k\"\nalipay_public_key_file=\"p\"\n[payment]\nprovider=\"alipay\"\n"))
	f.Add([]byte("[catalog]\na = 1\nb = -2\n"))
	f.Add([]byte("[[merchants]]\n"))
	f.Add([]byte("device_id = 'x'\n[display]\noutputs = [1, \"web\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "/etc/kioskpayd")
		if err != nil {
			if c != nil {
				t.Fatal("Parse returned a config with an error")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
	})
}
