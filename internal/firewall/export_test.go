package firewall

import (
	"net/netip"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

// TestBackend is one kernel backend set up in a fresh pair of network
// namespaces (see newTestNet), for the external test package firewall_test,
// which drives it through the guard (guard imports firewall, so the guard
// cannot be used from package firewall's own tests).
type TestBackend struct {
	Enforcer Enforcer
	// Good4 and Bad4 share 192.0.2.0/24, Good6 and Bad6 2001:db8::/64; the
	// listener's own addresses are 192.0.2.1 and 2001:db8::1.
	Good4, Bad4, Good6, Bad6 netip.Addr
	n                        *testNet
}

// NewTestBackend returns the enforcer of backend ("nftables", "iptables",
// "ufw") in the server namespace of a new test network, set up.
func NewTestBackend(t *testing.T, backend string) *TestBackend {
	t.Helper()
	cfg := config.Default().Firewall
	cfg.Backend = backend
	var e Enforcer
	var n *testNet
	switch backend {
	case config.FirewallNFTables:
		needBinaries(t, "ip", "nft")
		n = newTestNet(t)
		e = newNFT(cfg, testLogger(t), n.srvFD)
	case config.FirewallIPTables:
		needBinaries(t, "ip", "ipset", "iptables", "ip6tables")
		n = newTestNet(t)
		e = newIPSet(cfg, testLogger(t), []string{"ip", "netns", "exec", n.srv})
	case config.FirewallUFW:
		needBinaries(t, "ip", "ufw")
		n = newTestNet(t)
		e = newUFW(cfg, testLogger(t), ufwInNS(t, n))
	default:
		t.Fatalf("backend %q", backend)
	}
	t.Cleanup(func() { e.Teardown(bg()) })
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	return &TestBackend{Enforcer: e, Good4: n.good4, Bad4: n.bad4, Good6: n.good6, Bad6: n.bad6, n: n}
}

// MustConnect fails unless src reaches the listener.
func (b *TestBackend) MustConnect(t testing.TB, src netip.Addr) { t.Helper(); b.n.mustConnect(t, src) }

// MustBeBlocked fails unless the listener drops every src.
func (b *TestBackend) MustBeBlocked(t testing.TB, srcs ...netip.Addr) {
	t.Helper()
	b.n.mustBeBlocked(t, srcs...)
}

// Blocked is MustBeBlocked returning the failure.
func (b *TestBackend) Blocked(srcs ...netip.Addr) error { return b.n.blocked(srcs...) }
