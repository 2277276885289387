package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/kioskpay/kioskpay/payment"
)

// Recovery describes what Recover did with a damaged store. The new store
// keeps it (meta "recovered") until an operator clears it, so a restart
// does not hide it.
type Recovery struct {
	At   time.Time `json:"at"`
	Path string    `json:"path"`
	// Reason is what the check at open found; Damaged is where the
	// damaged file was moved (kept for forensics).
	Reason  string `json:"reason"`
	Damaged string `json:"damaged"`
	// Pages is how many pages the salvage read; Unreadable how many of
	// them looked like data but could not be decoded.
	Pages      int `json:"pages"`
	Unreadable int `json:"unreadable"`
	// Orders were salvaged; Live of them had work left (pending, paid,
	// refunding…) and resume.
	Orders int `json:"orders"`
	Live   int `json:"live"`
	// Results were unacknowledged results put back in the outbox;
	// Inbox and Outbox count the unprocessed commands and unpublished
	// messages taken over whole (when those buckets could be read).
	Results int `json:"results"`
	Inbox   int `json:"inbox"`
	Outbox  int `json:"outbox"`
	// Lost are orders the live index named whose record could not be read
	// (at most 100 named; LostCount counts them all).
	Lost      []string `json:"lost,omitempty"`
	LostCount int      `json:"lost_count"`
	// Announced: the daemon published the store_recovered event.
	// Reconciled: it compared the salvaged orders with the providers.
	Announced  bool `json:"announced,omitempty"`
	Reconciled bool `json:"reconciled,omitempty"`
}

// Summary is the recovery in one line, for logs and events.
func (r *Recovery) Summary() string {
	s := fmt.Sprintf("%s was damaged (%s) and moved to %s; salvaged %d orders (%d live) and %d unacknowledged results from %d pages",
		r.Path, r.Reason, r.Damaged, r.Orders, r.Live, r.Results, r.Pages)
	if r.Inbox+r.Outbox > 0 {
		s += fmt.Sprintf("; %d commands not yet handled and %d messages not yet published carried over", r.Inbox, r.Outbox)
	}
	if r.Unreadable > 0 {
		s += fmt.Sprintf("; %d pages unreadable", r.Unreadable)
	}
	if r.LostCount > 0 {
		s += fmt.Sprintf("; %d live orders lost: %v", r.LostCount, r.Lost)
	}
	return s
}

var keyRecovered = []byte("recovered")

