package report

// refSummary is abuseState.summary as it was at 2b34e9e (every address's
// and subnet's row ranked by byHostNorm, IPv4 clients sorted as subClient):
// TestAbuseSummarySameAsReference and FuzzAbuseSummarySameAsReference hold
// the summary to it. Only the name differs.

import "encoding/binary"

// refSummary finishes the abuse view; n limits the tables by address, subnet
// and domain (n < 0: all). The per-address tables are complete in memory
// (one compact row per distinct address); an address or a subnet becomes
// a string only now and only for the rows that can be shown, and the users
// of an address or a subnet are gathered only for the rows shown.
func refSummary(s *abuseState, n int) Abuse {
	var ab Abuse
	nc := int(s.clientCount())
	clientSub := make([]int32, nc) // client number → subnet number, -1: none
	// (The slices are made at most nc long, not grown: only the pages of a
	// slice that are written are faulted in, where each growth wrote a
	// fresh copy of the whole.)
	byAddr := make([]ranked, 0, nc)
	relay := make([]ranked, 0, nc)
	// The clients in order of their subnets: sorting them reads and writes
	// memory front to back, where a hash table of the subnets of a botnet's
	// 100,000s of addresses missed the cache at each.
	v4 := make([]subClient, 0, nc)
	v6 := make([]subClient, 0, nc)
	for i := range int32(nc) {
		st, ip := s.stat(i), s.addrOf(i)
		if st.auth > 0 {
			ab.AuthFailures += st.auth
			byAddr = append(byAddr, ranked{st.auth, i})
		}
		if st.relay > 0 {
			ab.RelayAttempts += st.relay
			relay = append(relay, ranked{st.relay, i})
		}
		clientSub[i] = -1
		switch {
		case !ip.IsValid():
		case ip.Is4():
			b := ip.As4()
			v4 = append(v4, subClient{uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2]), i})
		default:
			b := ip.As16()
			v6 = append(v6, subClient{binary.BigEndian.Uint64(b[:8]), i})
		}
	}
	radixSortSubnets(v4)
	radixSortSubnets(v6)
	// The subnets are numbered in that order, each named after its first
	// client; then their counts are added up in the clients' order (which
	// reads the clients' rows front to back).
	subFirst := make([]int32, 0, len(v4)+len(v6))
	for _, cs := range [2][]subClient{v4, v6} {
		for x, c := range cs {
			if x == 0 || c.k != cs[x-1].k {
				subFirst = append(subFirst, c.i)
			}
			clientSub[c.i] = int32(len(subFirst) - 1)
		}
	}
	subs := make([]subnetAgg, len(subFirst))
	for i, j := range clientSub {
		if j < 0 {
			continue
		}
		st, g := s.stat(int32(i)), &subs[j]
		g.auth += st.auth
		g.relay += st.relay
		g.rejects += st.rejects
		if st.auth > 0 {
			g.addrs++
		}
	}
	addrName := func(r *ranked) string { return clientName(s.addrOf(r.idx)) }
	subName := func(r *ranked) string { return subnetOf(s.addrOf(subFirst[r.idx])).String() }
	addrNorm := func(dst []byte, r *ranked) []byte { return appendNormalizedAddr(dst, s.addrOf(r.idx)) }
	subNorm := func(dst []byte, r *ranked) []byte { return appendNormalizedSubnet(dst, s.addrOf(subFirst[r.idx])) }
	ab.AuthByAddress = []AuthRow{}
	shownAddrs := byHostNorm(byAddr, n, rankedCount, addrName, addrNorm)
	addrRow := make([]int32, nc) // client number → row + 1, 0: not shown
	for j, r := range shownAddrs {
		addrRow[r.idx] = int32(j + 1)
	}
	addrUsers := s.userRows(len(shownAddrs), func(i int32) int32 { return addrRow[i] - 1 })
	for j, r := range shownAddrs {
		ab.AuthByAddress = append(ab.AuthByAddress, AuthRow{Key: addrName(&r), Failures: r.n, idx: r.idx,
			Users: s.topUsers(addrUsers[j], 10)})
	}
	for _, r := range byHostNorm(relay, n, rankedCount, addrName, addrNorm) {
		ab.RelayByClient = append(ab.RelayByClient, CountRow{addrName(&r), r.n})
	}
	if ab.RelayByClient == nil && (n != 0 || len(relay) > 0) {
		ab.RelayByClient = []CountRow{} // (JSON: [], as before)
	}
	ab.RelayByDomain = s.relayByDomain.sorted(n)

	bySub := make([]ranked, 0, len(subs))
	tops := make([]ranked, 0, len(subs))
	for j, g := range subs {
		if g.auth > 0 {
			bySub = append(bySub, ranked{g.auth, int32(j)})
		}
		tops = append(tops, ranked{g.auth + g.relay + g.rejects, int32(j)})
	}
	ab.AuthBySubnet = []AuthRow{}
	for _, r := range byHostNorm(bySub, n, rankedCount, subName, subNorm) {
		ab.AuthBySubnet = append(ab.AuthBySubnet, AuthRow{Key: subName(&r), Failures: r.n, Addresses: subs[r.idx].addrs, idx: r.idx})
	}
	// The users of the subnets shown: one more pass over the clients.
	shown := make([]int32, len(subs)) // subnet number → row + 1, 0: not shown
	for j, r := range ab.AuthBySubnet {
		shown[r.idx] = int32(j + 1)
	}
	subUsers := s.userRows(len(ab.AuthBySubnet), func(i int32) int32 {
		if clientSub[i] < 0 {
			return -1
		}
		return shown[clientSub[i]] - 1
	})
	for j := range ab.AuthBySubnet {
		ab.AuthBySubnet[j].Users = s.topUsers(subUsers[j], 10)
	}
	top := byHostNorm(tops, max(n, 20), rankedCount, subName, subNorm)
	if n >= 0 && n < 20 {
		top = limit(top, n)
	}
	ab.TopSubnets = make([]SubnetRow, 0, len(top))
	for _, r := range top {
		g := &subs[r.idx]
		ab.TopSubnets = append(ab.TopSubnets, SubnetRow{Subnet: subName(&r), AuthFailures: g.auth, Relay: g.relay, Rejects: g.rejects, Total: r.n})
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
