package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// GuardConfig is the [guard] section: how events become bans (fail2ban's
// maxretry/findtime/bantime with escalation and subnet aggregation), the
// in-process AUTH failure limits, and the log sources `relayguard watch`
// follows.
type GuardConfig struct {
	MaxRetry      int      `toml:"maxretry" comment:"Failures of one address within findtime that get it banned."`
	FindTime      Duration `toml:"findtime" comment:"Window in which maxretry failures must fall."`
	BanTime       Duration `toml:"bantime" comment:"Length of a first ban."`
	BanTimeFactor float64  `toml:"bantime_factor" comment:"Each repeat ban of the same prefix lasts this many times longer than the one before (escalation; 1 disables)."`
	BanTimeMax    Duration `toml:"bantime_max" comment:"Longest ban escalation can reach."`
	Count         []string `toml:"count" comment:"Event kinds that count as failures: auth_failure, relay_denied, protocol_abuse,\nlost_after_auth, dnsbl_reject, reject, unknown_recipient (RCPT to a local user that does not exist:\nrecipient enumeration; not counted by default, since a sender with stale addresses makes them too)."`
	SuccessGrace  Duration `toml:"success_grace" comment:"A client that authenticated successfully this recently needs twice maxretry failures to be banned\nand is not counted towards subnet bans (one typo does not lock out a user). 0 disables."`
	Allow         []string `toml:"allow" comment:"Networks (CIDR) never banned, besides mynetworks, own_addresses and loopback."`
	MaxTracked    int      `toml:"max_tracked" comment:"Most failing addresses with two or more recent failures kept in memory (watch --replay's counters,\nand the attempts of each address that watch and serve pair across Postfix, Dovecot and PAM), and most\nprefixes per subnet rule with two or more failing addresses; ~100 bytes each. Ten times as many with one\n(8 or 20 bytes each), least recently seen dropped first. When full, the records with the fewest recent\nfailures, least recently seen first, are dropped (a notice is logged): a flood of one-shot addresses\ncannot push out an address or prefix with two. See docs/guard.md, Memory."`

	Subnets    []SubnetRule `toml:"subnet" comment:"Subnet aggregation: when this many distinct addresses of one prefix fail within window,\nthe whole prefix is banned."`
	AuthLimits []AuthLimit  `toml:"auth_limit" comment:"In-process AUTH failure limits, per address and per surrounding prefix. When one bites,\nAUTH gets 454 4.7.0 until the window has passed. 0 disables a window."`

	Files        []string `toml:"files" comment:"Log files followed by relayguard watch (like tail -F; rotation by rename and copytruncate)."`
	Journal      bool     `toml:"journal" comment:"Also follow the systemd journal (journalctl -f -o json)."`
	JournalUnits []string `toml:"journal_units" comment:"Restrict the journal to these units (e.g. postfix@-.service, dovecot.service). Empty: all."`

	PopBeforeSMTP Duration `toml:"pop_before_smtp" comment:"POP-before-SMTP (legacy): a successful Dovecot POP3/IMAP login permits relay from that\naddress for this long. 0 (the default) disables it."`
}

// SubnetRule is one [[guard.subnet]] aggregation threshold.
type SubnetRule struct {
	Family    string   `toml:"family" comment:"ipv4 or ipv6"`
	Bits      int      `toml:"bits" comment:"Prefix length"`
	Addresses int      `toml:"addresses" comment:"Distinct failing addresses inside the prefix that get the prefix banned"`
	Window    Duration `toml:"window"`
}

// AuthLimit is one [[guard.auth_limit]]: failed AUTH attempts allowed per
// minute and per day from one prefix of the given size.
type AuthLimit struct {
	Family    string `toml:"family" comment:"ipv4 or ipv6"`
	Bits      int    `toml:"bits"`
	PerMinute int    `toml:"per_minute"`
	PerDay    int    `toml:"per_day"`
}

// Event kinds the guard can count (event.Kind values; config cannot import
// internal/event, which would be a cycle-free but needless dependency).
var guardKinds = map[string]bool{
	"auth_failure": true, "relay_denied": true, "protocol_abuse": true,
	"lost_after_auth": true, "dnsbl_reject": true, "reject": true, "unknown_recipient": true,
}

