package guard

import (
	"context"
	"fmt"
	"github.com/relayguard/relayguard/internal/redistest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/store"
)

// server is one relayguard instance: its own SQLite database, the shared Redis.
type server struct {
	g      *Guard
	redis  *store.Redis
	shared *Shared
	local  *SQLiteStore
	wake   chan struct{}
}

func newServer(t *testing.T, ctx context.Context, url string) *server {
	t.Helper()
	sh := sharedNode(t, ctx, t.TempDir(), url)
	r := sh.Remote
	s := &server{redis: r, local: sh.Local.(*SQLiteStore), shared: sh, wake: make(chan struct{}, 1)}
	s.g = New(Options{Config: testConfig(), Store: s.shared,
		Counters: &FallbackCounters{Primary: r, Fallback: NewMemory(), Health: r.Health}})
	go s.shared.Listen(ctx, func() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
	go s.g.Run(ctx, 200*time.Millisecond, s.wake)
	return s
}

// eventually waits (generously: not a speed assertion) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func banned(s *server, ip string) func() bool {
	return func() bool { _, ok := s.g.Banned(netip.MustParseAddr(ip)); return ok }
}

func TestSharedBansThroughRedis(t *testing.T) {
	rs := redistest.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	a := newServer(t, ctx, rs.URL())
	b := newServer(t, ctx, rs.URL())

	// Failures are counted across servers: two seen by A, one by B
	// (maxretry 3) ban the address.
	now := time.Now()
	fail(a.g, "198.51.100.7", now)
	fail(a.g, "198.51.100.7", now.Add(time.Second))
	if _, ok := a.g.Banned(netip.MustParseAddr("198.51.100.7")); ok {
		t.Fatal("banned after two failures")
	}
	fail(b.g, "198.51.100.7", now.Add(2*time.Second))
	eventually(t, "B bans the address", banned(b, "198.51.100.7"))
	eventually(t, "A learns the ban", banned(a, "198.51.100.7"))

	// A manual ban on A reaches B.
	if _, err := a.g.Ban(ctx, netip.MustParsePrefix("2001:db8:bad::/48"), time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B learns A's manual ban", banned(b, "2001:db8:bad::1"))

	// Redis dies. Both keep enforcing; A bans more meanwhile.
	rs.Stop()
	if _, err := a.g.Ban(ctx, netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "while redis was down"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a few Sync rounds against a dead Redis
	for _, ip := range []string{"198.51.100.7", "2001:db8:bad::1"} {
		if !banned(a, ip)() || !banned(b, ip)() {
			t.Fatalf("%s not enforced while Redis is down", ip)
		}
	}

	// Redis returns, empty. No ban is lost: both push theirs back and B
	// learns the ban A made during the outage.
	rs.Restart()
	eventually(t, "B learns the ban made during the outage", banned(b, "203.0.113.9"))
	eventually(t, "Redis holds every ban again", func() bool {
		bans, err := a.redis.ListBans(ctx)
		return err == nil && len(bans) == 3
	})
	for _, ip := range []string{"198.51.100.7", "2001:db8:bad::1", "203.0.113.9"} {
		if !banned(a, ip)() || !banned(b, ip)() {
			t.Fatalf("%s lost after Redis came back", ip)
		}
	}
	// And sharing works again: an unban on B reaches A.
	if found, err := b.g.Unban(ctx, netip.MustParsePrefix("203.0.113.0/24")); !found || err != nil {
		t.Fatalf("Unban: %v %v", found, err)
	}
	eventually(t, "A learns the unban", func() bool { return !banned(a, "203.0.113.9")() })
}

// The AUTH failure limits are shared through Redis and keep biting, counted
// locally, while Redis is down.
func TestAuthLimitsSharedAndWithoutRedis(t *testing.T) {
	rs := redistest.Start(t)
	ctx := t.Context()
	c := testConfig()
	c.MaxRetry = 100 // limits only, no bans
	c.AuthLimits = []config.AuthLimit{{Family: "ipv4", Bits: 32, PerMinute: 0, PerDay: 2}}
	newGuard := func() *Guard {
		r, err := store.OpenRedis(ctx, rs.URL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		g := New(Options{Config: c})
		UseLimitCounter(g, limits.NewFallbackCounter(r, r.Health))
		return g
	}
	a, b := newGuard(), newGuard()
	smtpdFail := func(g *Guard, ip string) {
		r, err := g.AuthAttempt(ctx, netip.MustParseAddr(ip))
		if err != nil {
			t.Fatalf("attempt from %s refused: %v", ip, err)
		}
		r.End(ctx, true)
	}
	allowed := func(g *Guard, ip string) (bool, string) {
		r, err := g.AuthAttempt(ctx, netip.MustParseAddr(ip))
		if err != nil {
			return false, err.Error()
		}
		r.End(ctx, false)
		return true, ""
	}
	// One failure on each server: the address's cap of 2 is full on both.
	smtpdFail(a, "198.51.100.7")
	if ok, _ := allowed(b, "198.51.100.7"); !ok {
		t.Fatal("refused after one failure")
	}
	smtpdFail(b, "198.51.100.7")
	for name, g := range map[string]*Guard{"A": a, "B": b} {
		if ok, reason := allowed(g, "198.51.100.7"); ok || !strings.Contains(reason, "198.51.100.7/32") {
			t.Fatalf("server %s after two shared failures: ok=%v %q", name, ok, reason)
		}
	}
	// Redis dies: each server still limits what it sees itself.
	rs.Stop()
	smtpdFail(a, "198.51.100.8")
	if ok, _ := allowed(a, "198.51.100.8"); !ok {
		t.Fatal("refused after one failure while Redis is down")
	}
	smtpdFail(a, "198.51.100.8")
	if ok, reason := allowed(a, "198.51.100.8"); ok || !strings.Contains(reason, "198.51.100.8/32") {
		t.Fatalf("limit not applied while Redis is down: ok=%v %q", ok, reason)
	}
}

// downCounters is a shared store that is down: every call fails.
type downCounters struct{ calls int }

func (d *downCounters) AddFailure(context.Context, netip.Addr, time.Time, time.Duration) (int, error) {
	d.calls++
	return 0, fmt.Errorf("redis: connection refused")
}

func (d *downCounters) AddAttacker(context.Context, netip.Prefix, netip.Addr, time.Time, time.Duration) (int, error) {
	d.calls++
	return 0, fmt.Errorf("redis: connection refused")
}

func (d *downCounters) Forget(context.Context, netip.Addr) error {
	d.calls++
	return fmt.Errorf("redis: connection refused")
}

// While the shared counters are down, failures are counted locally (bans
// still happen) and the dead store is not asked again for every event.
func TestFallbackCountersWhileDown(t *testing.T) {
	dead := &downCounters{}
	g := New(Options{Config: testConfig(), Counters: &FallbackCounters{Primary: dead, Fallback: NewMemory(), Health: &store.Health{Retry: time.Hour}}})
	now := time.Now()
	for k := range 3 {
		fail(g, "198.51.100.7", now.Add(time.Duration(k)*time.Millisecond))
	}
	if _, ok := g.Banned(netip.MustParseAddr("198.51.100.7")); !ok {
		t.Fatal("not banned while the shared counters are down")
	}
	if dead.calls != 1 {
		t.Fatalf("the dead store was asked %d times, want once", dead.calls)
	}
}

// Bans added and lifted by a short-lived process (`relayguard ban`) while
// Redis is down reach Redis and the other server when Redis returns with its
// data set intact; before, the running server saw the same epoch, adopted
// Redis's list and dropped the new ban from its own store.
func TestSharedChangesMadeWhileRedisDown(t *testing.T) {
	rs := redistest.StartPersistent(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	a := newServer(t, ctx, rs.URL())
	b := newServer(t, ctx, rs.URL())
	if _, err := a.g.Ban(ctx, netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "before"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B learns the first ban", banned(b, "192.0.2.1"))

	rs.Stop()
	// `relayguard ban add` / `ban del` on A's host: another process, its
	// own Shared over A's database.
	r, _ := store.OpenRedis(ctx, rs.URL(), nil)
	defer r.Close()
	cliLocal, err := NewSQLiteStore(ctx, a.local.DB) // its own connection to the database
	if err != nil {
		t.Fatal(err)
	}
	cli := New(Options{Config: testConfig(), Store: NewShared(cliLocal, r, nil)})
	if _, err := cli.Ban(ctx, netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "while down"); err != nil {
		t.Fatal(err)
	}
	if found, err := cli.Unban(ctx, netip.MustParsePrefix("192.0.2.0/24")); !found || err != nil {
		t.Fatalf("Unban: %v %v", found, err)
	}
	eventually(t, "A enforces the new ban from its own store", banned(a, "203.0.113.9"))

	rs.Restart()
	eventually(t, "B learns the ban made while Redis was down", banned(b, "203.0.113.9"))
	eventually(t, "B learns the unban made while Redis was down", func() bool { return !banned(b, "192.0.2.1")() })
	eventually(t, "Redis holds exactly the new ban", func() bool {
		bans, err := a.redis.ListBans(ctx)
		return err == nil && len(bans) == 1 && bans[0].Prefix == netip.MustParsePrefix("203.0.113.0/24")
	})
	if !banned(a, "203.0.113.9")() || banned(a, "192.0.2.1")() {
		t.Fatal("A lost the changes made while Redis was down")
	}
}
