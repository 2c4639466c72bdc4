package report

import (
	"encoding/binary"
	"net/netip"
)

// subnetOf is the /24 of an IPv4 address or the /64 of an IPv6 address.
func subnetOf(a netip.Addr) netip.Prefix {
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// subnetAgg is what one /24 or /64 did.
type subnetAgg struct {
	auth, relay, rejects int64
	addrs                int // distinct addresses that failed to authenticate
}

// clientName is how a client is shown: its address, or "(unknown)".
func clientName(a netip.Addr) string {
	if !a.IsValid() {
		return "(unknown)"
	}
	return a.String()
}

// userRows gathers the users each row's addresses tried: row maps a
// client's number to its row (< 0: none), and the result is each row's
// failures by user number. One pass over the (address, user) pairs.
func (s *abuseState) userRows(rows int, row func(client int32) int32) []map[int32]int64 {
	users := make([]map[int32]int64, rows)
	for j, k := range s.userPairs.keys {
		r := row(int32(k >> 32))
		if r < 0 {
			continue
		}
		if users[r] == nil {
			users[r] = map[int32]int64{}
		}
		users[r][int32(uint32(k))] += s.userPairN[j]
	}
	return users
}

// topUsers returns the users of a row, most tried first (at most n).
func (s *abuseState) topUsers(users map[int32]int64, n int) []CountRow {
	var rows []CountRow
	for u, c := range users {
		rows = append(rows, CountRow{s.users.key(u), c})
	}
	return byHost(rows, n, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
}

// ranked is a row of a table being ranked: a count and the number of the
// address or subnet it belongs to. Names are made only for the rows that
// can make a table's cut (byHost asks for the keys of those only).
type ranked struct {
	n   int64
	idx int32
}

func rankedCount(r *ranked) int64 { return r.n }

// summary finishes the abuse view; n limits the tables by address, subnet
// and domain (n < 0: all). The per-address tables are complete in memory
// (one compact row per distinct address); an address or a subnet becomes
// a string only now and only for the rows that can be shown, and the users
// of an address or a subnet are gathered only for the rows shown.
func (s *abuseState) summary(n int) Abuse {
	var ab Abuse
	nc := int(s.clientCount())
	// Subnets are numbered through integer keys: the /24's upper 24 bits,
	// the /64's upper 64; a subnet is named after its first client.
	var sub4, sub6 intIndex // → at4, at6: the subnet's number in subs
	var at4, at6 []int32
	subs := make([]subnetAgg, 0, nc/2)
	subFirst := make([]int32, 0, nc/2)
	clientSub := make([]int32, nc) // client number → subnet number, -1: none
	byAddr := make([]ranked, 0, nc)
	var relay []ranked
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
		if !ip.IsValid() {
			continue
		}
		tab, at := &sub6, &at6
		b := ip.As16()
		k := binary.BigEndian.Uint64(b[:8])
		if ip.Is4() {
			tab, at = &sub4, &at4
			k = uint64(binary.BigEndian.Uint32(b[12:]) >> 8)
		}
		x, ok := tab.get(k)
		if !ok {
			*at = append(*at, int32(len(subs)))
			subs = append(subs, subnetAgg{})
			subFirst = append(subFirst, i)
		}
		j := (*at)[x]
		clientSub[i] = j
		g := &subs[j]
		g.auth += st.auth
		g.relay += st.relay
		g.rejects += st.rejects
		if st.auth > 0 {
			g.addrs++
		}
	}
	addrName := func(r *ranked) string { return clientName(s.addrOf(r.idx)) }
	subName := func(r *ranked) string { return subnetOf(s.addrOf(subFirst[r.idx])).String() }
	ab.AuthByAddress = []AuthRow{}
	shownAddrs := byHost(byAddr, n, rankedCount, addrName)
	addrRow := make([]int32, nc) // client number → row + 1, 0: not shown
	for j, r := range shownAddrs {
		addrRow[r.idx] = int32(j + 1)
	}
	addrUsers := s.userRows(len(shownAddrs), func(i int32) int32 { return addrRow[i] - 1 })
	for j, r := range shownAddrs {
		ab.AuthByAddress = append(ab.AuthByAddress, AuthRow{Key: addrName(&r), Failures: r.n, idx: r.idx,
			Users: s.topUsers(addrUsers[j], 10)})
	}
	for _, r := range byHost(relay, n, rankedCount, addrName) {
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
	for _, r := range byHost(bySub, n, rankedCount, subName) {
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
	top := byHost(tops, max(n, 20), rankedCount, subName)
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
