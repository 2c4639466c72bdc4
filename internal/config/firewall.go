package config

import (
	"fmt"
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

// The firewall's object names are plain words of ASCII letters, digits,
// '_', '.' and '-', each kind with its own length limit. They are checked by
// a loop rather than by expressions such as ^[A-Za-z0-9_.-]{1,31}$: a
// counted repetition compiles to one instruction per count, and the four
// expressions cost ~0.3 ms of every command's start (the report's too).

// nftName: nftables object names (NFT_NAME_MAXLEN 256, keep them plain),
// a letter or '_' first, at most 64 characters.
func nftName(s string) bool {
	return s != "" && (s[0] == '_' || 'a' <= s[0]|0x20 && s[0]|0x20 <= 'z') && plainName(s, 64)
}

// ipsetName: IPSET_MAXNAMELEN is 32 including the NUL.
func ipsetName(s string) bool { return plainName(s, 31) }

// iptChainName: iptables chain names are at most 28 characters.
func iptChainName(s string) bool { return plainName(s, 28) }

// ufwTag is the rule comment; ufw quotes it, but keep it one plain word.
func ufwTag(s string) bool { return plainName(s, 64) }

// plainName reports whether s is 1 to max ASCII letters, digits, '_', '.'
// and '-'.
func plainName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

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
		if !nftName(kv.val) {
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
		if !ipsetName(kv.val) {
			return fmt.Errorf("firewall.%s %q: want 1-31 letters, digits, _ . -", kv.key, kv.val)
		}
	}
	if c.IPSet4 == c.IPSet6 {
		return fmt.Errorf("firewall.ipset6 %q: must differ from ipset4", c.IPSet6)
	}
	if !iptChainName(c.IPTChain) {
		return fmt.Errorf("firewall.iptables_chain %q: want 1-28 letters, digits, _ . -", c.IPTChain)
	}
	if c.IPSetSize < 1 {
		return fmt.Errorf("firewall.ipset_maxelem %d: must be positive", c.IPSetSize)
	}
	if !ufwTag(c.UFWTag) {
		return fmt.Errorf("firewall.ufw_comment %q: want a short word of letters, digits, _ . -", c.UFWTag)
	}
	return nil
}
