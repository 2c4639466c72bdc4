package firewall

import (
	"net/netip"
	"slices"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
)

// Address ranges for interval sets. Prefixes never partially overlap (two
// prefixes are either nested or disjoint), which keeps the arithmetic below
// simple: no general interval-tree is needed.

// rng is an inclusive address range [Start, End] of one family.
type rng struct {
	Start, End netip.Addr
}

func prefixRange(p netip.Prefix) rng {
	p = p.Masked()
	start := p.Addr()
	b := start.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	end, _ := netip.AddrFromSlice(b)
	return rng{start, end}
}

func (r rng) contains(o rng) bool {
	return r.Start.Compare(o.Start) <= 0 && r.End.Compare(o.End) >= 0
}

// isMax reports whether a is the highest address of its family.
func isMax(a netip.Addr) bool { return !a.Next().IsValid() }

// segment is a range with the moment it stops being banned (zero: never).
type segment struct {
	rng
	Until time.Time
	root  rng // the outermost ban prefix the segment lies in
}

// later returns the later of two expiries, where zero means never.
func later(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}

// normalize keeps the bans still in force at now, with IPv4-mapped IPv6
// prefixes unmapped and duplicates folded into one (the latest expiry wins).
func normalize(bans []ban.Ban, now time.Time) map[netip.Prefix]time.Time {
	out := make(map[netip.Prefix]time.Time, len(bans))
	for _, b := range bans {
		p := canonical(b.Prefix)
		if !p.IsValid() || b.Expired(now) {
			continue
		}
		if u, ok := out[p]; ok {
			out[p] = later(u, b.Until)
		} else {
			out[p] = b.Until
		}
	}
	return out
}

// canonical masks p and turns ::ffff:a.b.c.d/N (N >= 96) into a.b.c.d/(N-96).
func canonical(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	a := p.Addr()
	if a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}
		}
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(a.WithZone(""), p.Bits()).Masked()
}

// split divides normalized bans into the four nftables sets' contents:
// permanent ranges (nested prefixes absorbed) and temporary segments (each
// address gets the latest expiry of the temporary bans covering it). One
// outermost prefix gives one range, or several where a nested ban expiring
// later cuts it; separate prefixes are never joined, even when adjacent, so
// that adding a ban next to another writes one element instead of rewriting
// its neighbour. Temporary and permanent
// bans are kept apart so that joining ranges can never shorten a permanent
// ban, and removing a permanent ban uncovers the temporary one below it.
func split(m map[netip.Prefix]time.Time) (perm4, perm6, temp4, temp6 []segment) {
	var p4, p6, t4, t6 []netip.Prefix
	for p, u := range m {
		switch {
		case u.IsZero() && p.Addr().Is4():
			p4 = append(p4, p)
		case u.IsZero():
			p6 = append(p6, p)
		case p.Addr().Is4():
			t4 = append(t4, p)
		default:
			t6 = append(t6, p)
		}
	}
	return segments(p4, m), segments(p6, m), segments(t4, m), segments(t6, m)
}

// segments turns prefixes of one family into disjoint, sorted segments. A
// nested prefix only matters where it expires later than its container; the
// container is cut around it.
func segments(ps []netip.Prefix, until map[netip.Prefix]time.Time) []segment {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits() // the container first
	})
	type frame struct {
		r     rng
		until time.Time // effective: the latest of it and its containers
		next  netip.Addr
	}
	var out []segment
	var stack []frame
	emit := func(start, end netip.Addr, u time.Time) {
		root := stack[0].r
		if n := len(out); n > 0 && out[n-1].root == root && out[n-1].Until.Equal(u) && out[n-1].End.Next() == start {
			out[n-1].End = end
			return
		}
		out = append(out, segment{rng{start, end}, u, root})
	}
	// pop closes the innermost open prefix: what remains of it after its
	// last child is emitted with its effective expiry.
	pop := func() {
		f := stack[len(stack)-1]
		if f.next.IsValid() && f.next.Compare(f.r.End) <= 0 {
			emit(f.next, f.r.End, f.until)
		}
		stack = stack[:len(stack)-1]
		if len(stack) > 0 {
			parent := &stack[len(stack)-1]
			parent.next = f.r.End.Next() // invalid past the family's end
		}
	}
	for _, p := range ps {
		r := prefixRange(p)
		for len(stack) > 0 && !stack[len(stack)-1].r.contains(r) {
			pop()
		}
		u := until[p]
		if len(stack) > 0 {
			parent := &stack[len(stack)-1]
			u = later(u, parent.until)
			if parent.next.IsValid() && parent.next.Compare(r.Start) < 0 {
				emit(parent.next, r.Start.Prev(), parent.until)
			}
			parent.next = r.Start
		}
		stack = append(stack, frame{r: r, until: u, next: r.Start})
	}
	for len(stack) > 0 {
		pop()
	}
	return out
}

// Exclude returns the fewest prefixes, in address order, that cover p except
// the addresses in holes (those outside p are ignored): a subnet ban carved
// around the addresses that must stay reachable. Without holes inside p it
// returns p itself.
func Exclude(p netip.Prefix, holes []netip.Addr) []netip.Prefix {
	p = canonical(p)
	r := prefixRange(p)
	hs := make([]netip.Addr, 0, len(holes))
	for _, h := range holes {
		if h = h.Unmap(); p.Contains(h) {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		return []netip.Prefix{p}
	}
	slices.SortFunc(hs, netip.Addr.Compare)
	hs = slices.Compact(hs)
	var out []netip.Prefix
	start := r.Start
	for _, h := range hs {
		if start.IsValid() && start.Compare(h) < 0 {
			out = append(out, rangePrefixes(rng{start, h.Prev()})...)
		}
		start = h.Next() // invalid past the family's last address
	}
	if start.IsValid() && start.Compare(r.End) <= 0 {
		out = append(out, rangePrefixes(rng{start, r.End})...)
	}
	return out
}

// rangePrefixes covers r with the fewest prefixes.
func rangePrefixes(r rng) []netip.Prefix {
	var out []netip.Prefix
	start := r.Start
	for {
		bits := start.BitLen()
		// widen while the prefix stays aligned at start and inside r
		for bits > 0 {
			p := netip.PrefixFrom(start, bits-1).Masked()
			if p.Addr() != start || prefixRange(p).End.Compare(r.End) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(start, bits)
		out = append(out, p)
		end := prefixRange(p).End
		if end.Compare(r.End) >= 0 || isMax(end) {
			return out
		}
		start = end.Next()
	}
}
