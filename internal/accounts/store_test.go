package accounts

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/redistest"
	"github.com/relayguard/relayguard/internal/store"
)

// t0 is recent: Redis expires keys on the real clock.
var t0 = time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)

func sqlStore(t *testing.T) *SQLStore {
	t.Helper()
	db, err := store.OpenSQLite(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := NewSQLStore(context.Background(), db, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func redisStores(t *testing.T) (*store.Stores, *redistest.Server) {
	t.Helper()
	rd := redistest.StartPersistent(t)
	st, err := store.Open(context.Background(), t.TempDir(), rd.URL(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, rd
}

// contract checks what every Store must do, on s.
func contract(t *testing.T, s Store) {
	ctx := context.Background()
	n := func(a string) netip.Prefix { return netip.MustParsePrefix(a) }
	// Logins: distinct networks within the window, case-insensitive names.
	for i, p := range []string{"10.1.0.0/16", "10.2.0.0/16", "10.1.0.0/16"} {
		nets, err := s.AddLogin(ctx, "Bob", n(p), t0.Add(time.Duration(i)*time.Minute), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(i+1, 2); len(nets) != want {
			t.Fatalf("login %d: %d networks %v, want %d", i, len(nets), nets, want)
		}
	}
	nets, _ := s.AddLogin(ctx, "bob", n("10.3.0.0/16"), t0.Add(90*time.Minute), time.Hour)
	if len(nets) != 1 || nets[0] != n("10.3.0.0/16") {
		t.Fatalf("90 minutes later: %v, want only 10.3 (the others are older than the hour)", nets)
	}
	if ok, _ := s.KnownNetwork(ctx, "BOB", n("10.2.0.0/16"), t0); !ok {
		t.Error("10.2 not known")
	}
	if ok, _ := s.KnownNetwork(ctx, "bob", n("10.2.0.0/16"), t0.Add(time.Hour)); ok {
		t.Error("10.2 known although older than since")
	}
	if ok, _ := s.LoggedIn(ctx, "bob"); !ok {
		t.Error("bob never logged in?")
	}
	if ok, _ := s.LoggedIn(ctx, "admin"); ok {
		t.Error("admin logged in?")
	}
	// Forgive: earlier logins stop counting for the spread, not for known.
	if err := s.Forgive(ctx, "bob", t0.Add(95*time.Minute)); err != nil {
		t.Fatal(err)
	}
	nets, _ = s.AddLogin(ctx, "bob", n("10.4.0.0/16"), t0.Add(100*time.Minute), time.Hour)
	if len(nets) != 1 || nets[0] != n("10.4.0.0/16") {
		t.Errorf("after Forgive: %v, want only 10.4 (10.3, within the hour, was forgiven)", nets)
	}
	if ok, _ := s.KnownNetwork(ctx, "bob", n("10.3.0.0/16"), t0); !ok {
		t.Error("Forgive forgot a known network")
	}
	// Failures: distinct addresses in the window.
	for i, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3"} {
		c, err := s.AddFailure(ctx, "carol", netip.MustParseAddr(a), t0.Add(time.Duration(i)*time.Minute), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{1, 2, 2, 3}[i]; c != want {
			t.Fatalf("failure %d: %d addresses, want %d", i, c, want)
		}
	}
	if c, _ := s.Failures(ctx, "carol", t0.Add(2*time.Minute)); c != 2 {
		t.Errorf("failures since +2m: %d, want 2", c)
	}
	// Volumes.
	for h, c := range []int64{3, 7, 2} {
		if _, err := s.AddSent(ctx, "dave", t0.Add(time.Duration(h)*time.Hour), c); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := s.AddSent(ctx, "dave", t0.Add(2*time.Hour), 1); c != 3 {
		t.Errorf("hour count %d, want 3", c)
	}
	if p, _ := s.PeakHour(ctx, "dave", t0, t0.Add(2*time.Hour)); p != 7 {
		t.Errorf("peak %d, want 7", p)
	}
	if p, _ := s.PeakHour(ctx, "nobody", t0, t0.Add(2*time.Hour)); p != 0 {
		t.Errorf("peak of no history %d, want 0", p)
	}
	// Outcomes.
	var total, bad int64
	for _, b := range []bool{true, false, true} {
		total, bad, _ = s.AddOutcome(ctx, "erin", t0, 24*time.Hour, b)
	}
	if total != 3 || bad != 2 {
		t.Errorf("outcomes %d/%d, want 2 bad of 3", bad, total)
	}
	// Queue ids per host.
	s.TieQueueID(ctx, "mx1", "Frank", "Q1", t0)
	s.TieQueueID(ctx, "mx1", "frank", "Q2", t0.Add(time.Minute))
	s.TieQueueID(ctx, "mx2", "frank", "Q3", t0)
	if ids, _ := s.QueueIDs(ctx, "mx1", "frank", t0); !slices.Equal(ids, []string{"Q1", "Q2"}) {
		t.Errorf("queue ids %v", ids)
	}
	if u, ok, _ := s.QueueUser(ctx, "mx1", "Q2"); !ok || u != "frank" {
		t.Errorf("queue user %q %v", u, ok)
	}
	if _, ok, _ := s.QueueUser(ctx, "mx1", "Q3"); ok {
		t.Error("another host's queue id found")
	}
	// Suspensions: the first one is kept.
	sp := Suspension{User: "Grace", Since: t0, Signal: "login_spread", Evidence: "9 networks", By: "mx1 (milter)"}
	if c, err := s.Suspend(ctx, sp); err != nil || !c {
		t.Fatalf("suspend: %v %v", c, err)
	}
	if c, _ := s.Suspend(ctx, Suspension{User: "grace", Since: t0.Add(time.Hour), Signal: "manual"}); c {
		t.Error("a second suspension replaced the first")
	}
	got, ok, _ := s.Suspended(ctx, "GRACE")
	if !ok || got.Signal != "login_spread" || got.Evidence != "9 networks" || got.By != "mx1 (milter)" || !got.Since.Equal(t0) {
		t.Errorf("suspended: %+v %v", got, ok)
	}
	if l, _ := s.Suspensions(ctx); len(l) != 1 {
		t.Errorf("suspensions: %+v", l)
	}
	if _, ok, _ := s.Unsuspend(ctx, "grace"); !ok {
		t.Error("unsuspend found nothing")
	}
	if _, ok, _ := s.Suspended(ctx, "grace"); ok {
		t.Error("still suspended")
	}
	if _, ok, _ := s.Unsuspend(ctx, "grace"); ok {
		t.Error("unsuspended twice")
	}
}

func TestSQLStoreContract(t *testing.T) { contract(t, sqlStore(t)) }

func TestRedisStoreContract(t *testing.T) {
	st, _ := redisStores(t)
	contract(t, NewRedisStore(st.Redis, 30*24*time.Hour))
}

func TestSharedContract(t *testing.T) {
	st, _ := redisStores(t)
	s, err := NewStore(context.Background(), st, 30*24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*Shared); !ok {
		t.Fatalf("NewStore with Redis gave %T", s)
	}
	contract(t, s)
}

// Two servers share suspensions through Redis. While Redis is down a
// suspension is made on local state (and the server that made it enforces
// it); when Redis returns it is written there and the other server sees it.
func TestSharedSuspensionSurvivesOutage(t *testing.T) {
	ctx := context.Background()
	rd := redistest.StartPersistent(t)
	open := func() *Shared { return openShared(t, rd) }
	a, b := open(), open()
	if c, _ := a.Suspend(ctx, Suspension{User: "bob", Since: t0, Signal: "manual"}); !c {
		t.Fatal("not created")
	}
	if _, ok, _ := b.Suspended(ctx, "bob"); !ok {
		t.Fatal("the other server does not see the suspension")
	}
	rd.Stop()
	if c, err := a.Suspend(ctx, Suspension{User: "carol", Since: t0, Signal: "login_spread"}); err != nil || !c {
		t.Fatalf("suspend during the outage: %v %v", c, err)
	}
	if _, ok, err := a.Suspended(ctx, "carol"); err != nil || !ok {
		t.Fatalf("the suspending server does not enforce its own suspension during the outage: %v %v", ok, err)
	}
	if _, _, _, err := unsuspendErr(a, ctx, "bob"); err != nil {
		t.Fatalf("unsuspend during the outage: %v", err)
	}
	rd.Restart()
	time.Sleep(100 * time.Millisecond) // past Health.Retry
	hold := func(user string, want bool) {
		t.Helper()
		var ok bool
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			a.Suspensions(ctx) // any operation resynchronises a
			if _, ok, _ = b.Suspended(ctx, user); ok == want {
				return
			}
		}
		t.Fatalf("after the outage the other server says %s suspended=%v, want %v", user, ok, want)
	}
	hold("carol", true)
	hold("bob", false)
}

func unsuspendErr(s Store, ctx context.Context, user string) (Suspension, bool, int, error) {
	sp, ok, err := s.Unsuspend(ctx, user)
	return sp, ok, 0, err
}

// TestSharedSuspensionHeldByOthersDuringOutage: a suspension made on one
// server stays in force on the others while Redis is down, for that account
// alone. The other servers fell back to their own database, which had never
// seen it: during an outage the stolen account logged in and sent again
// there, and their responders released its held mail (the list of
// suspensions no longer named it). Each server now keeps a copy of the
// cluster's suspensions it has read, and drops it when Redis says the
// account was unsuspended.
func TestSharedSuspensionHeldByOthersDuringOutage(t *testing.T) {
	ctx := context.Background()
	rd := redistest.StartPersistent(t)
	open := func() *Shared { return openShared(t, rd) }
	a, b, c := open(), open(), open()
	if created, err := a.Suspend(ctx, Suspension{User: "bob", Since: t0, Signal: "login_spread"}); err != nil || !created {
		t.Fatalf("suspend: %v %v", created, err)
	}
	// b asks about bob (a front door: Gate.Suspended); c lists the
	// suspensions (a responder holding mail).
	if _, ok, err := b.Suspended(ctx, "bob"); err != nil || !ok {
		t.Fatalf("b does not see the suspension: %v %v", ok, err)
	}
	if list, err := c.Suspensions(ctx); err != nil || len(list) != 1 {
		t.Fatalf("c's suspensions: %+v %v", list, err)
	}
	rd.Stop()
	for name, s := range map[string]*Shared{"b": b, "c": c} {
		if _, ok, err := s.Suspended(ctx, "bob"); err != nil || !ok {
			t.Errorf("Redis down: %s lets the suspended account in (suspended=%v, %v)", name, ok, err)
		}
		if _, ok, err := s.Suspended(ctx, "carol"); err != nil || ok {
			t.Errorf("Redis down: %s locks out another account (suspended=%v, %v)", name, ok, err)
		}
		if list, err := s.Suspensions(ctx); err != nil || len(list) != 1 || list[0].User != "bob" {
			t.Errorf("Redis down: %s's suspensions %+v %v, want bob's (else its held mail is released)", name, list, err)
		}
	}
	rd.Restart()
	time.Sleep(100 * time.Millisecond) // past Health.Retry
	if _, ok, err := a.Unsuspend(ctx, "bob"); err != nil || !ok {
		t.Fatalf("unsuspend: %v %v", ok, err)
	}
	b.Suspended(ctx, "bob") // (read from Redis again: the copy goes)
	c.Suspensions(ctx)
	rd.Stop()
	for name, s := range map[string]*Shared{"b": b, "c": c} {
		if _, ok, err := s.Suspended(ctx, "bob"); err != nil || ok {
			t.Errorf("unsuspended, then Redis down: %s still refuses bob (suspended=%v, %v)", name, ok, err)
		}
	}
}

// TestSharedSignalsWrittenBackAfterOutage: what a server saw of an account
// while Redis was down (its logins from new networks, its failed logins)
// reaches Redis once it is back, so that the cluster's login spread and
// guessing counts go on from there: it stayed in that server's database,
// and a stolen account used from many networks during an outage started
// the cluster's count afresh afterwards.
func TestSharedSignalsWrittenBackAfterOutage(t *testing.T) {
	ctx := context.Background()
	rd := redistest.StartPersistent(t)
	open := func() *Shared { return openShared(t, rd) }
	a, b := open(), open()
	now := time.Now()
	n := func(i int) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16) }
	if _, err := a.AddLogin(ctx, "bob", n(1), now, time.Hour); err != nil {
		t.Fatal(err)
	}
	rd.Stop()
	for i := 2; i <= 4; i++ {
		if _, err := a.AddLogin(ctx, "bob", n(i), now.Add(time.Duration(i)*time.Second), time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := a.AddFailure(ctx, "carol", netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), now.Add(time.Duration(i)*time.Second), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	rd.Restart()
	time.Sleep(100 * time.Millisecond) // past Health.Retry
	a.Suspensions(ctx)                 // (the responder's read every second)
	nets, err := b.AddLogin(ctx, "bob", n(5), now.Add(5*time.Second), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 5 {
		t.Errorf("the other server's count of bob's networks after the outage: %d %v, want 5", len(nets), nets)
	}
	if f, err := b.AddFailure(ctx, "carol", netip.MustParseAddr("192.0.2.5"), now.Add(5*time.Second), time.Hour); err != nil || f != 4 {
		t.Errorf("the other server's count of carol's failures after the outage: %d %v, want 4", f, err)
	}
}

// TestSharedSuspensionsSurviveEmptyRedis (breaker10's finding): Redis
// restarted without its data (no persistence, a new instance) said "no
// suspensions", and every server took the suspensions it held as lifted
// elsewhere and dropped them, letting the stolen account in again. Redis's
// epoch tells a loss from a lift: the servers keep theirs and write them
// back; a lift made afterwards still reaches every server.
func TestSharedSuspensionsSurviveEmptyRedis(t *testing.T) {
	ctx := context.Background()
	rd := redistest.Start(t) // (not persistent: a restart empties it)
	open := func() *Shared { return openShared(t, rd) }
	a, b, c := open(), open(), open()
	if created, err := a.Suspend(ctx, Suspension{User: "bob", Since: t0, Signal: "login_spread"}); err != nil || !created {
		t.Fatalf("suspend: %v %v", created, err)
	}
	if _, ok, err := b.Suspended(ctx, "bob"); err != nil || !ok {
		t.Fatalf("b does not see the suspension: %v %v", ok, err)
	}
	if list, err := c.Suspensions(ctx); err != nil || len(list) != 1 {
		t.Fatalf("c's suspensions: %+v %v", list, err)
	}
	rd.Stop()
	rd.Restart()                       // empty
	time.Sleep(100 * time.Millisecond) // past Health.Retry
	for range 3 {                      // (a read may meet the dropped connection: Redis is used again after Retry)
		c.Suspensions(ctx)
		b.Suspended(ctx, "bob")
		time.Sleep(100 * time.Millisecond)
	}
	if !c.health.Usable() || !b.health.Usable() {
		t.Fatal("Redis restarted but not usable again")
	}
	for name, s := range map[string]*Shared{"a": a, "b": b, "c": c} {
		if _, ok, err := s.Suspended(ctx, "bob"); err != nil || !ok {
			t.Errorf("Redis restarted empty: %s lets bob in (suspended=%v, %v)", name, ok, err)
		}
		if list, err := s.Suspensions(ctx); err != nil || len(list) != 1 || list[0].User != "bob" {
			t.Errorf("Redis restarted empty: %s's suspensions %+v %v, want bob's", name, list, err)
		}
	}
	if _, ok, err := a.remote.Suspended(ctx, "bob"); err != nil || !ok {
		t.Errorf("bob's suspension not written back to Redis: %v %v", ok, err)
	}
	// A lift after that still reaches everyone.
	if _, ok, err := a.Unsuspend(ctx, "bob"); err != nil || !ok {
		t.Fatalf("unsuspend: %v %v", ok, err)
	}
	b.Suspended(ctx, "bob")
	c.Suspensions(ctx)
	rd.Stop()
	for name, s := range map[string]*Shared{"b": b, "c": c} {
		if _, ok, err := s.Suspended(ctx, "bob"); err != nil || ok {
			t.Errorf("unsuspended, then Redis down: %s still refuses bob (suspended=%v, %v)", name, ok, err)
		}
	}
}

// openShared opens a server's shared accounts state: its own SQLite
// database and rd, Redis used again 50 ms after a failure.
func openShared(t *testing.T, rd *redistest.Server) *Shared {
	t.Helper()
	st, err := store.Open(t.Context(), t.TempDir(), rd.URL(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.Redis.Health.Retry = 50 * time.Millisecond
	s, err := NewStore(t.Context(), st, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*Shared)
}
