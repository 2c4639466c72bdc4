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
// (one compact row per distinct address); an address becomes a string only
// now, and the users of an address or a subnet are gathered only for the
// rows shown.
func (s *abuseState) summary(n int) Abuse {
	var ab Abuse
	nc := len(s.clientStats)
	// Subnets are numbered through integer keys: the /24's upper 24 bits,
	// the /64's upper 64.
	sub4 := make(map[uint32]int32, nc/2)
	sub6 := map[uint64]int32{}
	subs := make([]subnetAgg, 0, nc/2)
	subKeys := make([]netip.Prefix, 0, nc/2)
	clientSub := make([]int32, nc) // client number → subnet number, -1: none
	byAddr := make([]AuthRow, 0, nc)
	var relay []CountRow
	for i := range s.clientStats {
		st, ip := &s.clientStats[i], s.clientAddrs[i]
		var name string
		if st.auth > 0 || st.relay > 0 {
			name = clientName(ip)
		}
		if st.auth > 0 {
			ab.AuthFailures += st.auth
			byAddr = append(byAddr, AuthRow{Key: name, Failures: st.auth, idx: int32(i)})
		}
		if st.relay > 0 {
			ab.RelayAttempts += st.relay
			relay = append(relay, CountRow{name, st.relay})
		}
		clientSub[i] = -1
		if !ip.IsValid() {
			continue
		}
		var j int32
		var ok bool
		b := ip.As16()
		if ip.Is4() {
			k := binary.BigEndian.Uint32(b[12:]) >> 8
			if j, ok = sub4[k]; !ok {
				j = int32(len(subs))
				sub4[k] = j
			}
		} else {
			k := binary.BigEndian.Uint64(b[:8])
			if j, ok = sub6[k]; !ok {
				j = int32(len(subs))
				sub6[k] = j
			}
		}
		if !ok {
			subs = append(subs, subnetAgg{})
			subKeys = append(subKeys, subnetOf(ip))
		}
		clientSub[i] = j
		g := &subs[j]
		g.auth += st.auth
		g.relay += st.relay
		g.rejects += st.rejects
		if st.auth > 0 {
			g.addrs++
		}
	}
	ab.AuthByAddress = byHost(byAddr, n, func(r *AuthRow) int64 { return r.Failures }, func(r *AuthRow) string { return r.Key })
	for j := range ab.AuthByAddress {
		r := &ab.AuthByAddress[j]
		r.Users = s.topUsers(s.clientStats[r.idx].users, 10)
	}
	ab.RelayByClient = byHost(relay, n, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
	ab.RelayByDomain = s.relayByDomain.sorted(n)

	bySub := make([]AuthRow, 0, len(subs))
	tops := make([]SubnetRow, 0, len(subs))
	for j, g := range subs {
		key := subKeys[j].String()
		if g.auth > 0 {
			bySub = append(bySub, AuthRow{Key: key, Failures: g.auth, Addresses: g.addrs, idx: int32(j)})
		}
		tops = append(tops, SubnetRow{Subnet: key, AuthFailures: g.auth, Relay: g.relay, Rejects: g.rejects, Total: g.auth + g.relay + g.rejects})
	}
	ab.AuthBySubnet = byHost(bySub, n, func(r *AuthRow) int64 { return r.Failures }, func(r *AuthRow) string { return r.Key })
	// The users of the subnets shown: one more pass over the clients.
	shown := make([]int32, len(subs)) // subnet number → row + 1, 0: not shown
	for j, r := range ab.AuthBySubnet {
		shown[r.idx] = int32(j + 1)
	}
	users := make([]map[int32]int64, len(ab.AuthBySubnet))
	for i, st := range s.clientStats {
		if clientSub[i] < 0 || shown[clientSub[i]] == 0 {
			continue
		}
		row := shown[clientSub[i]] - 1
		for l := st.users; l >= 0; l = s.userLinks[l].next {
			if users[row] == nil {
				users[row] = map[int32]int64{}
			}
			users[row][s.userLinks[l].user] += s.userLinks[l].n
		}
	}
	for j := range ab.AuthBySubnet {
		var rows []CountRow
		for u, c := range users[j] {
			rows = append(rows, CountRow{s.users.names[u], c})
		}
		ab.AuthBySubnet[j].Users = byHost(rows, 10, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
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
