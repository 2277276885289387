package mqttclient

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFilesRead(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, tc, err := Files{PasswordFile: pw}.Read([]string{"tcp://127.0.0.1:1883"})
	if err != nil || got != "secret" || tc != nil {
		t.Fatalf("plain: %q %v %v", got, tc, err)
	}
	for _, tc := range []struct {
		f    Files
		urls []string
		key  string
	}{
		{Files{PasswordFile: filepath.Join(dir, "missing")}, []string{"tcp://h:1883"}, "password_file"},
		{Files{PasswordFile: empty}, []string{"tcp://h:1883"}, "password_file"},
		{Files{CAFile: filepath.Join(dir, "missing")}, []string{"ssl://h:8883"}, "ca_file"},
		{Files{CAFile: pw}, []string{"ssl://h:8883"}, "ca_file"},
		{Files{CertFile: pw, KeyFile: pw}, []string{"ssl://h:8883"}, "cert_file"},
	} {
		_, _, err := tc.f.Read(tc.urls)
		var fe *FileError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("%+v: error %v, want a FileError for %s", tc.f, err, tc.key)
		}
	}
}