// Recover moves the damaged store at path aside (path + ".damaged-<time>"),
// salvages every order it can read from it into a new store at path, and
// returns the new store and what was done. The damaged file is only read,
// with plain reads (no mapping, so a truncated file cannot fault), page by
// page: whatever the damage, every intact page of order records is found,
// including pages no longer reachable from the root. When an order is
// found more than once (bbolt writes a changed page elsewhere and frees
// the old one), the newest version wins. Orders go into the new store as
// they are found, a few hundred per commit, so memory does not grow with
// the history. An error means the salvage itself failed (the file cannot
// be moved or read, or the new store cannot be written).
func Recover(path, reason string, opts Options) (*DB, *Recovery, error) {
	now := time.Now().UTC()
	r := &Recovery{At: now, Path: path, Reason: reason, Damaged: path + ".damaged-" + now.Format("20060102T150405Z")}
	if err := os.Rename(path, r.Damaged); err != nil {
		return nil, nil, fmt.Errorf("recover %s: move the damaged file aside: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	db, err := Open(path, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("recover %s: new store: %w", path, err)
	}
	fail := func(err error) (*DB, *Recovery, error) {
		db.Close()
		return nil, nil, fmt.Errorf("recover %s: %w", path, err)
	}
	var batch []Order
	flush := func() error {
		err := db.Update(func(tx *Tx) error {
			for _, o := range batch {
				old, ok, err := tx.Order(o.OutTradeNo)
				if err == nil && ok && newer(old, o) {
					continue
				}
				if err := tx.PutOrder(o); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	s, err := salvage(r.Damaged, func(o Order) error {
		if batch = append(batch, o); len(batch) < 200 {
			return nil
		}
		return flush()
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fail(err)
	}
	r.Pages, r.Unreadable = s.pages, s.unreadable
	err = db.Update(func(tx *Tx) error {
		// Commands recorded but not handled, and messages not yet
		// published (replies among them), carry on in the new store,
		// in their order: every command still gets its one reply.
		for _, e := range s.inbox {
			if _, err := tx.AddInbox(e); err != nil {
				return err
			}
			r.Inbox++
		}
		for _, e := range s.outbox {
			e.Attempts = 0
			if _, err := tx.Enqueue(e); err != nil {
				return err
			}
			r.Outbox++
			if e.Kind == KindResult {
				delete(s.results, e.OutTradeNo) // already there
			}
		}
		r.Orders = int(tx.OrderCount())
		live, err := tx.LiveOrders()
		if err != nil {
			return err
		}
		r.Live = len(live)
		seq := s.seq
		for _, e := range s.results {
			seq = max(seq, e.seq)
		}
		for _, o := range live {
			seq = max(seq, o.ResultSeq)
			// An unacknowledged paid result goes out again, the same
			// bytes: the controller may never have seen it.
			e, ok := s.results[o.OutTradeNo]
			if (o.State == Paid || o.State == Held) && ok && e.seq == o.ResultSeq && !s.outboxWhole {
				e.NextAt, e.Attempts = now, 0
				if _, err := tx.Enqueue(e.OutboxEntry); err != nil {
					return err
				}
				r.Results++
			}
		}
		// The result seq must never repeat; results that were not
		// salvaged may have used numbers above what was found.
		if err := tx.tx.Bucket(bucketMeta).Put(keySeq, u64(seq+1000)); err != nil {
			return err
		}
		for otn := range s.live {
			if _, ok, _ := tx.Order(otn); !ok {
				r.LostCount++
				r.Lost = append(r.Lost, otn)
			}
		}
		sort.Strings(r.Lost)
		r.Lost = r.Lost[:min(len(r.Lost), 100)]
		return putRecovery(tx, r)
	})
	if err != nil {
		return fail(fmt.Errorf("write the salvaged orders: %w", err))
	}
	return db, r, nil
}

func putRecovery(tx *Tx, r *Recovery) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.tx.Bucket(bucketMeta).Put(keyRecovered, b)
}

// Recovery returns the record of the recovery this store came from, nil
// when there was none or an operator cleared it.
func (t *Tx) Recovery() (*Recovery, error) {
	v := t.tx.Bucket(bucketMeta).Get(keyRecovered)
	if v == nil {
		return nil, nil
	}
	var r Recovery
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode recovery record: %w", err)
	}
	return &r, nil
}

// PutRecovery updates the record (announced, reconciled).
func (t *Tx) PutRecovery(r *Recovery) error { return putRecovery(t, r) }

// ClearRecovery removes the record: a person has looked.
func (t *Tx) ClearRecovery() error { return t.tx.Bucket(bucketMeta).Delete(keyRecovered) }

// salvaged is what the page scan found besides orders.
type salvaged struct {
	pages, unreadable int
	// inbox and outbox are those buckets as the tree holds them, when it
	// could be read (outboxWhole): unlike pages found anywhere in the
	// file, they cannot be stale copies of entries already done with.
	inbox       []InboxEntry
	outbox      []OutboxEntry
	outboxWhole bool
	results     map[string]resultEntry // newest result per out_trade_no
	live        map[string]bool        // live index keys
	seq         uint64                 // the meta's result seq, if found
	order       func(Order) error
	err         error
}

type resultEntry struct {
	OutboxEntry
	seq uint64
}

// salvage reads every page of the file at path and hands each order record
// it finds to order (the same order may come more than once).
func salvage(path string, order func(Order) error) (*salvaged, error) {
	f, size, err := openSized(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &salvaged{results: map[string]resultEntry{}, live: map[string]bool{}, order: order}
	ps := int64(4096)
	if m, _ := checkFile(f, size); m.pageSize >= 1024 && m.pageSize&(m.pageSize-1) == 0 {
		ps = int64(m.pageSize)
	}
	pf := &pageFile{f: f, ps: ps, size: size}
	if m, err := checkFile(f, size); err == nil || m.pageSize != 0 {
		if elems, ok := pf.bucketLenient(m, bucketInbox); ok {
			for _, e := range elems {
				var in InboxEntry
				if len(e.key) == 8 && json.Unmarshal(e.value, &in) == nil {
					s.inbox = append(s.inbox, in)
				}
			}
		}
		if elems, ok := pf.bucketLenient(m, bucketOutbox); ok {
			s.outboxWhole = true
			for _, e := range elems {
				var out OutboxEntry
				if len(e.key) == 8 && json.Unmarshal(e.value, &out) == nil {
					s.outbox = append(s.outbox, out)
				}
			}
		}
	}
	for id := uint64(2); int64(id+1)*ps <= size && s.err == nil; id++ {
		// A page whose id is wrong is read all the same: its records
		// may be intact.
		h, p, err := pf.readAny(id)
		if err != nil || h.flags != flagLeaf {
			continue
		}
		s.pages++
		elems, err := leafElems(p)
		if err != nil {
			s.unreadable++
		}
		s.take(elems)
		id += uint64(h.overflow)
	}
	return s, s.err
}

// take classifies the elements of one leaf page: order records, live index
// entries, outbox results, the meta's seq; inline buckets are read too.
func (s *salvaged) take(elems []leafElem) {
	for _, e := range elems {
		if e.bucket {
			if len(e.value) > inBucketSize && le.Uint64(e.value) == 0 {
				inner, err := leafElems(e.value[inBucketSize:])
				if err == nil {
					s.take(inner)
				}
			}
			continue
		}
		switch {
		case string(e.key) == string(keySeq) && len(e.value) == 8:
			s.seq = max(s.seq, be.Uint64(e.value))
		case payment.ValidOutTradeNo(string(e.key)) && State(e.value).valid():
			s.live[string(e.key)] = true
		case len(e.value) > 0 && (e.value[0] == '{' || e.value[0] == recordDeflate):
			s.record(e.key, e.value)
		}
	}
}

// record keeps an order record (either schema's form) or an outbox result
// found in a page.
func (s *salvaged) record(key, value []byte) {
	if payment.ValidOutTradeNo(string(key)) {
		var o Order
		if decodeOrder(value, &o) != nil || o.OutTradeNo != string(key) || !o.State.valid() || o.CreatedAt.IsZero() {
			return
		}
		if s.err == nil {
			s.err = s.order(o)
		}
		return
	}
	if len(key) != 8 {
		return
	}
	var e OutboxEntry
	if json.Unmarshal(value, &e) != nil || e.Kind != KindResult || e.OutTradeNo == "" {
		return
	}
	var r struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(e.Payload, &r) != nil || r.Seq == 0 {
		return
	}
	if old, ok := s.results[e.OutTradeNo]; ok && old.seq >= r.Seq {
		return
	}
	s.results[e.OutTradeNo] = resultEntry{OutboxEntry: e, seq: r.Seq}
}

// newer reports whether a is a later version of the order than b.
func newer(a, b Order) bool {
	if !a.UpdatedAt.Equal(b.UpdatedAt) {
		return a.UpdatedAt.After(b.UpdatedAt)
	}
	return len(a.Transitions) >= len(b.Transitions)
}

// valid reports whether s is one of the order states.
func (s State) valid() bool {
	return slices.Contains([]State{Creating, Pending, Closing, Paid, Refunding, Delivered, Held, Refunded, RefundFailed, Expired, Cancelled, Failed}, s)
}
