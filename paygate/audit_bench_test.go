package paygate

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// BenchmarkAuditWrite: records per second into the audit log on the
// machine's disk, one writer and 32 at once (32 devices' requests in
// flight at one replica):
//
//	go test -run '^$' -bench AuditWrite ./paygate
func BenchmarkAuditWrite(b *testing.B) {
	rec := Record{Time: time.Now(), Replica: "r1", Device: "chair-1", RequestID: "r-0001", Op: "query", Provider: "wxpay", OutTradeNo: "chair1_0001", Decision: Allowed, TookMS: 12}
	open := func(b *testing.B) *AuditLog {
		// The benchmark's directory is on the disk under test, not
		// necessarily the one a deployment uses.
		a, err := OpenAudit(filepath.Join(b.TempDir(), "audit.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { a.Close() })
		return a
	}
	b.Run("alone", func(b *testing.B) {
		a := open(b)
		for b.Loop() {
			if err := a.Write(rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("32-at-once", func(b *testing.B) {
		a := open(b)
		b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := a.Write(rec); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
