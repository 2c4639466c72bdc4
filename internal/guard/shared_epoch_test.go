package guard

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/redistest"
	"github.com/relayguard/relayguard/internal/store"
)

// sharedNode is one server's Shared store over its own SQLite database in
// dir (kept across a restart of the server).
func sharedNode(t *testing.T, ctx context.Context, dir, url string) *Shared {
	t.Helper()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	local, err := NewSQLiteStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	r, err := store.OpenRedis(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return NewShared(local, r, nil)
}

func prefixes(bans []Ban) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range bans {
		out = append(out, b.Prefix)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

func listed(t *testing.T, ctx context.Context, s *Shared) []netip.Prefix {
	t.Helper()
	bans, err := s.ListBans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return prefixes(bans)
}

// TestSharedStartAfterRedisLostItsData: server A is stopped; Redis loses
// its data (restarted without persistence) and server B, synchronising
// first, pushes back only its own bans. A starting then must not take
// that partial list for the shared truth and lift the bans it held (the
// other servers' pushes come later); it pushes them back. Before, a first
// contact adopted any non-empty list.
func TestSharedStartAfterRedisLostItsData(t *testing.T) {
	rs := redistest.Start(t)
	ctx := t.Context()
	dirA, dirB := t.TempDir(), t.TempDir()
	x, y, z := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("203.0.113.0/24")
	a := sharedNode(t, ctx, dirA, rs.URL())
	b := sharedNode(t, ctx, dirB, rs.URL())
	listed(t, ctx, a)
	listed(t, ctx, b)
	until := time.Now().Add(time.Hour)
	for _, p := range []netip.Prefix{x, y} {
		if err := a.PutBan(ctx, Ban{Prefix: p, Until: until, Reason: "A"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Local.PutBan(ctx, Ban{Prefix: z, Until: until, Reason: "B (not in Redis yet)"}); err != nil {
		t.Fatal(err)
	}

	rs.Stop()
	rs.Restart() // empty: the data set is lost
	b = sharedNode(t, ctx, dirB, rs.URL())
	if got, want := listed(t, ctx, b), []netip.Prefix{z}; !slices.Equal(got, want) {
		t.Fatalf("B, first to synchronise after the loss: %v, want %v", got, want)
	}
	a = sharedNode(t, ctx, dirA, rs.URL()) // A starts again
	if got, want := listed(t, ctx, a), []netip.Prefix{x, y, z}; !slices.Equal(got, want) {
		t.Fatalf("A after starting again: %v, want %v", got, want)
	}
	remote, err := a.Remote.ListBans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := prefixes(remote), []netip.Prefix{x, y, z}; !slices.Equal(got, want) {
		t.Fatalf("Redis after A started again: %v, want %v", got, want)
	}
}

// TestSharedStartAdoptsLifts: Redis kept its data while server A was
// stopped, and server B lifted one of A's bans meanwhile: A starting again
// adopts the shared list (the ban stays lifted).
func TestSharedStartAdoptsLifts(t *testing.T) {
	rs := redistest.Start(t)
	ctx := t.Context()
	dirA := t.TempDir()
	x, y := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")
	a := sharedNode(t, ctx, dirA, rs.URL())
	b := sharedNode(t, ctx, t.TempDir(), rs.URL())
	listed(t, ctx, a)
	until := time.Now().Add(time.Hour)
	for _, p := range []netip.Prefix{x, y} {
		if err := a.PutBan(ctx, Ban{Prefix: p, Until: until, Reason: "A"}); err != nil {
			t.Fatal(err)
		}
	}
	listed(t, ctx, b)
	if err := b.DeleteBan(ctx, y); err != nil { // while A is stopped
		t.Fatal(err)
	}
	a = sharedNode(t, ctx, dirA, rs.URL())
	if got, want := listed(t, ctx, a), []netip.Prefix{x}; !slices.Equal(got, want) {
		t.Fatalf("A after starting again: %v, want %v", got, want)
	}
}
