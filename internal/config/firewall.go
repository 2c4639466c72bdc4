package config

import (
	"fmt"
	"regexp"
)

// Firewall backends.
const (
	FirewallNone     = "none"
	FirewallNFTables = "nftables"
	FirewallIPTables = "iptables"
	FirewallUFW      = "ufw"
)

// FirewallConfig is the [firewall] section: which enforcer applies the
// guard's bans in the kernel, and the names of the objects it owns.
type FirewallConfig struct {
	Backend string `toml:"backend" comment:"Firewall enforcer: none, nftables (table of its own, via netlink), iptables (ipset sets + a chain of\nits own, for iptables and ip6tables) or ufw (\"ufw prepend deny from CIDR\"; no kernel timeouts: expiry is done\nby relayguard removing the rule)."`
	Ports   []int  `toml:"ports" comment:"TCP ports closed to banned prefixes. Empty: all traffic from a banned prefix is dropped.\nFor example [25, 465, 587] to close only the mail ports."`

	Table     string `toml:"table" comment:"nftables: name of relayguard's own table (family inet)."`
	Chain     string `toml:"chain" comment:"nftables: name of the input chain in that table."`
	Priority  int    `toml:"priority" comment:"nftables: hook priority of the input chain (filter is 0; lower runs earlier)."`
	Set4      string `toml:"set4" comment:"nftables: interval set of temporary IPv4 bans (per-element timeouts)."`
	Set6      string `toml:"set6" comment:"nftables: interval set of temporary IPv6 bans (per-element timeouts)."`
	PermSet4  string `toml:"perm_set4" comment:"nftables: interval set of permanent IPv4 bans."`
	PermSet6  string `toml:"perm_set6" comment:"nftables: interval set of permanent IPv6 bans."`
	IPSet4    string `toml:"ipset4" comment:"iptables: ipset (hash:net, family inet) holding IPv4 bans."`
	IPSet6    string `toml:"ipset6" comment:"iptables: ipset (hash:net, family inet6) holding IPv6 bans."`
	IPTChain  string `toml:"iptables_chain" comment:"iptables: chain of relayguard's own in the filter table, jumped to first from INPUT."`
	IPSetSize int    `toml:"ipset_maxelem" comment:"iptables: maximum number of entries in each ipset."`
	UFWTag    string `toml:"ufw_comment" comment:"ufw: comment that marks relayguard's rules (other deny rules are never touched)."`
}

func defaultFirewall() FirewallConfig {
	return FirewallConfig{
		Backend:   FirewallNone,
		Table:     "relayguard",
		Chain:     "input",
		Priority:  -1,
		Set4:      "ban4",
		Set6:      "ban6",
		PermSet4:  "perm4",
		PermSet6:  "perm6",
		IPSet4:    "relayguard4",
		IPSet6:    "relayguard6",
		IPTChain:  "RELAYGUARD",
		IPSetSize: 1 << 20,
		UFWTag:    "relayguard",
	}
}

// nftName: nftables object names (NFT_NAME_MAXLEN 256, keep them plain).
var nftName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)

// ipsetName: IPSET_MAXNAMELEN is 32 including the NUL; iptables chain names
// are at most 28 characters.
var ipsetName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,31}$`)
var iptChainName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,28}$`)

// ufwTag is the rule comment; ufw quotes it, but keep it one plain word.
var ufwTag = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func (c *FirewallConfig) validate() error {
	switch c.Backend {
	case FirewallNone, FirewallNFTables, FirewallIPTables, FirewallUFW:
	default:
		return fmt.Errorf("firewall.backend %q: want none, nftables, iptables or ufw", c.Backend)
	}
	for i, p := range c.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("firewall.ports[%d] %d: want a TCP port 1-65535", i, p)
		}
	}
	names := map[string]bool{}
	for _, kv := range []struct{ key, val string }{
		{"table", c.Table}, {"chain", c.Chain}, {"set4", c.Set4}, {"set6", c.Set6},
		{"perm_set4", c.PermSet4}, {"perm_set6", c.PermSet6},
	} {
		if !nftName.MatchString(kv.val) {
			return fmt.Errorf("firewall.%s %q: want a name of letters, digits, _ . - (at most 64)", kv.key, kv.val)
		}
		if kv.key != "table" && kv.key != "chain" {
			if names[kv.val] {
				return fmt.Errorf("firewall.%s %q: the four nftables set names must differ", kv.key, kv.val)
			}
			names[kv.val] = true
		}
	}
	if c.Priority < -1000 || c.Priority > 1000 {
		return fmt.Errorf("firewall.priority %d: want -1000..1000", c.Priority)
	}
	for _, kv := range []struct{ key, val string }{{"ipset4", c.IPSet4}, {"ipset6", c.IPSet6}} {
		if !ipsetName.MatchString(kv.val) {
			return fmt.Errorf("firewall.%s %q: want 1-31 letters, digits, _ . -", kv.key, kv.val)
		}
	}
	if c.IPSet4 == c.IPSet6 {
		return fmt.Errorf("firewall.ipset6 %q: must differ from ipset4", c.IPSet6)
	}
	if !iptChainName.MatchString(c.IPTChain) {
		return fmt.Errorf("firewall.iptables_chain %q: want 1-28 letters, digits, _ . -", c.IPTChain)
	}
	if c.IPSetSize < 1 {
		return fmt.Errorf("firewall.ipset_maxelem %d: must be positive", c.IPSetSize)
	}
	if !ufwTag.MatchString(c.UFWTag) {
		return fmt.Errorf("firewall.ufw_comment %q: want a short word of letters, digits, _ . -", c.UFWTag)
	}
	return nil
}
