package report

import (
	"net/netip"
)

// subnetKey is the /24 of an IPv4 address or the /64 of an IPv6 address;
// a client that is not an address ("invalid IP" from a record without
// one) is its own key.
type subnetKey struct {
	p   netip.Prefix
	raw string
}

func subnetOf(addr string) subnetKey {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return subnetKey{raw: addr}
	}
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return subnetKey{raw: addr}
	}
	return subnetKey{p: p}
}

func (k subnetKey) String() string {
	if k.raw != "" || !k.p.IsValid() {
		return k.raw
	}
	return k.p.String()
}

// subnetAgg is what one /24 or /64 did.
type subnetAgg struct {
	auth, relay, rejects int64
	addrs                int // distinct addresses that failed to authenticate
}

// users returns the names an address tried, most tried first (at most n).
func (s *abuseState) topUsers(head int32, n int) []CountRow {
	var rows []CountRow
	for l := head; l >= 0; l = s.userLinks[l].next {
		rows = append(rows, CountRow{s.users.names[s.userLinks[l].user], s.userLinks[l].n})
	}
	return byHost(rows, n, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
}

// summary finishes the abuse view; n limits the tables by address, subnet
// and domain (n < 0: all). The per-address tables are complete in memory
// (one compact row per distinct address); the users of an address or a
// subnet are looked up only for the rows shown.
func (s *abuseState) summary(n int) Abuse {
	var ab Abuse
	subnets := map[subnetKey]*subnetAgg{}
	sub := func(addr string) *subnetAgg {
		k := subnetOf(addr)
		g := subnets[k]
		if g == nil {
			g = &subnetAgg{}
			subnets[k] = g
		}
		return g
	}
	byAddr := make([]AuthRow, 0, len(s.authStats))
	for addr, i := range s.auth.m {
		st := &s.authStats[i]
		ab.AuthFailures += st.count
		byAddr = append(byAddr, AuthRow{Key: addr, Failures: st.count, idx: i})
		g := sub(addr)
		g.auth += st.count
		g.addrs++
	}
	ab.AuthByAddress = byHost(byAddr, n, func(r *AuthRow) int64 { return r.Failures }, func(r *AuthRow) string { return r.Key })
	for j := range ab.AuthByAddress {
		r := &ab.AuthByAddress[j]
		r.Users = s.topUsers(s.authStats[r.idx].users, 10)
	}

	for c, v := range s.relayByClient.all() {
		ab.RelayAttempts += v
		if c != "(unknown)" {
			sub(c).relay += v
		}
	}
	ab.RelayByClient = s.relayByClient.sorted(n)
	ab.RelayByDomain = s.relayByDomain.sorted(n)
	for addr, v := range s.rejectsByIP.all() {
		sub(addr).rejects += v
	}

	var bySub []AuthRow
	var tops []SubnetRow
	for k, g := range subnets {
		key := k.String()
		if g.auth > 0 {
			bySub = append(bySub, AuthRow{Key: key, Failures: g.auth, Addresses: g.addrs})
		}
		tops = append(tops, SubnetRow{Subnet: key, AuthFailures: g.auth, Relay: g.relay, Rejects: g.rejects, Total: g.auth + g.relay + g.rejects})
	}
	ab.AuthBySubnet = byHost(bySub, n, func(r *AuthRow) int64 { return r.Failures }, func(r *AuthRow) string { return r.Key })
	top := ab.AuthBySubnet
	// The users of the subnets shown: one more pass over the addresses.
	shown := make(map[string]map[int32]int64, len(top))
	for _, r := range top {
		shown[r.Key] = map[int32]int64{}
	}
	for addr, i := range s.auth.m {
		users := shown[subnetOf(addr).String()]
		if users == nil {
			continue
		}
		for l := s.authStats[i].users; l >= 0; l = s.userLinks[l].next {
			users[s.userLinks[l].user] += s.userLinks[l].n
		}
	}
	for j := range top {
		var rows []CountRow
		for u, c := range shown[top[j].Key] {
			rows = append(rows, CountRow{s.users.names[u], c})
		}
		top[j].Users = byHost(rows, 10, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
	}
	ab.TopSubnets = byHost(tops, max(n, 20), func(r *SubnetRow) int64 { return r.Total }, func(r *SubnetRow) string { return r.Subnet })
	if n >= 0 && n < 20 {
		ab.TopSubnets = limit(ab.TopSubnets, n)
	}
	ab.DNSBL = s.dnsbl.sorted(-1)
	ab.RejectReasons = s.reasons.sorted(-1)
	ab.Postscreen = s.postscreen.sorted(-1)
	ab.NDNs, ab.NDNPerHour = s.ndns, s.ndnPerHour
	ab.BackscatterDoms, ab.Backscatter = s.backscatter()
	ab.BackscatterDoms = limit(ab.BackscatterDoms, n)
	ab.DovecotLogins, ab.Accepted = s.logins, s.accepted
	ab.RuleRejects = s.ruleRejects.sorted(-1)
	ab.BanCount, ab.Bans = s.banCount, s.bans
	ab.EgressBlocks = s.egressCount
	ab.Actors = limit(s.actorRows(), n)
	for who, st := range s.egress {
		ab.Egress = append(ab.Egress, EgressRow{Who: who, Count: st.count, Destinations: st.dsts.sorted(5)})
	}
	ab.Egress = byHost(ab.Egress, -1, func(r *EgressRow) int64 { return r.Count }, func(r *EgressRow) string { return r.Who })
	return ab
}
