package guard

import (
	"context"
	"net/netip"
	"testing"

	"github.com/relayguard/relayguard/internal/store"
)

// BenchmarkClearPending3000: clearing the 3,000 changes a node made while
// Redis was down (what flushPending does once it has written them), in
// one transaction and (as before) one each.
//
//	go test -run '^$' -bench ClearPending ./internal/guard/
func BenchmarkClearPending3000(b *testing.B) {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := NewSQLiteStore(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	ps := make([]Pending, 3000)
	for i := range ps {
		ps[i] = Pending{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32)}
	}
	for _, each := range []bool{false, true} {
		name := "batch"
		if each {
			name = "each"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				for _, p := range ps {
					if err := s.AddPending(ctx, p); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				var err error
				if each {
					for _, p := range ps {
						if err = s.ClearPending(ctx, p); err != nil {
							break
						}
					}
				} else {
					err = s.ClearPending(ctx, ps...)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
