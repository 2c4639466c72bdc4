package guard

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// Two processes on one database (serve and `relayguard ban`): each reads
// from the change feed what the other changed, not its own changes; the
// history keeps the ban count (it held the ban's end, before one statement
// per Exec); a reader whose cursor was pruned is told to list everything.
func TestSQLiteChangeFeed(t *testing.T) {
	ctx := t.Context()
	db, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	srv, err := NewSQLiteStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewSQLiteStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Until: now.Add(time.Hour), Reason: "old", Source: "guard", Created: now, Count: 1}
	if err := srv.PutBan(ctx, old); err != nil {
		t.Fatal(err)
	}
	cur, err := srv.Cursor(ctx)
	if err != nil || cur == 0 {
		t.Fatalf("Cursor = %d, %v", cur, err)
	}
	if cs, next, err := srv.Changes(ctx, 0); err != nil || len(cs) != 0 || next != cur {
		t.Fatalf("own change read back: %+v %d %v", cs, next, err)
	}
	b := Ban{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Until: now.Add(2 * time.Hour), Reason: "manual ban", Source: "manual", Created: now, Count: 3}
	if err := cli.PutBan(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := cli.DeleteBan(ctx, old.Prefix); err != nil {
		t.Fatal(err)
	}
	if n, err := srv.BanCount(ctx, b.Prefix); n != 3 || err != nil {
		t.Fatalf("BanCount = %d, %v; want 3", n, err)
	}
	cs, next, err := srv.Changes(ctx, cur)
	if err != nil || len(cs) != 2 || next != cur+2 {
		t.Fatalf("Changes = %+v %d %v", cs, next, err)
	}
	got := cs[0].Ban
	if cs[0].Delete || got.Prefix != b.Prefix || !got.Until.Equal(b.Until) || got.Reason != b.Reason || got.Source != b.Source || got.Count != 3 {
		t.Fatalf("first change %+v, want the ban %+v", cs[0], b)
	}
	if !cs[1].Delete || cs[1].Ban.Prefix != old.Prefix {
		t.Fatalf("second change %+v, want the deletion of %s", cs[1], old.Prefix)
	}
	if cs, n2, err := srv.Changes(ctx, next); err != nil || len(cs) != 0 || n2 != next {
		t.Fatalf("nothing new: %+v %d %v", cs, n2, err)
	}
	// Pruned past a reader's cursor: the whole list must be read.
	if err := cli.PruneChanges(ctx, now.Add(changeKeep+time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Changes(ctx, cur); !errors.Is(err, ErrResync) {
		t.Fatalf("Changes past the pruned feed: %v, want ErrResync", err)
	}
	if cs, _, err := srv.Changes(ctx, next); err != nil || len(cs) != 0 {
		t.Fatalf("the latest change is kept as the cursor's reference: %+v %v", cs, err)
	}
}
