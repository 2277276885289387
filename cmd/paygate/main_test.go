package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[policy.default]\nmax_fee = -1\n[mqtt]\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string // on stderr
	}{
		{[]string{"-version"}, exitOK, ""},
		{nil, exitBadConfig, "-config FILE is required"},
		{[]string{"-config", bad, "extra"}, exitBadConfig, ""},
		{[]string{"-config", filepath.Join(dir, "missing.toml")}, exitBadConfig, "missing.toml"},
		{[]string{"-config", bad}, exitBadConfig, "policy.default.max_fee"},
		{[]string{"-config", bad}, exitBadConfig, "mqtt.bogus"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("paygate %v: exit %d, stderr %q; want %d with %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
	}
}
