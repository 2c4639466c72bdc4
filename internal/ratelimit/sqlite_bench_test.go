package ratelimit_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

// BenchmarkSQLStoreAdd is one counter update in the embedded SQLite
// database (WAL, synchronous=NORMAL, as store.OpenSQLite opens it), over
// 256 keys: the cost every rate-limited message pays per counter.
func BenchmarkSQLStoreAdd(b *testing.B) {
	ctx := context.Background()
	st := openSQLStore(b)
	keys := make([]string, 256)
	for i := range keys {
		keys[i] = "ip:203.0.113." + strconv.Itoa(i)
	}
	start := time.Now().Truncate(time.Hour)
	b.ResetTimer()
	for i := range b.N {
		if _, err := st.Add(ctx, keys[i%len(keys)], start, time.Hour, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// openSQLStore is the counters in a fresh embedded database, closed when
// tb ends.
func openSQLStore(tb testing.TB) *ratelimit.SQLStore { return openSQLStoreIn(tb, tb.TempDir()) }

// openSQLStoreIn is the counters in the embedded database of data
// directory dir, closed when tb ends.
func openSQLStoreIn(tb testing.TB, dir string) *ratelimit.SQLStore {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	st, err := ratelimit.NewSQLStore(ctx, db)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
