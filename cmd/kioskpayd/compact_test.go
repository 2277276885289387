package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/store"
)

// kioskpayd compact: refuses while the store is held, shrinks a store
// whose history was deleted, keeps every order; doctor reports the size
// and the count; -schema 1 writes the store for an older build.
func TestCompactCommand(t *testing.T) {
	e := newEnv(t)
	cfg, err := config.Load(e.path)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.StateDir, storeFile)
	db, err := store.Open(path, store.Options{Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	for b := 0; b < 3000; b += 500 {
		err := db.Update(func(tx *store.Tx) error {
			for i := b; i < b+500; i++ {
				at := old
				if i >= 2900 {
					at = time.Now()
				}
				o := store.Order{OutTradeNo: fmt.Sprintf("ord_%05d", i), State: store.Delivered, Subject: strings.Repeat("s", 200), CreatedAt: at, UpdatedAt: at}
				if err := tx.PutOrder(o); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if code, out := runCmd(t, "compact", "-config", e.path); code != 1 || !strings.Contains(out, "stop kioskpayd first") {
		t.Fatalf("compact while the store is held: exit %d", code)
	}
	if _, err := db.Prune(t.Context(), time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, out := doctor(t, e); !strings.Contains(lineFor(out, "store size"), "100 orders") {
		t.Errorf("doctor store size line: %q", lineFor(out, "store size"))
	}
	code, out := runCmd(t, "compact", "-config", e.path)
	if code != 0 || !strings.Contains(out, "100 orders") {
		t.Fatalf("compact: exit %d", code)
	}
	if code, _ := runCmd(t, "compact", "-config", e.path, "-schema", "1"); code != 0 {
		t.Fatalf("compact -schema 1: exit %d", code)
	}
	if st, err := store.Stat(path); err != nil || st.Schema != 1 || st.CountKnown {
		t.Errorf("after -schema 1: %+v %v", st, err)
	}
	if _, out := doctor(t, e); !strings.Contains(lineFor(out, "store size"), "not recorded yet") {
		t.Errorf("doctor store size line of a schema-1 store: %q", lineFor(out, "store size"))
	}
	if code, _ := runCmd(t, "compact", "-config", e.path, "-schema", "3"); code != 1 {
		t.Errorf("compact -schema 3: exit %d", code)
	}
}
