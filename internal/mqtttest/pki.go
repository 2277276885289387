package mqtttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throw-away certificate authority made at test time: a CA, a
// broker certificate for 127.0.0.1, a client certificate it signed, and a
// client certificate from another CA. Nothing is ever committed.
type PKI struct {
	Dir                             string
	CAPool                          *x509.CertPool
	ServerTLS                       *tls.Config // for the broker's listener
	CAFile, ClientCert, ClientKey   string      // PEM files
	OtherClientCert, OtherClientKey string      // signed by a CA the broker does not trust
}

// NewPKI generates the certificates into a temporary directory.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, key *ecdsa.PrivateKey) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(90 * 24 * time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	write := func(name string, block *pem.Block) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPEM := func(k *ecdsa.PrivateKey) *pem.Block {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	caKey, otherKey := newKey(), newKey()
	ca := issue(caTmpl("test CA"), nil, nil, caKey)
	other := issue(caTmpl("other CA"), nil, nil, otherKey)

	srvKey := newKey()
	srv := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "broker"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey, srvKey)
	cliKey, otherCliKey := newKey(), newKey()
	cliTmpl := func() *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "chair-001"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	cli := issue(cliTmpl(), ca, caKey, cliKey)
	otherCli := issue(cliTmpl(), other, otherKey, otherCliKey)

	p := &PKI{Dir: dir, CAPool: x509.NewCertPool()}
	p.CAPool.AddCert(ca)
	p.CAFile = write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	p.ClientCert = write("client.pem", &pem.Block{Type: "CERTIFICATE", Bytes: cli.Raw})
	p.ClientKey = write("client.key", keyPEM(cliKey))
	p.OtherClientCert = write("other.pem", &pem.Block{Type: "CERTIFICATE", Bytes: otherCli.Raw})
	p.OtherClientKey = write("other.key", keyPEM(otherCliKey))
	p.ServerTLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey}},
		MinVersion:   tls.VersionTLS12,
	}
	return p
}
