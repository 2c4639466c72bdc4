package firewall

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
)

func nftConfig() config.FirewallConfig {
	cfg := config.Default().Firewall
	cfg.Backend = config.FirewallNFTables
	return cfg
}

func newNFTTest(t *testing.T, cfg config.FirewallConfig) (*testNet, *nft) {
	t.Helper()
	needBinaries(t, "ip", "nft")
	n := newTestNet(t)
	e := newNFT(cfg, testLogger(t), n.srvFD)
	t.Cleanup(func() {
		e.Teardown(bg())
		hostUntouched(t, cfg)
	})
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	return n, e
}

// hostUntouched checks that the host's own ruleset has no trace of the
// table the tests create in their namespaces.
func hostUntouched(t *testing.T, cfg config.FirewallConfig) {
	t.Helper()
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables on the host: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "inet "+cfg.Table+"\n") {
		t.Fatalf("the host has table inet %s:\n%s", cfg.Table, out)
	}
}

func TestNFTablesBanBlocksAndTeardownLeavesNothing(t *testing.T) {
	cfg := nftConfig()
	n, e := newNFTTest(t, cfg)
	for _, a := range []netip.Addr{n.good4, n.bad4, n.good6, n.bad6} {
		n.mustConnect(t, a)
	}
	now := time.Now()
	if err := e.Add(bg(), ban.Ban{Prefix: netip.PrefixFrom(n.bad4, 32), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(bg(), ban.Ban{Prefix: netip.PrefixFrom(n.bad6, 128), Until: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4)
	n.mustBeBlocked(t, n.bad6)
	n.mustConnect(t, n.good4)
	n.mustConnect(t, n.good6)

	ruleset := n.inside(t, "nft", "list", "ruleset")
	for _, want := range []string{"table inet relayguard", "flags interval,timeout", "192.0.2.3", "2001:db8::3 timeout", "hook input priority filter - 1"} {
		if !strings.Contains(ruleset, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, ruleset)
		}
	}
	st, err := e.Status(bg())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st, "192.0.2.3/32 permanent") || !strings.Contains(st, "2001:db8::3/128 expires in") ||
		strings.Contains(st, "@perm4    dropped 0 packets") {
		t.Errorf("status:\n%s", st)
	}
	t.Log(st)

	// Setup again (a restart) keeps the bans.
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4)
	n.mustBeBlocked(t, n.bad6)

	if err := e.Remove(bg(), netip.PrefixFrom(n.bad4, 32)); err != nil {
		t.Fatal(err)
	}
	n.mustConnect(t, n.bad4)
	n.mustBeBlocked(t, n.bad6)

	if err := e.Teardown(bg()); err != nil {
		t.Fatal(err)
	}
	if out := n.inside(t, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("teardown left:\n%s", out)
	}
	n.mustConnect(t, n.bad6)
	if err := e.Teardown(bg()); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}

