package guard

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/store"
)

// TestSQLiteCountersSurviveRestart: failures, the distinct failing
// addresses of a subnet and successful logins are kept in the database; a
// guard built again on it (a restarted watch) goes on counting where the
// first stopped.
func TestSQLiteCountersSurviveRestart(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := testConfig() // maxretry 3, findtime 10m; subnets: 5 addresses of a /24 within 1h
	now := t0
	var bans []Ban
	open := func() *Guard {
		sc, err := NewSQLiteCounters(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		g := New(Options{Config: c, Counters: sc, Logins: sc, Replay: true, Now: func() time.Time { return now },
			OnBan: func(b Ban) { bans = append(bans, b) }})
		if err := g.LoadLogins(ctx); err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := open()
	fail(g, "198.51.100.7", t0)
	fail(g, "198.51.100.7", t0.Add(time.Minute))
	for i, a := range []string{"212.70.149.4", "212.70.149.20", "212.70.149.36", "212.70.149.52"} {
		fail(g, a, t0.Add(time.Duration(i)*time.Second))
	}
	// A user logs in from 192.0.2.10: its grace needs 6 failures.
	g.Publish(ctx, event.Event{Time: t0, Kind: event.AuthSuccess, Source: "postfix", IP: netip.MustParseAddr("192.0.2.10")})
	for i := range 4 {
		fail(g, "192.0.2.10", t0.Add(time.Duration(i)*time.Second))
	}
	if len(bans) != 0 {
		t.Fatalf("bans before the restart: %+v", bans)
	}

	g = open() // restart
	now = t0.Add(2 * time.Minute)
	fail(g, "198.51.100.7", t0.Add(2*time.Minute))
	if len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("198.51.100.7/32") {
		t.Fatalf("third failure after the restart: bans %+v, want 198.51.100.7/32", bans)
	}
	fail(g, "212.70.149.83", t0.Add(3*time.Minute))
	if len(bans) != 2 || bans[1].Prefix != netip.MustParsePrefix("212.70.149.0/24") {
		t.Fatalf("fifth address of the /24 after the restart: bans %+v", bans)
	}
	fail(g, "192.0.2.10", t0.Add(3*time.Minute))
	if len(bans) != 2 {
		t.Fatalf("the grace of a login before the restart was forgotten: bans %+v", bans)
	}
	fail(g, "192.0.2.10", t0.Add(3*time.Minute+time.Second))
	if len(bans) != 3 || bans[2].Prefix != netip.MustParsePrefix("192.0.2.10/32") {
		t.Fatalf("sixth failure of the graced address: bans %+v", bans)
	}
	// Old rows are swept: an hour and more later nothing of t0 is left.
	fail(g, "203.0.113.1", t0.Add(3*time.Hour))
	var n int
	db.QueryRow(`SELECT count(*) FROM guard_failures WHERE t < ?`, t0.Add(time.Hour).UnixNano()).Scan(&n)
	if n != 0 {
		t.Errorf("%d failure rows older than every window were kept", n)
	}
}
