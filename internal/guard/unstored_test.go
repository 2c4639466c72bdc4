package guard

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/store"
)

// TestUnstoredBanKeptUntilStored: a ban decided while the database cannot
// be written (its disk full: a real SQLite database on a 4 MB tmpfs in a
// mount namespace of the test's own, filled to the last byte) is enforced,
// and stays enforced across the next full synchronisation with the store
// (Run's, at least every ResyncEvery), which listed only the stored bans
// and so lifted it: without Redis, an attacker banned while the disk was
// full was let in again within 10 minutes. Once the disk has room, the
// next synchronisation stores it.
func TestUnstoredBanKeptUntilStored(t *testing.T) {
	hosttest.OnSmallTmpfs(t, "4m", func(t *testing.T, mnt string) {
		db, err := store.OpenSQLite(t.Context(), mnt)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		st, err := NewSQLiteStore(t.Context(), db)
		if err != nil {
			t.Fatal(err)
		}
		g := New(Options{Config: testConfig(), Store: st}) // live clock
		if err := g.Sync(t.Context(), false); err != nil {
			t.Fatal(err)
		}
		// (an empty WAL: a write needs new blocks of the full disk)
		if _, err := db.ExecContext(t.Context(), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			t.Fatal(err)
		}
		filler := hosttest.FillUp(t, mnt)
		ip := netip.MustParseAddr("198.51.100.7")
		now := time.Now()
		for k := range 3 {
			fail(g, ip.String(), now.Add(time.Duration(k)*time.Millisecond))
		}
		if _, banned := g.Banned(ip); !banned {
			t.Fatal("not banned with the disk full")
		}
		if stored, err := st.ListBans(t.Context()); err != nil || len(stored) != 0 {
			t.Fatalf("stored on a full disk? %+v %v", stored, err)
		}
		if err := g.Sync(t.Context(), false); err != nil {
			t.Fatal(err)
		}
		if _, banned := g.Banned(ip); !banned {
			t.Fatal("the next full synchronisation lifted the ban the full disk could not store")
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if err := g.Sync(t.Context(), false); err != nil {
			t.Fatal(err)
		}
		if _, banned := g.Banned(ip); !banned {
			t.Fatal("not banned once the disk has room")
		}
		stored, err := st.ListBans(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(stored) != 1 || stored[0].Prefix != netip.PrefixFrom(ip, 32) {
			t.Fatalf("stored once the disk has room: %+v, want the ban of %s", stored, ip)
		}
	})
}

// TestFallbackFailuresWrittenBack: the failures counted in memory while the
// database could not be written (its disk full: a real SQLite database on
// a full tmpfs) are written to it once it can be again, so that an
// attacker's count goes on from where it was: they were left in memory and
// the database counted afresh, giving every attacker whose guesses
// straddled the end of the outage up to maxretry-1 more.
func TestFallbackFailuresWrittenBack(t *testing.T) {
	hosttest.OnSmallTmpfs(t, "4m", func(t *testing.T, mnt string) {
		ctx := t.Context()
		db, err := store.OpenSQLite(ctx, mnt)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		sqlc, err := NewSQLiteCounters(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		c := &FallbackCounters{Primary: sqlc, Fallback: NewMemoryFor(testConfig()), Health: &store.Health{Retry: 50 * time.Millisecond}}
		ip := netip.MustParseAddr("198.51.100.7")
		p := netip.MustParsePrefix("198.51.100.0/24")
		now := time.Now()
		const w = 10 * time.Minute
		if n, err := c.AddFailure(ctx, ip, now, w); err != nil || n != 1 {
			t.Fatalf("first failure: %d %v", n, err)
		}
		if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			t.Fatal(err)
		}
		filler := hosttest.FillUp(t, mnt)
		for k := 1; k <= 2; k++ {
			n, err := c.AddFailure(ctx, ip, now.Add(time.Duration(k)*time.Second), w)
			if err != nil || n != k { // (memory starts afresh: the first is in the database)
				t.Fatalf("failure %d with the disk full: %d %v", k+1, n, err)
			}
			if _, err := c.AddAttacker(ctx, p, netip.AddrFrom4([4]byte{198, 51, 100, byte(k)}), now.Add(time.Duration(k)*time.Second), w); err != nil {
				t.Fatal(err)
			}
		}
		if !c.Health.Down() {
			t.Fatal("the full disk did not fail the database's counters")
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // past Health.Retry
		n, err := c.AddFailure(ctx, ip, now.Add(3*time.Second), w)
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 {
			t.Errorf("the fourth failure once the disk has room: count %d, want 4 (1 before the outage, 2 during it)", n)
		}
		if n, err := c.AddAttacker(ctx, p, netip.AddrFrom4([4]byte{198, 51, 100, 3}), now.Add(3*time.Second), w); err != nil || n != 3 {
			t.Errorf("the /24's third failing address once the disk has room: %d %v, want 3", n, err)
		}
	})
}
