package store

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
)

// Concurrent Batch calls all commit; one whose fn fails gets its error and
// leaves nothing behind, and the others are not affected; a panic in fn is
// that call's error.
func TestBatch(t *testing.T) {
	db, _ := openTemp(t, Options{})
	defer db.Close()
	errBad := errors.New("bad")
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Batch(func(tx *Tx) error {
				if _, err := tx.AddInbox(InboxEntry{Topic: "t", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return errBad
				case 7:
					panic("boom")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		switch i % 10 {
		case 3:
			if !errors.Is(err, errBad) {
				t.Errorf("call %d: %v, want its own error", i, err)
			}
		case 7:
			if err == nil {
				t.Errorf("call %d panicked but returned nil", i)
			}
		default:
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
		}
	}
	err := db.View(func(tx *Tx) error {
		n, _, err := tx.InboxSize()
		if n != 40 {
			t.Errorf("%d entries committed, want 40", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestInboxHeadSkips(t *testing.T) {
	db, _ := openTemp(t, Options{})
	defer db.Close()
	var ids []uint64
	err := db.Update(func(tx *Tx) error {
		for i := range 10 {
			id, err := tx.AddInbox(InboxEntry{Topic: "pay/query", Payload: fmt.Appendf(nil, `{"n":%d}`, i)})
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		got, err := tx.InboxHead(3, func(id uint64) bool { return id == ids[0] || id == ids[2] })
		if err != nil {
			return err
		}
		if len(got) != 3 || got[0].ID != ids[1] || got[1].ID != ids[3] || got[2].ID != ids[4] {
			t.Errorf("head: %+v", got)
		}
		if !tx.InboxHas(ids[9]) || tx.InboxHas(ids[9]+1) {
			t.Error("InboxHas")
		}
		found, err := tx.InboxFind("pay/query", func(p []byte) bool { return string(p) == `{"n":7}` })
		if err != nil || !found {
			t.Errorf("InboxFind: %v %v", found, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestIsNoSpace(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&os.PathError{Op: "write", Path: "orders.db", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("commit: %w", syscall.EDQUOT), true},
		{errors.New("file resize error: write orders.db: no space left on device"), true},
		{syscall.EIO, false},
		{nil, false},
	} {
		if got := IsNoSpace(c.err); got != c.want {
			t.Errorf("IsNoSpace(%v) = %v", c.err, got)
		}
	}
}
