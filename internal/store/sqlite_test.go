package store

import (
	"context"
	"sync"
	"testing"
)

// One process's writers of one database share one lock; another
// database has its own, and concurrent writers under it all succeed.
func TestWriteLock(t *testing.T) {
	ctx := context.Background()
	a, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if WriteLock(a) != WriteLock(a) || WriteLock(a) == WriteLock(b) {
		t.Fatal("want one lock per database")
	}
	if _, err := a.ExecContext(ctx, `CREATE TABLE n (k INTEGER PRIMARY KEY, v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			l := WriteLock(a)
			l.Lock()
			defer l.Unlock()
			if _, err := a.ExecContext(ctx, `INSERT INTO n (k, v) VALUES (1, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1`); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var v int
	if err := a.QueryRowContext(ctx, `SELECT v FROM n`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 50 {
		t.Fatalf("50 writers counted %d", v)
	}
}
