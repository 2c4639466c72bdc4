package guard

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/redistest"
	"github.com/relayguard/relayguard/internal/store"
)

// TestSharedRestoredDatabaseReplaysStalePending: server A lifts a ban while
// Redis is down (a pending delete), its database is backed up, A writes
// the delete when Redis returns, and B bans the address again. A's
// database restored from the backup must not write the delete again.
func TestSharedRestoredDatabaseReplaysStalePending(t *testing.T) {
	rs := redistest.StartPersistent(t)
	ctx := t.Context()
	dirA, backup := t.TempDir(), t.TempDir()
	y := netip.MustParsePrefix("198.51.100.7/32")
	a := sharedNode(t, ctx, dirA, rs.URL())
	b := sharedNode(t, ctx, t.TempDir(), rs.URL())
	listed(t, ctx, a)
	listed(t, ctx, b)
	until := time.Now().Add(time.Hour)
	if err := a.PutBan(ctx, Ban{Prefix: y, Until: until, Reason: "first"}); err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	if err := a.DeleteBan(ctx, y); err != nil {
		t.Fatal(err)
	}
	db := a.Local.(*SQLiteStore).DB
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, filepath.Join(backup, store.DBFile)); err != nil {
		t.Fatal(err)
	}
	rs.Restart()
	// A writes its pending delete (Redis is retried 50 ms after a failure)
	a.Remote.Health.Retry = 50 * time.Millisecond
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(60 * time.Millisecond) {
		listed(t, ctx, a)
		pending, err := a.Local.(*SQLiteStore).ListPending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A did not write its pending changes: %v", pending)
		}
	}
	if remote, _ := a.Remote.ListBans(ctx); slices.Contains(prefixes(remote), y) {
		t.Fatal("A's delete made while Redis was down did not reach it")
	}
	for range 3 {
		listed(t, ctx, b)
	}
	if err := b.PutBan(ctx, Ban{Prefix: y, Until: until, Reason: "banned again later"}); err != nil {
		t.Fatal(err)
	}
	a2 := sharedNode(t, ctx, backup, rs.URL()) // A's database restored from the backup
	got := listed(t, ctx, a2)
	remote, _ := b.Remote.ListBans(ctx)
	t.Logf("A restored lists %v; Redis holds %v", got, prefixes(remote))
	if !slices.Contains(prefixes(remote), y) {
		t.Fatal("the restored server's stale pending delete lifted a ban made since")
	}
}
