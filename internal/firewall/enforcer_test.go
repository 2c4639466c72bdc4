package firewall

import (
	"net/netip"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
)

// backendHooks are what the shared enforcer test needs to know of a backend.
type backendHooks struct {
	// stray bans addr behind the enforcer's back (as a crashed run or an
	// operator would leave it).
	stray func(t *testing.T, addr netip.Addr)
	// leftovers returns a description of anything the backend left in the
	// namespace, or "".
	leftovers func(t *testing.T) string
	// expiry is the length of the short ban in the expiry test: long enough
	// for the backend's Adds and a blocked check under load.
	expiry time.Duration
}

// testEnforcer is the behaviour every kernel backend must show: a banned
// source cannot connect and an unbanned one can (IPv4 and IPv6), Remove and
// expiry lift a ban, Reconcile removes stray bans and adds missing ones,
// and Teardown leaves nothing behind.
func testEnforcer(t *testing.T, n *testNet, e Enforcer, h backendHooks) {
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{n.good4, n.bad4, n.good6, n.bad6} {
		n.mustConnect(t, a)
	}
	if err := e.Add(bg(), ban.Ban{Prefix: netip.PrefixFrom(n.bad4, 32)}); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(bg(), ban.Ban{Prefix: netip.PrefixFrom(n.bad6, 128), Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4, n.bad6)
	n.mustConnect(t, n.good4)
	n.mustConnect(t, n.good6)
	st, err := e.Status(bg())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status:\n%s", st)

	// Setup again (a restart) keeps the bans.
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4, n.bad6)

	if err := e.Remove(bg(), netip.PrefixFrom(n.bad4, 32)); err != nil {
		t.Fatal(err)
	}
	n.mustConnect(t, n.bad4)

	t.Run("expiry", func(t *testing.T) {
		until := n.shortBan(t, h.expiry, func(until time.Time) {
			for _, p := range []string{"192.0.2.0/24", "2001:db8::/64"} {
				if err := e.Add(bg(), ban.Ban{Prefix: pfx(p), Until: until}); err != nil {
					t.Fatal(err)
				}
			}
		}, n.good4, n.good6)
		n.waitConnect(t, n.good4, time.Until(until)+30*time.Second)
		n.waitConnect(t, n.good6, time.Until(until)+30*time.Second)
		n.mustBeBlocked(t, n.bad6) // its own one-hour ban is still there
	})

	t.Run("reconcile", func(t *testing.T) {
		h.stray(t, n.bad4)
		h.stray(t, n.good6)
		n.mustBeBlocked(t, n.bad4, n.good6)
		bans := []ban.Ban{
			{Prefix: netip.PrefixFrom(n.bad6, 128)},                                    // still there, now permanent
			{Prefix: pfx("198.51.100.0/24"), Until: time.Now().Add(time.Hour)},         // missing: added
			{Prefix: netip.PrefixFrom(n.good4, 32), Until: time.Now().Add(-time.Hour)}, // expired: not added
		}
		if err := e.Reconcile(bg(), bans); err != nil {
			t.Fatal(err)
		}
		n.mustConnect(t, n.bad4)
		n.mustConnect(t, n.good6)
		n.mustConnect(t, n.good4)
		n.mustBeBlocked(t, n.bad6)
		st, err := e.Status(bg())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("status after reconcile:\n%s", st)
		if err := e.Reconcile(bg(), nil); err != nil {
			t.Fatal(err)
		}
		n.mustConnect(t, n.bad6)
		if err := e.Reconcile(bg(), bans[:1]); err != nil {
			t.Fatal(err)
		}
		n.mustBeBlocked(t, n.bad6)
	})

	if err := e.Teardown(bg()); err != nil {
		t.Fatal(err)
	}
	if left := h.leftovers(t); left != "" {
		t.Fatalf("teardown left:\n%s", left)
	}
	n.mustConnect(t, n.bad6)
	if err := e.Teardown(bg()); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}
