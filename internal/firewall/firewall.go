// Package firewall applies the guard's bans in the kernel. Each backend
// (nftables, iptables+ipset, ufw, none) implements Enforcer; the guard calls
// Add and Remove as it decides, and Reconcile on start and after any error so
// that the kernel's state equals the ban list, no more and no less.
package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
)

// Enforcer applies bans in the kernel. Implementations are safe for
// concurrent use.
type Enforcer interface {
	// Setup creates the backend's objects (table, sets, chain, rules). It is
	// idempotent and keeps the bans already in the kernel.
	Setup(ctx context.Context) error
	// Teardown removes everything Setup created and every ban; it leaves
	// nothing behind.
	Teardown(ctx context.Context) error
	// Reconcile makes the kernel's bans equal bans: missing ones are added,
	// stray ones removed, and changed expiries rewritten.
	Reconcile(ctx context.Context, bans []ban.Ban) error
	// Add enforces one ban (a temporary one until b.Until).
	Add(ctx context.Context, b ban.Ban) error
	// Remove lifts the ban of exactly prefix p.
	Remove(ctx context.Context, p netip.Prefix) error
	// Status describes the backend's kernel state for people.
	Status(ctx context.Context) (string, error)
}

// Batcher is an Enforcer that adds many bans in one kernel transaction
// (the nftables backend: one netlink batch), which a guard learning a
// thousand bans a second from other servers needs.
type Batcher interface {
	AddAll(ctx context.Context, bans []ban.Ban) error
}

// New returns the enforcer chosen by cfg.Backend.
func New(cfg config.FirewallConfig, log *slog.Logger) (Enforcer, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "firewall", "backend", cfg.Backend)
	switch cfg.Backend {
	case config.FirewallNone, "":
		return None{}, nil
	case config.FirewallNFTables:
		return newNFT(cfg, log, -1), nil
	case config.FirewallIPTables:
		return newIPSet(cfg, log, nil), nil
	case config.FirewallUFW:
		return newUFW(cfg, log, nil), nil
	}
	return nil, fmt.Errorf("firewall: backend %q: want none, nftables, iptables or ufw", cfg.Backend)
}

// NewNFTablesIn returns the nftables enforcer of cfg talking netlink in the
// network namespace open as netnsFD (-1: the process's own), for tests and
// tools that keep several guards' firewalls apart in one process.
func NewNFTablesIn(cfg config.FirewallConfig, log *slog.Logger, netnsFD int) Enforcer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return newNFT(cfg, log.With("component", "firewall", "backend", "nftables"), netnsFD)
}

// None is the enforcer of backend "none": bans are enforced in-process only.
type None struct{}

func (None) Setup(context.Context) error                { return nil }
func (None) Teardown(context.Context) error             { return nil }
func (None) Reconcile(context.Context, []ban.Ban) error { return nil }
func (None) Add(context.Context, ban.Ban) error         { return nil }
func (None) Remove(context.Context, netip.Prefix) error { return nil }
func (None) Status(context.Context) (string, error) {
	return "backend none: bans are enforced in-process only\n", nil
}

// checkPrefix returns the canonical form of p or an error naming it.
func checkPrefix(p netip.Prefix) (netip.Prefix, error) {
	c := canonical(p)
	if !c.IsValid() {
		return c, fmt.Errorf("firewall: invalid prefix %q", p)
	}
	return c, nil
}