func TestNFTablesExpiryLiftsBan(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	n.mustConnect(t, n.bad4)
	n.mustConnect(t, n.bad6)
	// A permanent ban elsewhere must survive the expiry.
	if err := e.Add(bg(), ban.Ban{Prefix: pfx("198.51.100.0/24")}); err != nil {
		t.Fatal(err)
	}
	// A /24 and a /64 around the attacker's banned addresses, temporary.
	until := n.shortBan(t, 3*time.Second, func(until time.Time) {
		for _, p := range []string{"192.0.2.0/24", "2001:db8::/64"} {
			if err := e.Add(bg(), ban.Ban{Prefix: pfx(p), Until: until}); err != nil {
				t.Fatal(err)
			}
		}
	}, n.good4, n.bad6)
	n.waitConnect(t, n.good4, time.Until(until)+30*time.Second)
	n.waitConnect(t, n.bad6, time.Until(until)+30*time.Second)
	out := n.inside(t, "nft", "list", "set", "inet", "relayguard", "ban4")
	if strings.Contains(out, "192.0.2.0/24") {
		t.Fatalf("expired element still listed:\n%s", out)
	}
	if out := n.inside(t, "nft", "list", "set", "inet", "relayguard", "perm4"); !strings.Contains(out, "198.51.100.0/24") {
		t.Fatalf("permanent ban gone:\n%s", out)
	}
	// The expired range's end element may still wait for garbage collection;
	// a wider range over it must still be accepted, and an Add of the same
	// prefix again must ban again.
	if err := e.Add(bg(), ban.Ban{Prefix: pfx("192.0.0.0/16"), Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(bg(), ban.Ban{Prefix: pfx("2001:db8::/64"), Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.good4, n.bad6)
}

func TestNFTablesReconcile(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	// Stray state written behind the enforcer's back: a ban of the attacker
	// and an unrelated range, with and without timeout.
	n.inside(t, "nft", "add element inet relayguard perm4 { 192.0.2.3, 203.0.113.0/24 }")
	n.inside(t, "nft", "add element inet relayguard ban6 { 2001:db8::2 timeout 1h }")
	n.mustBeBlocked(t, n.bad4)
	n.mustBeBlocked(t, n.good6)

	now := time.Now()
	bans := []ban.Ban{
		{Prefix: pfx("2001:db8::3/128")},                                    // missing: add (permanent)
		{Prefix: pfx("198.51.100.0/24"), Until: now.Add(time.Hour)},         // missing: add
		{Prefix: pfx("198.51.100.128/25"), Until: now.Add(2 * time.Hour)},   // nested, later: splits the /24
		{Prefix: pfx("198.51.101.0/24"), Until: now.Add(time.Hour)},         // expired below: dropped
		{Prefix: pfx("198.51.101.0/24"), Until: now.Add(-time.Minute)},      // duplicate, expired
		{Prefix: pfx("::ffff:198.51.102.0/120"), Until: now.Add(time.Hour)}, // 4-in-6 → 198.51.102.0/24
	}
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	n.mustConnect(t, n.bad4)
	n.mustConnect(t, n.good6)
	n.mustBeBlocked(t, n.bad6)

	want := map[setKind][]string{
		perm4: nil,
		perm6: {"2001:db8::3-2001:db8::3 perm"},
		// The nested /25 expiring later cuts the /24; the adjacent
		// 198.51.101.0/24 and 198.51.102.0/24 stay separate elements.
		temp4: {"198.51.100.0-198.51.100.127 1h", "198.51.100.128-198.51.100.255 2h", "198.51.101.0-198.51.101.255 1h", "198.51.102.0-198.51.102.255 1h"},
		temp6: nil,
	}
	c, err := e.c()
	if err != nil {
		t.Fatal(err)
	}
	for k, w := range want {
		segs, err := e.readSet(c, k)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range segs {
			got = append(got, s.Start.String()+"-"+s.End.String()+" "+roughly(s.Until, now))
		}
		if strings.Join(got, ",") != strings.Join(w, ",") {
			t.Errorf("set %s: got %q, want %q", e.set(k).Name, got, w)
		}
	}

	// A second reconcile with the same list changes nothing, and a shorter
	// list removes what is gone.
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(bg(), bans[1:2]); err != nil {
		t.Fatal(err)
	}
	n.mustConnect(t, n.bad6)
	out := n.inside(t, "nft", "list", "table", "inet", "relayguard")
	if strings.Contains(out, "2001:db8::3") || strings.Contains(out, "198.51.102") || !strings.Contains(out, "198.51.100.0/24 timeout") {
		t.Fatalf("after reconcile to one ban:\n%s", out)
	}
}

// roughly renders an expiry as "perm" or whole hours from now.
func roughly(u, now time.Time) string {
	if u.IsZero() {
		return "perm"
	}
	return u.Sub(now).Round(time.Hour).String()[:2]
}

func TestNFTablesMailPortsOnly(t *testing.T) {
	needBinaries(t, "ip", "nft")
	n := newTestNet(t)
	cfg := nftConfig()
	cfg.Ports = []int{int(n.port) + 1} // another port: the listener stays reachable
	e := newNFT(cfg, testLogger(t), n.srvFD)
	t.Cleanup(func() { e.Teardown(bg()) })
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Addr{n.bad4, n.bad6} {
		if err := e.Add(bg(), ban.Ban{Prefix: netip.PrefixFrom(p, p.BitLen())}); err != nil {
			t.Fatal(err)
		}
	}
	n.mustConnect(t, n.bad4)
	n.mustConnect(t, n.bad6)

	cfg.Ports = []int{25, int(n.port), 587}
	e2 := newNFT(cfg, testLogger(t), n.srvFD)
	if err := e2.Setup(bg()); err != nil { // replaces the rules, keeps the bans
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4)
	n.mustBeBlocked(t, n.bad6)
	n.mustConnect(t, n.good4)
}

// TestNFTablesAddOverlapping: Add and Remove of nested prefixes keep the
// sets equal to the computed segments.
func TestNFTablesAddOverlapping(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	now := time.Now()
	steps := []struct {
		add    *ban.Ban
		remove string
		want   map[setKind]string
	}{
		{add: &ban.Ban{Prefix: pfx("192.0.2.0/24"), Until: now.Add(time.Hour)},
			want: map[setKind]string{temp4: "192.0.2.0-192.0.2.255 1h"}},
		{add: &ban.Ban{Prefix: pfx("192.0.2.3/32"), Until: now.Add(2 * time.Hour)},
			want: map[setKind]string{temp4: "192.0.2.0-192.0.2.2 1h,192.0.2.3-192.0.2.3 2h,192.0.2.4-192.0.2.255 1h"}},
		{add: &ban.Ban{Prefix: pfx("192.0.2.0/24"), Until: now.Add(30 * time.Minute)}, // shorter: the later expiry stays
			want: map[setKind]string{temp4: "192.0.2.0-192.0.2.2 1h,192.0.2.3-192.0.2.3 2h,192.0.2.4-192.0.2.255 1h"}},
		{add: &ban.Ban{Prefix: pfx("192.0.2.0/24")}, // now permanent: moves to perm4
			want: map[setKind]string{perm4: "192.0.2.0-192.0.2.255 perm", temp4: "192.0.2.3-192.0.2.3 2h"}},
		{add: &ban.Ban{Prefix: pfx("192.0.3.0/24")}, // adjacent permanent: its own element
			want: map[setKind]string{perm4: "192.0.2.0-192.0.2.255 perm,192.0.3.0-192.0.3.255 perm", temp4: "192.0.2.3-192.0.2.3 2h"}},
		{add: &ban.Ban{Prefix: pfx("192.0.2.128/25")}, // nested permanent: absorbed
			want: map[setKind]string{perm4: "192.0.2.0-192.0.2.255 perm,192.0.3.0-192.0.3.255 perm", temp4: "192.0.2.3-192.0.2.3 2h"}},
		{remove: "192.0.2.0/24", // the nested /25 shows again
			want: map[setKind]string{perm4: "192.0.2.128-192.0.2.255 perm,192.0.3.0-192.0.3.255 perm", temp4: "192.0.2.3-192.0.2.3 2h"}},
		{remove: "192.0.2.3/32",
			want: map[setKind]string{perm4: "192.0.2.128-192.0.2.255 perm,192.0.3.0-192.0.3.255 perm"}},
	}
	for i, s := range steps {
		var err error
		if s.add != nil {
			err = e.Add(bg(), *s.add)
		} else {
			err = e.Remove(bg(), pfx(s.remove))
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		c, err := e.c()
		if err != nil {
			t.Fatal(err)
		}
		for k := temp4; k <= perm6; k++ {
			segs, err := e.readSet(c, k)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, x := range segs {
				got = append(got, x.Start.String()+"-"+x.End.String()+" "+roughly(x.Until, now))
			}
			if g := strings.Join(got, ","); g != s.want[k] {
				t.Fatalf("step %d: set %s holds %q, want %q", i, e.set(k).Name, g, s.want[k])
			}
		}
		if i == len(steps)-2 {
			n.mustBeBlocked(t, n.bad4) // 192.0.2.3/32 still banned on its own
		}
	}
	n.mustConnect(t, n.bad4)
}

// TestNFTablesStrayNested: a range written behind the enforcer's back
// around one of its bans (the kernel accepts a range nested in a range) is
// found by Reconcile and deleted; the nested ban stays.
func TestNFTablesStrayNested(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	n.inside(t, "nft", "add element inet relayguard ban4 { 192.0.2.0/24 timeout 1h }")
	b := ban.Ban{Prefix: netip.PrefixFrom(n.bad4, 32), Until: time.Now().Add(time.Hour)}
	if err := e.Add(bg(), b); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.good4)
	if err := e.Reconcile(bg(), []ban.Ban{b}); err != nil {
		t.Fatal(err)
	}
	n.mustConnect(t, n.good4)
	n.mustBeBlocked(t, n.bad4)
	if out := n.inside(t, "nft", "list", "set", "inet", "relayguard", "ban4"); strings.Contains(out, "192.0.2.0/24") || !strings.Contains(out, "192.0.2.3 timeout") {
		t.Fatalf("after the reconcile:\n%s", out)
	}
}

// TestNFTablesRebuildsRefusedSet: when the kernel refuses a diff (here: the
// deletion of a range it does not hold), the set is flushed and refilled
// with exactly the wanted ranges.
func TestNFTablesRebuildsRefusedSet(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	n.inside(t, "nft", "add element inet relayguard perm4 { 198.51.100.0/24, 192.0.2.2 }")
	want := []segment{{rng: prefixRange(netip.PrefixFrom(n.bad4, 32))}}
	bogus := map[rng]time.Time{prefixRange(pfx("203.0.113.0/24")): {}} // not in the kernel
	if err := e.applyOrRebuild(perm4, bogus, want); err != nil {
		t.Fatal(err)
	}
	n.mustConnect(t, n.good4)
	n.mustBeBlocked(t, n.bad4)
	out := n.inside(t, "nft", "list", "set", "inet", "relayguard", "perm4")
	if strings.Contains(out, "198.51.100.0/24") || !strings.Contains(out, "192.0.2.3") {
		t.Fatalf("after the rebuild:\n%s", out)
	}
}

// A chain flushed behind relayguard's back leaves the sets full and bans
// nobody: Reconcile reports it (naming the chain) instead of succeeding,
// and Setup followed by Reconcile (what the guard does on that error)
// restores the drop rules.
func TestNFTablesReconcileNoticesFlushedChain(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	bans := []ban.Ban{{Prefix: netip.PrefixFrom(n.bad4, 32)}, {Prefix: netip.PrefixFrom(n.bad6, 128), Until: time.Now().Add(time.Hour)}}
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4, n.bad6)
	n.inside(t, "nft", "flush", "chain", "inet", "relayguard", "input")
	n.mustConnect(t, n.bad4)
	err := e.Reconcile(bg(), bans)
	if err == nil || !strings.Contains(err.Error(), "chain inet relayguard input has no drop rule") {
		t.Fatalf("Reconcile over a flushed chain: %v", err)
	}
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4, n.bad6)
	n.mustConnect(t, n.good4)
}