func defaultGuard() GuardConfig {
	return GuardConfig{
		MaxRetry:      5,
		FindTime:      Duration(10 * time.Minute),
		BanTime:       Duration(1 * time.Hour),
		BanTimeFactor: 2,
		BanTimeMax:    Duration(28 * 24 * time.Hour),
		Count:         []string{"auth_failure", "relay_denied", "protocol_abuse"},
		SuccessGrace:  Duration(1 * time.Hour),
		MaxTracked:    100_000,
		Subnets: []SubnetRule{
			{Family: "ipv4", Bits: 24, Addresses: 5, Window: Duration(1 * time.Hour)},
			{Family: "ipv6", Bits: 64, Addresses: 3, Window: Duration(1 * time.Hour)},
			{Family: "ipv6", Bits: 48, Addresses: 10, Window: Duration(1 * time.Hour)},
		},
		AuthLimits: []AuthLimit{
			{Family: "ipv4", Bits: 32, PerMinute: 10, PerDay: 50},
			{Family: "ipv4", Bits: 24, PerMinute: 30, PerDay: 200},
			{Family: "ipv4", Bits: 16, PerMinute: 100, PerDay: 1000},
			{Family: "ipv6", Bits: 128, PerMinute: 10, PerDay: 50},
			{Family: "ipv6", Bits: 64, PerMinute: 20, PerDay: 100},
			{Family: "ipv6", Bits: 48, PerMinute: 50, PerDay: 500},
		},
	}
}

func familyBits(family string) (int, bool) {
	switch family {
	case "ipv4":
		return 32, true
	case "ipv6":
		return 128, true
	}
	return 0, false
}

func (c *GuardConfig) validate() error {
	if c.MaxRetry < 1 {
		return fmt.Errorf("guard.maxretry %d: must be at least 1", c.MaxRetry)
	}
	if c.FindTime <= 0 {
		return fmt.Errorf("guard.findtime %s: must be positive", c.FindTime.D())
	}
	if c.BanTime <= 0 {
		return fmt.Errorf("guard.bantime %s: must be positive", c.BanTime.D())
	}
	if c.BanTimeFactor < 1 {
		return fmt.Errorf("guard.bantime_factor %g: must be at least 1", c.BanTimeFactor)
	}
	if c.BanTimeMax < c.BanTime {
		return fmt.Errorf("guard.bantime_max %s: shorter than bantime %s", c.BanTimeMax.D(), c.BanTime.D())
	}
	if c.SuccessGrace < 0 {
		return fmt.Errorf("guard.success_grace %s: must not be negative", c.SuccessGrace.D())
	}
	if c.MaxTracked < 1000 {
		return fmt.Errorf("guard.max_tracked %d: must be at least 1000 (a small table lets a handful of addresses push an attacker's failures out)", c.MaxTracked)
	}
	if c.PopBeforeSMTP < 0 {
		return fmt.Errorf("guard.pop_before_smtp %s: must not be negative", c.PopBeforeSMTP.D())
	}
	for _, k := range c.Count {
		if !guardKinds[k] {
			return fmt.Errorf("guard.count: unknown event kind %q", k)
		}
	}
	for i, a := range c.Allow {
		if _, err := ParsePrefix(a); err != nil {
			return fmt.Errorf("guard.allow[%d] %q: %w", i, a, err)
		}
	}
	for i, s := range c.Subnets {
		max, ok := familyBits(s.Family)
		if !ok {
			return fmt.Errorf("guard.subnet[%d].family %q: want ipv4 or ipv6", i, s.Family)
		}
		if s.Bits < 8 || s.Bits >= max {
			return fmt.Errorf("guard.subnet[%d].bits %d: want 8 to %d for %s", i, s.Bits, max-1, s.Family)
		}
		if s.Addresses < 2 {
			return fmt.Errorf("guard.subnet[%d].addresses %d: must be at least 2", i, s.Addresses)
		}
		if s.Window <= 0 {
			return fmt.Errorf("guard.subnet[%d].window %s: must be positive", i, s.Window.D())
		}
	}
	for i, l := range c.AuthLimits {
		max, ok := familyBits(l.Family)
		if !ok {
			return fmt.Errorf("guard.auth_limit[%d].family %q: want ipv4 or ipv6", i, l.Family)
		}
		if l.Bits < 8 || l.Bits > max {
			return fmt.Errorf("guard.auth_limit[%d].bits %d: want 8 to %d for %s", i, l.Bits, max, l.Family)
		}
		if l.PerMinute < 0 || l.PerDay < 0 {
			return fmt.Errorf("guard.auth_limit[%d]: per_minute %d / per_day %d must not be negative", i, l.PerMinute, l.PerDay)
		}
	}
	for i, f := range c.Files {
		if strings.TrimSpace(f) == "" {
			return fmt.Errorf("guard.files[%d]: empty path", i)
		}
		// A file followed twice counts every failure twice: banned at
		// half of maxretry.
		for j, g := range c.Files[:i] {
			if filepath.Clean(f) == filepath.Clean(g) {
				return fmt.Errorf("guard.files[%d] %q: listed twice (guard.files[%d] %q): every line would be counted twice", i, f, j, g)
			}
		}
	}
	return nil
}
