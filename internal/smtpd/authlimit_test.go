package smtpd

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/guard"
)

// withGuard wires the real guard of ts's configuration into a server made
// by newTestServer, fed by the server's events as in serve.
func withGuard(t *testing.T, ts *testServer) *guard.Guard {
	g := guard.New(guard.Options{Config: ts.cfg.Guard})
	bus := &event.Bus{}
	bus.Subscribe(ts.events)
	bus.Subscribe(g)
	ts.srv.deps.Guard = g
	ts.srv.deps.Events = bus
	return g
}

// authOnce opens a session from src and tries one AUTH PLAIN; it returns
// the reply.
func authOnce(t *testing.T, ts *testServer, src, user, pw string) string {
	c := ts.dialFrom(t, "submissions", src)
	c.dialogue(`
S: 220
C: EHLO x
S: 250`)
	c.cmd("AUTH PLAIN " + plainIR(user, pw))
	r := c.reply()
	c.cmd("QUIT")
	return strings.Join(r, "\n")
}

// TestAuthLimitSparesNeighbours reproduces issue 12 items 1 and 2 over real
// sockets: a guesser's burst is cut at its cap before any password is
// hashed, a refused attempt is not a failure, and the /24 the guessers
// fill does not lock out an address of it that never failed, nor one that
// logged in recently.
func TestAuthLimitSparesNeighbours(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.Limits.MaxAuthFailures = 10
		c.Guard.MaxRetry = 1000 // limits only; loopback is never banned anyway
		c.Guard.AuthLimits = []config.AuthLimit{
			{Family: "ipv4", Bits: 32, PerMinute: 3, PerDay: 50},
			{Family: "ipv4", Bits: 24, PerMinute: 6, PerDay: 200},
		}
	})
	withGuard(t, ts)
	ts.start()

	// A burst of 10 concurrent wrong passwords from one address: only its
	// cap of 3 is checked, the others are refused before any hashing.
	var mu sync.Mutex
	replies := map[string]int{}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			r := authOnce(t, ts, "127.0.0.2", "alice", "guess")
			mu.Lock()
			replies[r[:3]]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if replies["535"] != 3 || replies["454"] != 7 {
		t.Fatalf("burst of 10 from one address: %v, want 3×535 and 7×454", replies)
	}
	if n := testutil.ToFloat64(ts.metrics.Auth.WithLabelValues("PLAIN", "failure")); n != 3 {
		t.Fatalf("%v passwords checked and failed, want 3", n)
	}
	// Hammering while refused counts nothing: still exactly 3 failures.
	for range 5 {
		if r := authOnce(t, ts, "127.0.0.2", "alice", "guess"); !strings.HasPrefix(r, "454 4.7.0 too many failed AUTH attempts from 127.0.0.2/32") {
			t.Fatalf("refused guesser got %q", r)
		}
	}
	// A second guesser fills the /24's cap of 6.
	for i := range 3 {
		if r := authOnce(t, ts, "127.0.0.4", "bob@mail.test", "guess"); !strings.HasPrefix(r, "535") {
			t.Fatalf("second guesser attempt %d: %q", i, r)
		}
	}
	// A neighbour that never failed logs in (it got 454 before the fix).
	if r := authOnce(t, ts, "127.0.0.3", "alice", testPassword); !strings.HasPrefix(r, "235") {
		t.Fatalf("innocent neighbour: %q", r)
	}
	// Having logged in, it may mistype without the full /24 biting.
	for i := range 3 {
		if r := authOnce(t, ts, "127.0.0.3", "alice", "typo"); !strings.HasPrefix(r, "535") {
			t.Fatalf("typo %d of a user who logged in: %q", i, r)
		}
	}
	// Its own cap still holds.
	if r := authOnce(t, ts, "127.0.0.3", "alice", "typo"); !strings.Contains(r, "127.0.0.3/32") {
		t.Fatalf("4th typo: %q", r)
	}
	// A fresh neighbour may try; once it failed, the full /24 bites on it.
	if r := authOnce(t, ts, "127.0.0.5", "alice", "guess"); !strings.HasPrefix(r, "535") {
		t.Fatalf("fresh neighbour's first try: %q", r)
	}
	if r := authOnce(t, ts, "127.0.0.5", "alice", "guess"); !strings.Contains(r, "127.0.0.0/24") {
		t.Fatalf("neighbour that failed, /24 full: %q", r)
	}
	// Another /24 is untouched.
	if r := authOnce(t, ts, "127.0.1.9", "alice", testPassword); !strings.HasPrefix(r, "235") {
		t.Fatalf("other /24: %q", r)
	}
	// Every refusal is logged with the key of the limit that bit.
	var bites int
	for _, l := range ts.logs.Lines() {
		if strings.Contains(l, `msg="limit reached"`) && strings.Contains(l, "limit=guard.auth_limit") {
			bites++
		}
	}
	if bites != 7+5+1+1 {
		t.Errorf("%d 'limit reached' lines for guard.auth_limit, want %d", bites, 7+5+1+1)
	}
	// Refusals are not AUTH failures for the guard either.
	var failures int
	for _, e := range ts.events.Snapshot() {
		if e.Kind == event.AuthFailure {
			failures++
		}
	}
	if want := 3 + 3 + 3 + 1; failures != want {
		t.Errorf("%d auth_failure events, want %d (one per checked wrong password)", failures, want)
	}
}
