// Package egress is relayguard's outbound lockdown: only the MTA's user (and
// other allowed users or groups) may open TCP connections to remote SMTP
// ports; every other attempt is logged to NFLOG with its uid and dropped.
// The package installs the rules (nftables or iptables backend), reads the
// NFLOG group back, attributes every blocked attempt to a process, and
// summarises kernel LOG lines of hosts that already log with --log-uid.
package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/config"
)

// Spec is what the lockdown enforces, resolved to numbers.
type Spec struct {
	Ports         []uint16
	UIDs          []uint32
	GIDs          []uint32
	AllowLoopback bool
	Group         uint16 // NFLOG group
	// Forward locks connections forwarded through this host too (the
	// forward hook: containers, VMs, a routed network), but those from
	// ForwardAllowed.
	Forward        bool
	ForwardAllowed []netip.Prefix
}

// SpecFromConfig resolves the [egress] section. Configured user and group
// names that do not exist are errors; default MTA users that do not exist
// on this host are skipped with a log line.
func SpecFromConfig(c config.EgressConfig, log *slog.Logger) (Spec, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := Spec{AllowLoopback: c.AllowLoopback, Group: uint16(c.NFLogGroup), Forward: c.Forward}
	for _, n := range c.ForwardAllowed {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return Spec{}, fmt.Errorf("egress: forward_allowed %q: %w", n, err)
		}
		s.ForwardAllowed = append(s.ForwardAllowed, p.Masked())
	}
	if c.NFLogGroup < 0 || c.NFLogGroup > 65535 {
		return Spec{}, fmt.Errorf("egress: nflog_group %d: want 0-65535", c.NFLogGroup)
	}
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			return Spec{}, fmt.Errorf("egress: port %d: want 1-65535", p)
		}
		s.Ports = append(s.Ports, uint16(p))
	}
	if len(s.Ports) == 0 {
		return Spec{}, errors.New("egress: no ports to lock down")
	}
	if c.MTAUsers {
		for _, name := range config.DefaultEgressUsers {
			uid, err := config.LookupUID(name)
			if err != nil {
				log.Info("egress: default MTA user not on this host, skipped", "user", name)
				continue
			}
			s.UIDs = append(s.UIDs, uid)
		}
	}
	for _, name := range c.AllowedUsers {
		uid, err := config.LookupUID(name)
		if err != nil {
			return Spec{}, fmt.Errorf("egress: allowed user %q: %w", name, err)
		}
		s.UIDs = append(s.UIDs, uid)
	}
	if c.AllowRoot {
		s.UIDs = append(s.UIDs, 0)
	}
	for _, name := range c.AllowedGroups {
		gid, err := config.LookupGID(name)
		if err != nil {
			return Spec{}, fmt.Errorf("egress: allowed group %q: %w", name, err)
		}
		s.GIDs = append(s.GIDs, gid)
	}
	slices.Sort(s.Ports)
	s.Ports = slices.Compact(s.Ports)
	slices.Sort(s.UIDs)
	s.UIDs = slices.Compact(s.UIDs)
	slices.Sort(s.GIDs)
	s.GIDs = slices.Compact(s.GIDs)
	if len(s.UIDs) == 0 && len(s.GIDs) == 0 {
		log.Warn("egress: no allowed user or group: every program will be blocked from the locked ports")
	}
	return s, nil
}

// UserName returns "name" for a uid, or the number when it has no name.
func UserName(uid uint32) string {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return strconv.FormatUint(uint64(uid), 10)
	}
	return u.Username
}

// GroupName returns "name" for a gid, or the number when it has no name.
func GroupName(gid uint32) string {
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
	if err != nil {
		return strconv.FormatUint(uint64(gid), 10)
	}
	return g.Name
}

// Rule is one installed rule as `status` shows it.
type Rule struct {
	Family  string // "inet", "ipv4" or "ipv6"
	Text    string
	Packets uint64
	Bytes   uint64
}

// Status is what is installed now.
type Status struct {
	Backend   string
	Installed bool
	Rules     []Rule
	Ports     []uint16
	UIDs      []uint32
	GIDs      []uint32
	Group     int // NFLOG group; -1 when unknown
}

// Backend installs, removes and shows the lockdown in the current network
// namespace.
type Backend interface {
	Name() string
	// Apply installs spec atomically, replacing a previous lockdown.
	Apply(ctx context.Context, s Spec) error
	// Remove deletes exactly what Apply installed. Removing when nothing is
	// installed is not an error.
	Remove(ctx context.Context) error
	Status(ctx context.Context) (Status, error)
	// PersistFiles returns the files that bring the rules back at boot:
	// file name (relative to the persist directory) → content, and the
	// commands the systemd unit runs (DIR stands for the directory).
	PersistFiles(s Spec) (files map[string]string, execStart [][]string)
}

// NewBackend returns the backend named "nftables" or "iptables".
func NewBackend(name string) (Backend, error) {
	switch name {
	case "nftables":
		return &NFT{}, nil
	case "iptables":
		return &IPT{}, nil
	}
	return nil, fmt.Errorf("egress: backend %q: want nftables or iptables", name)
}

func joinPorts(ps []uint16) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p)))
	}
	return b.String()
}

func joinU32(ns []uint32, sep string) string {
	var b strings.Builder
	for i, n := range ns {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(strconv.FormatUint(uint64(n), 10))
	}
	return b.String()
}
