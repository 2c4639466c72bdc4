package guard

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/relayguard/relayguard/internal/firewall"
)

// A subnet ban never locks out a user who just logged in (issue 12 item
// 10). The success grace keeps an address that authenticated successfully
// within success_grace out of the failure counts; a ban of a whole subnet
// would still cover it. So a subnet ban is carved around such addresses:
// in process (Admit, AuthAllowed) it does not apply to them, and the
// firewall enforcer is given the subnet minus them — the fewest prefixes
// that cover the rest (firewall.Exclude: a /24 minus one address is 8
// prefixes, an IPv6 /64 minus one is 64). A ban of the address itself
// still applies. When the grace of a carved address runs out (no new login
// within success_grace), the subnet is whole again.

// graced reports whether ip logged in successfully within success_grace of
// t. Called with g.mu held.
func (g *Guard) graced(ip netip.Addr, t time.Time) bool {
	d := g.o.Config.SuccessGrace.D()
	if d <= 0 {
		return false
	}
	s, ok := g.success[ip]
	return ok && t.Sub(s) < d
}

// holesIn returns the addresses inside the subnet p that are graced at now,
// sorted. Called with g.mu held.
func (g *Guard) holesIn(p netip.Prefix, now time.Time) []netip.Addr {
	if p.IsSingleIP() || g.o.Config.SuccessGrace.D() <= 0 {
		return nil
	}
	var out []netip.Addr
	for ip := range g.success {
		if p.Contains(ip) && g.graced(ip, now) {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// carve returns what the enforcer is given for b: b itself, or the pieces
// of the subnet b minus holes, each with b's expiry. It remembers the
// pieces of carved bans (for Remove) and when the first hole's grace ends.
// Called with g.mu held for writing.
func (g *Guard) carve(b Ban, holes []netip.Addr, now time.Time) []Ban {
	if len(holes) == 0 {
		delete(g.carved, b.Prefix)
		return []Ban{b}
	}
	ps := firewall.Exclude(b.Prefix, holes)
	g.carved[b.Prefix] = ps
	for _, h := range holes {
		g.holes[h] = true
		if end := g.success[h].Add(g.o.Config.SuccessGrace.D()); g.holeEnd.IsZero() || end.Before(g.holeEnd) {
			g.holeEnd = end
		}
	}
	out := make([]Ban, len(ps))
	for i, p := range ps {
		out[i] = b
		out[i].Prefix = p
	}
	return out
}

// expand carves every ban of all (a full reconcile), starting the record of
// carved bans afresh.
func (g *Guard) expand(all []Ban) []Ban {
	now := g.o.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.carved)
	clear(g.holes)
	g.holeEnd = time.Time{}
	// The graced addresses, by the subnet bans covering them.
	holes := map[netip.Prefix][]netip.Addr{}
	if g.o.Config.SuccessGrace.D() > 0 {
		subnets := map[netip.Prefix]bool{}
		var lens []int
		for _, b := range all {
			if !b.Prefix.IsSingleIP() {
				subnets[b.Prefix] = true
				if !slices.Contains(lens, b.Prefix.Bits()) {
					lens = append(lens, b.Prefix.Bits())
				}
			}
		}
		for ip := range g.success {
			if len(lens) == 0 || !g.graced(ip, now) {
				continue
			}
			for _, l := range lens {
				if p, err := ip.Prefix(l); err == nil && subnets[p] {
					holes[p] = append(holes[p], ip)
				}
			}
		}
	}
	out := make([]Ban, 0, len(all))
	for _, b := range all {
		out = append(out, g.carve(b, holes[b.Prefix], now)...)
	}
	return out
}

// enforceAdd gives the enforcer b, carved around the graced addresses.
func (g *Guard) enforceAdd(ctx context.Context, b Ban) {
	if g.o.Enforcer == nil {
		return
	}
	g.fw.Lock()
	defer g.fw.Unlock()
	now := g.o.Now()
	g.mu.Lock()
	old, wasCarved := g.carved[b.Prefix]
	list := g.carve(b, g.holesIn(b.Prefix, now), now)
	g.mu.Unlock()
	stale := wasCarved && (len(list) != len(old) || list[0].Prefix != old[0])
	for _, x := range list {
		if err := g.o.Enforcer.Add(ctx, x); err != nil {
			g.o.Log.Error("guard: firewall add failed; will reconcile", "prefix", x.Prefix.String(), "err", err)
			stale = true
		}
	}
	if stale { // the carving changed: a reconcile drops the old pieces
		g.markStale()
	}
}

// enforceRemove lifts the ban of p, or the pieces it was carved into.
func (g *Guard) enforceRemove(ctx context.Context, p netip.Prefix) {
	if g.o.Enforcer == nil {
		return
	}
	g.fw.Lock()
	defer g.fw.Unlock()
	g.mu.Lock()
	ps, ok := g.carved[p]
	delete(g.carved, p)
	g.mu.Unlock()
	if !ok {
		ps = []netip.Prefix{p}
	}
	for _, q := range ps {
		if err := g.o.Enforcer.Remove(ctx, q); err != nil {
			g.o.Log.Error("guard: firewall remove failed; will reconcile", "prefix", q.String(), "err", err)
			g.markStale()
		}
	}
}

// loggedIn is called (with g.mu held for writing) when ip logged in: if a
// subnet ban covers it and it is not carved out yet, the enforcer must
// carve it out.
func (g *Guard) loggedIn(ip netip.Addr, now time.Time) bool {
	if g.o.Enforcer == nil || g.holes[ip] || !g.graced(ip, now) {
		return false
	}
	for _, l := range g.lens {
		if l >= ip.BitLen() {
			break
		}
		p, err := ip.Prefix(l)
		if err != nil {
			continue
		}
		if b, ok := g.bans[p]; ok && !b.Expired(now) {
			return true
		}
	}
	return false
}

// holesExpired reports whether the grace of a carved address has run out,
// so that its subnet ban must be made whole again.
func (g *Guard) holesExpired(now time.Time) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return !g.holeEnd.IsZero() && !now.Before(g.holeEnd)
}
