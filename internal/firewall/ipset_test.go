package firewall

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
)

func TestIPTablesIPSet(t *testing.T) {
	needBinaries(t, "ip", "ipset", "iptables", "ip6tables", "iptables-save", "ip6tables-save")
	hostSets := hostIPSets(t)
	n := newTestNet(t)
	cfg := config.Default().Firewall
	cfg.Backend = config.FirewallIPTables
	e := newIPSet(cfg, testLogger(t), []string{"ip", "netns", "exec", n.srv})
	t.Cleanup(func() { e.Teardown(bg()) })
	testEnforcer(t, n, e, backendHooks{
		expiry: 3 * time.Second,
		stray: func(t *testing.T, a netip.Addr) {
			set := cfg.IPSet4
			if a.Is6() {
				set = cfg.IPSet6
			}
			n.inside(t, "ipset", "add", set, a.String())
		},
		leftovers: func(t *testing.T) string {
			var left []string
			if out := n.inside(t, "ipset", "list", "-n"); strings.TrimSpace(out) != "" {
				left = append(left, "ipsets: "+out)
			}
			for _, tool := range []string{"iptables-save", "ip6tables-save"} {
				if out := n.inside(t, tool); strings.Contains(out, cfg.IPTChain) || strings.Contains(out, "match-set") {
					left = append(left, tool+":\n"+out)
				}
			}
			return strings.Join(left, "\n")
		},
	})
	if got := hostIPSets(t); got != hostSets {
		t.Fatalf("the host's ipsets changed: before %q, after %q", hostSets, got)
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(tool).CombinedOutput()
		if err != nil {
			t.Fatalf("%s on the host: %v\n%s", tool, err, out)
		}
		if strings.Contains(string(out), cfg.IPTChain) || strings.Contains(string(out), cfg.IPSet4) {
			t.Fatalf("the host's %s shows relayguard's rules:\n%s", tool, out)
		}
	}
}

func hostIPSets(t *testing.T) string {
	out, err := exec.Command("ipset", "list", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("ipset list -n on the host: %v\n%s", err, out)
	}
	return string(out)
}

func TestIPTablesMailPortsOnly(t *testing.T) {
	needBinaries(t, "ip", "ipset", "iptables", "ip6tables")
	n := newTestNet(t)
	cfg := config.Default().Firewall
	cfg.Ports = []int{int(n.port) + 1}
	e := newIPSet(cfg, testLogger(t), []string{"ip", "netns", "exec", n.srv})
	t.Cleanup(func() { e.Teardown(bg()) })
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{n.bad4, n.bad6} {
		if err := e.Add(bg(), banOf(a)); err != nil {
			t.Fatal(err)
		}
	}
	n.mustConnect(t, n.bad4)
	n.mustConnect(t, n.bad6)
	e.cfg.Ports = []int{25, int(n.port), 587}
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4, n.bad6)
	n.mustConnect(t, n.good4)
	if out := n.inside(t, "iptables", "-S", cfg.IPTChain); strings.Count(out, "-j DROP") != 1 {
		t.Fatalf("after the second setup the chain should hold one rule:\n%s", out)
	}
}
