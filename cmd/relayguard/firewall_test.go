package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestFirewallCLI runs `relayguard firewall setup|status|teardown` inside a
// network namespace the test creates, for nftables and iptables+ipset, and
// checks the kernel state with nft, ipset and iptables-save there.
func TestFirewallCLI(t *testing.T) {
	for _, b := range []string{"ip", "nft", "ipset", "iptables-save"} {
		if _, err := exec.LookPath(b); err != nil || os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI: needs root and %s", b)
			}
			t.Skipf("needs root and %s", b)
		}
	}
	dir := t.TempDir()
	bin := testBinary(t)
	ns := fmt.Sprintf("rgfwcli%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	in := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		return string(out), err
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := in(append([]string{bin, "--data-dir", dir}, args...)...)
		if err != nil {
			t.Fatalf("relayguard %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	// Bans made before the firewall exists are loaded by setup.
	cli("ban", "add", "203.0.113.0/24", "--for", "2h")
	cli("ban", "add", "2001:db8:bad::/48")
	if out := cli("firewall", "setup", "--backend", "nftables"); !strings.Contains(out, "2 bans loaded") {
		t.Fatalf("setup: %s", out)
	}
	if out, _ := in("nft", "list", "table", "inet", "relayguard"); !strings.Contains(out, "set perm4") || !strings.Contains(out, "hook input") {
		t.Fatalf("after setup:\n%s", out)
	}
	if out, _ := in("nft", "list", "set", "inet", "relayguard", "ban4"); !strings.Contains(out, "203.0.113.0/24") {
		t.Fatalf("setup did not load the temporary IPv4 ban:\n%s", out)
	}
	if out, _ := in("nft", "list", "set", "inet", "relayguard", "perm6"); !strings.Contains(out, "2001:db8:bad::/48") {
		t.Fatalf("setup did not load the permanent IPv6 ban:\n%s", out)
	}
	if out := cli("firewall", "status", "--backend", "nftables"); !strings.Contains(out, "table inet relayguard") {
		t.Fatalf("status:\n%s", out)
	}
	cli("firewall", "teardown", "--backend", "nftables")
	if out, _ := in("nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("after teardown:\n%s", out)
	}

	if out := cli("firewall", "setup", "--backend", "iptables"); !strings.Contains(out, "2 bans loaded") {
		t.Fatalf("setup: %s", out)
	}
	if out, _ := in("ipset", "list", "relayguard4"); !strings.Contains(out, "203.0.113.0/24") {
		t.Fatalf("setup did not load the IPv4 ban into the ipset:\n%s", out)
	}
	if out, _ := in("ipset", "list", "relayguard6"); !strings.Contains(out, "2001:db8:bad::/48") {
		t.Fatalf("setup did not load the IPv6 ban into the ipset:\n%s", out)
	}
	if out, _ := in("iptables-save"); !strings.Contains(out, "-A INPUT -j RELAYGUARD") || !strings.Contains(out, "--match-set relayguard4 src -j DROP") {
		t.Fatalf("after setup:\n%s", out)
	}
	if out := cli("firewall", "status", "--backend", "iptables"); !strings.Contains(out, "ipset relayguard6: number of entries: 1") {
		t.Fatalf("status:\n%s", out)
	}
	cli("firewall", "teardown", "--backend", "iptables")
	if out, _ := in("ipset", "list", "-n"); strings.TrimSpace(out) != "" {
		t.Fatalf("ipsets after teardown: %s", out)
	}
	if out, _ := in("iptables-save"); strings.Contains(out, "RELAYGUARD") {
		t.Fatalf("after teardown:\n%s", out)
	}

	out, err := in(bin, "--data-dir", dir, "firewall", "status", "--backend", "pf")
	if err == nil || !strings.Contains(out, `firewall.backend "pf"`) {
		t.Fatalf("bad backend: %v\n%s", err, out)
	}
}
