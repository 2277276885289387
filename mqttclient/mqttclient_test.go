package mqttclient

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
)

func newPKI(t *testing.T) *mqtttest.PKI { return mqtttest.NewPKI(t) }

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	if _, err := TLSConfig(filepath.Join(p.Dir, "missing.pem"), "", ""); err == nil {
		t.Error("missing CA file accepted")
	}
	if _, err := TLSConfig(p.ClientKey, "", ""); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Errorf("key as CA: %v", err)
	}
	if _, err := TLSConfig("", p.ClientCert, ""); err == nil {
		t.Error("cert without key accepted")
	}
	if _, err := TLSConfig("", p.ClientCert, p.OtherClientKey); err == nil {
		t.Error("mismatched cert and key accepted")
	}
}
