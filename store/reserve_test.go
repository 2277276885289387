package store

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReserve(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "orders.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if released, err := db.ReleaseReserve(); err != nil || released {
		t.Fatalf("release without a reserve: %v %v", released, err)
	}
	const size = 200<<10 + 123
	if err := db.KeepReserve(size); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(ReservePath(db.Path()))
	if err != nil || fi.Size() != size {
		t.Fatalf("reserve: %v, %v", fi, err)
	}
	if err := db.KeepReserve(size); err != nil {
		t.Fatal(err)
	}
	if released, err := db.ReleaseReserve(); err != nil || !released {
		t.Fatalf("release: %v %v", released, err)
	}
	if _, err := os.Stat(ReservePath(db.Path())); !os.IsNotExist(err) {
		t.Fatalf("reserve still there: %v", err)
	}
}
