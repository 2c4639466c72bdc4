package guard

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/redistest"
)

// TestSharedRedisRolledBack: Redis restarts from its last RDB snapshot
// (a crash with the default `save` persistence, or a restore from backup):
// its epoch key is the one the servers know, but the bans written after the
// snapshot are gone. The running server must not take the older list as
// the truth and lift the bans it made since.
func TestSharedRedisRolledBack(t *testing.T) {
	rs := redistest.Start(t)
	ctx := t.Context()
	dirA := t.TempDir()
	x, y := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")
	a := sharedNode(t, ctx, dirA, rs.URL())
	listed(t, ctx, a)
	until := time.Now().Add(time.Hour)
	banAroundSnapshot(t, ctx, a, x, y, until)
	rs.Stop()
	rs.Restart() // loads dump.rdb: the epoch, x, not y
	var got []netip.Prefix
	for range 3 { // the first command after the restart may fail (reconnection)
		got = listed(t, ctx, a)
	}
	if want := []netip.Prefix{x, y}; !slices.Equal(got, want) {
		t.Fatalf("running server after Redis came back from its snapshot: %v, want %v", got, want)
	}
	a = sharedNode(t, ctx, dirA, rs.URL())
	if got, want := listed(t, ctx, a), []netip.Prefix{x, y}; !slices.Equal(got, want) {
		t.Fatalf("server started again: %v, want %v", got, want)
	}
}

// TestSharedRedisRolledBackOthersAndRestart: the rollback is noticed by a
// server that only learnt the lost ban (its ListBans saw the higher
// counter) and by a server that was stopped meanwhile (the counter saved
// with the epoch); neither lifts the ban.
func TestSharedRedisRolledBackOthersAndRestart(t *testing.T) {
	rs := redistest.Start(t)
	ctx := t.Context()
	dirA := t.TempDir()
	x, y := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")
	a := sharedNode(t, ctx, dirA, rs.URL())
	b := sharedNode(t, ctx, t.TempDir(), rs.URL())
	listed(t, ctx, a)
	until := time.Now().Add(time.Hour)
	banAroundSnapshot(t, ctx, a, x, y, until)
	if _, _, err := a.Changes(ctx, 0); err != nil { // A's sync loop saves the counter
		t.Fatal(err)
	}
	if got, want := listed(t, ctx, b), []netip.Prefix{x, y}; !slices.Equal(got, want) {
		t.Fatalf("B before the rollback: %v, want %v", got, want)
	}
	rs.Stop() // A stops too
	rs.Restart()
	var got []netip.Prefix
	for range 3 { // B synchronises first
		got = listed(t, ctx, b)
	}
	if want := []netip.Prefix{x, y}; !slices.Equal(got, want) {
		t.Fatalf("B, which learnt the ban lost by the rollback: %v, want %v", got, want)
	}
	rs.Stop()
	rs.Restart() // the same snapshot again: B's push is lost too
	a = sharedNode(t, ctx, dirA, rs.URL())
	if got, want := listed(t, ctx, a), []netip.Prefix{x, y}; !slices.Equal(got, want) {
		t.Fatalf("A started after the rollback: %v, want %v", got, want)
	}
	remote, err := a.Remote.ListBans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := prefixes(remote), []netip.Prefix{x, y}; !slices.Equal(got, want) {
		t.Fatalf("Redis after A started: %v, want %v", got, want)
	}
}

// banAroundSnapshot has node a ban before, Redis write its snapshot
// (dump.rdb, SAVE), and a ban after: a restart of Redis then loses after.
func banAroundSnapshot(t *testing.T, ctx context.Context, a *Shared, before, after netip.Prefix, until time.Time) {
	t.Helper()
	if err := a.PutBan(ctx, Ban{Prefix: before, Until: until, Reason: "before the snapshot"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Remote.C.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.PutBan(ctx, Ban{Prefix: after, Until: until, Reason: "after the snapshot"}); err != nil {
		t.Fatal(err)
	}
}
