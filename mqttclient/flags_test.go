package mqttclient

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientFlagsResolve(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	urls, password, tc, err := ClientFlags{Brokers: "tcp://a:1883,tcp://b:1883", Username: "backend", PasswordFile: pw}.Resolve()
	if err != nil || len(urls) != 2 || password != "s3cret" || tc != nil {
		t.Fatalf("Resolve = %q %q %v %v", urls, password, tc, err)
	}
	p := newPKI(t)
	_, _, tc, err = ClientFlags{Brokers: "ssl://a:8883", CAFile: p.CAFile}.Resolve()
	if err != nil || tc == nil || tc.RootCAs == nil {
		t.Fatalf("TLS: %v %v", tc, err)
	}
	for _, c := range []struct {
		f     ClientFlags
		usage bool
		want  string
	}{
		{ClientFlags{Brokers: "mqtt://a:1"}, true, "-broker"},
		{ClientFlags{Brokers: "tcp://a:1", CAFile: "ca.pem"}, true, "not a TLS URL"},
		{ClientFlags{Brokers: "ssl://a:1", CertFile: "c.pem"}, true, "both -cert-file and -key-file"},
		{ClientFlags{Brokers: "tcp://a:1", PasswordFile: pw}, true, "-password-file needs -username"},
		{ClientFlags{Brokers: "tcp://a:1", Username: "u", PasswordFile: filepath.Join(dir, "missing")}, false, "read -password-file"},
		{ClientFlags{Brokers: "ssl://a:1", CAFile: filepath.Join(dir, "missing")}, false, "-ca-file"},
	} {
		_, _, _, err := c.f.Resolve()
		var fe *FlagError
		if err == nil || errors.As(err, &fe) != c.usage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v (usage error: %v); want %q", c.f, err, errors.As(err, &fe), c.want)
		}
	}
}
