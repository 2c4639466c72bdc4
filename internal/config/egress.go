package config

import (
	"fmt"
	"net/mail"
	"net/netip"
	"os/user"
	"strconv"
	"time"
)

// EgressConfig is the [egress] section: the outbound lockdown that lets only
// the MTA's user connect to remote SMTP ports (`relayguard egress`).
type EgressConfig struct {
	Ports          []int    `toml:"ports" comment:"Remote TCP ports locked down: only allowed users and groups may connect to them."`
	MTAUsers       bool     `toml:"mta_users" comment:"Allow the usual MTA users: postfix, exim, Debian-exim and relayguard, those that exist on this host\n(absent ones are skipped with a log line)."`
	AllowedUsers   []string `toml:"allowed_users" comment:"More users (names or numeric uids) whose sockets may connect out. A name that does not exist is an error."`
	AllowedGroups  []string `toml:"allowed_groups" comment:"Groups (names or numeric gids) whose sockets may connect out."`
	AllowRoot      bool     `toml:"allow_root" comment:"Also allow uid 0. Off by default: a compromised root can remove the rules anyway, but root daemons should not mail directly."`
	AllowLoopback  bool     `toml:"allow_loopback" comment:"Accept connections to loopback (lo, 127.0.0.0/8, ::1), e.g. to a local MTA on port 25."`
	Forward        bool     `toml:"forward" comment:"Also lock connections forwarded through this host (containers, virtual machines, a network it routes):\ntheir programs have no socket here, so the uid rules cannot tell them; only forward_allowed networks' connections pass, from or to them.\nOff by default: on a host that routes to an MTA (a published port 25, a routed MX) that MTA's network must be listed,\nor its incoming mail is dropped; egress apply warns when this host forwards and this is off."`
	ForwardAllowed []string `toml:"forward_allowed" comment:"Source networks (CIDR) whose forwarded connections may reach the locked ports: a container or VM that runs the MTA."`
	AttributeRate  int      `toml:"attribute_per_second" comment:"\"egress watch\" looks up the process of at most this many blocked attempts per second\n(each costs a scan of /proc/*/fd); further attempts are reported with their uid only."`
	NFLogGroup     int      `toml:"nflog_group" comment:"NFLOG group that dropped attempts are logged to and that \"egress watch\" reads (0-65535)."`
	Backend        string   `toml:"backend" comment:"nftables or iptables"`
	PersistDir     string   `toml:"persist_dir" comment:"Where \"egress apply --persist\" writes the rules file and the systemd unit."`
	AlertThreshold int      `toml:"alert_threshold" comment:"Alert when one uid makes this many blocked attempts within alert_window. 0 disables alerts."`
	AlertWindow    Duration `toml:"alert_window" comment:"Window of the alert threshold."`
	AlertMailTo    string   `toml:"alert_mail_to" comment:"Also mail alerts to this address. Empty: alerts are log lines only."`
	AlertMailFrom  string   `toml:"alert_mail_from" comment:"Envelope and header sender of alert mail. Empty: relayguard@HOSTNAME."`
	AlertSMTP      string   `toml:"alert_smtp" comment:"SMTP server (host:port) alert mail is handed to."`
}

// DefaultEgressUsers are the MTA users allowed by mta_users, when they exist.
var DefaultEgressUsers = []string{"postfix", "exim", "Debian-exim", "relayguard"}

func defaultEgress() EgressConfig {
	return EgressConfig{
		Ports:          []int{25, 465, 587},
		MTAUsers:       true,
		AllowLoopback:  true,
		NFLogGroup:     2525,
		AttributeRate:  50,
		Backend:        "nftables",
		PersistDir:     "/etc/relayguard",
		AlertThreshold: 10,
		AlertWindow:    Duration(10 * time.Minute),
		AlertSMTP:      "127.0.0.1:25",
	}
}

func (c *EgressConfig) validate() error {
	if len(c.Ports) == 0 {
		return fmt.Errorf("egress.ports is empty")
	}
	seen := map[int]bool{}
	for i, p := range c.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("egress.ports[%d] %d: want 1-65535", i, p)
		}
		if seen[p] {
			return fmt.Errorf("egress.ports[%d] %d: duplicate", i, p)
		}
		seen[p] = true
	}
	for i, n := range c.ForwardAllowed {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return fmt.Errorf("egress.forward_allowed[%d] %q: want a network in CIDR form: %w", i, n, err)
		}
		// An address with a length (a container's own with its bridge's
		// length) would pass every address of the network: say which was
		// meant rather than open the whole bridge.
		if p != p.Masked() {
			return fmt.Errorf("egress.forward_allowed[%d] %q: host bits set: write %s for the network, %s for the one address",
				i, n, p.Masked(), netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
		}
	}
	if c.NFLogGroup < 0 || c.NFLogGroup > 65535 {
		return fmt.Errorf("egress.nflog_group %d: want 0-65535", c.NFLogGroup)
	}
	if c.AttributeRate < 1 {
		return fmt.Errorf("egress.attribute_per_second %d: must be at least 1", c.AttributeRate)
	}
	switch c.Backend {
	case "nftables", "iptables":
	default:
		return fmt.Errorf("egress.backend %q: want nftables or iptables", c.Backend)
	}
	if c.AlertThreshold < 0 {
		return fmt.Errorf("egress.alert_threshold %d: must not be negative", c.AlertThreshold)
	}
	if c.AlertThreshold > 0 && c.AlertWindow <= 0 {
		return fmt.Errorf("egress.alert_window %q: must be positive", c.AlertWindow.D())
	}
	if c.AlertMailTo != "" {
		if _, err := mail.ParseAddress(c.AlertMailTo); err != nil {
			return fmt.Errorf("egress.alert_mail_to %q: %w", c.AlertMailTo, err)
		}
	}
	if c.AlertMailFrom != "" {
		if _, err := mail.ParseAddress(c.AlertMailFrom); err != nil {
			return fmt.Errorf("egress.alert_mail_from %q: %w", c.AlertMailFrom, err)
		}
	}
	if c.AlertMailTo != "" {
		if err := validHostPort(c.AlertSMTP); err != nil {
			return fmt.Errorf("egress.alert_smtp %q: want host:port with a port from 1 to 65535", c.AlertSMTP)
		}
	}
	// Unknown configured users/groups are an error here, before anything
	// is changed; defaults that are absent are skipped by the egress
	// package with a log line.
	for i, u := range c.AllowedUsers {
		if _, err := LookupUID(u); err != nil {
			return fmt.Errorf("egress.allowed_users[%d] %q: %w", i, u, err)
		}
	}
	for i, g := range c.AllowedGroups {
		if _, err := LookupGID(g); err != nil {
			return fmt.Errorf("egress.allowed_groups[%d] %q: %w", i, g, err)
		}
	}
	return nil
}

// LookupUID resolves a user name or a numeric uid.
func LookupUID(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("unknown user: %w", err)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has non-numeric uid %q", name, u.Uid)
	}
	return uint32(n), nil
}

// LookupGID resolves a group name or a numeric gid.
func LookupGID(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("unknown group: %w", err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has non-numeric gid %q", name, g.Gid)
	}
	return uint32(n), nil
}
