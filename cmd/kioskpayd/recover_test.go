package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/store"
)

func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(context.Background(), args, nil, &out, &out)
	t.Logf("kioskpayd %s: exit %d\n%s", strings.Join(args, " "), code, out.String())
	return code, out.String()
}

// kioskpayd recover: checks, rebuilds a damaged store keeping the damaged
// file, says what it salvaged, and clears the flag on request; doctor's
// store line follows.
func TestRecoverCommand(t *testing.T) {
	e := newEnv(t)
	cfg, err := config.Load(e.path)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.StateDir, storeFile)
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	if code, out := runCmd(t, "recover", "-config", e.path, "-check"); code != 0 || !strings.Contains(out, "is sound") {
		t.Fatalf("sound store: exit %d", code)
	}
	if code, out := doctor(t, e); code != 0 || !strings.HasPrefix(lineFor(out, "store"), "ok") {
		t.Errorf("doctor store line: %q", lineFor(out, "store"))
	}
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, b[:len(b)/3], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runCmd(t, "recover", "-config", e.path, "-check"); code != 1 || !strings.Contains(out, "truncated") {
		t.Errorf("damaged store, -check: exit %d", code)
	}
	if code, out := doctor(t, e); code != 1 || !strings.HasPrefix(lineFor(out, "store"), "FAIL") {
		t.Errorf("doctor store line on a damaged store: %q", lineFor(out, "store"))
	}
	code, out := runCmd(t, "recover", "-config", e.path)
	if code != 0 || !strings.Contains(out, "salvaged") {
		t.Fatalf("rebuild: exit %d", code)
	}
	if kept, _ := filepath.Glob(path + ".damaged-*"); len(kept) != 1 {
		t.Errorf("damaged file kept: %v", kept)
	}
	db, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var rec *store.Recovery
	db.View(func(tx *store.Tx) error { rec, err = tx.Recovery(); return err })
	db.Close()
	if rec == nil {
		t.Fatal("no recovery record after a rebuild")
	}
	if code, _ := runCmd(t, "recover", "-config", e.path, "-clear"); code != 0 {
		t.Fatalf("clear: exit %d", code)
	}
	db, _ = store.Open(path, store.Options{})
	db.View(func(tx *store.Tx) error { rec, err = tx.Recovery(); return err })
	db.Close()
	if rec != nil {
		t.Error("the record survived -clear")
	}
	for _, args := range [][]string{{"recover"}, {"recover", "-config", e.path, "-check", "-force"}} {
		if code, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
