package report

import (
	"encoding/binary"
	"net/netip"
	"strconv"
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

// subClient is a client's subnet (an IPv4 address's upper 24 bits, an
// IPv6 address's upper 64) and its number.
type subClient struct {
	k uint64
	i int32
}

// appendNormalizedAddr appends normalizeHost(clientName(a)) without
// making the name: an IPv4 address's is its four bytes.
func appendNormalizedAddr(dst []byte, a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return append(dst, b[:]...)
	}
	return appendNormalizedHost(dst, clientName(a))
}

// appendNormalizedSubnet appends normalizeHost of the name of a's subnet
// (subnetOf(a).String()): for "a.b.c.0/24", whose labels are a, b, c and
// "0/24", "0/24" and c, b and a in decimal.
func appendNormalizedSubnet(dst []byte, a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		dst = append(dst, "0/24"...)
		dst = strconv.AppendUint(dst, uint64(b[2]), 10)
		dst = strconv.AppendUint(dst, uint64(b[1]), 10)
		return strconv.AppendUint(dst, uint64(b[0]), 10)
	}
	return appendNormalizedHost(dst, subnetOf(a).String())
}

// radixSortSubnets sorts cs by subnet (a least-significant-digit radix
// sort over the bytes that are not the same in every key).
func radixSortSubnets(cs []subClient) {
	if len(cs) < 2 {
		return
	}
	var vary uint64
	for _, c := range cs {
		vary |= c.k ^ cs[0].k
	}
	tmp := make([]subClient, len(cs))
	src, dst := cs, tmp
	for shift := 0; shift < 64; shift += 8 {
		if byte(vary>>shift) == 0 {
			continue
		}
		var pos [256]int32
		for _, c := range src {
			pos[byte(c.k>>shift)]++
		}
		var sum int32
		for b, n := range pos {
			pos[b], sum = sum, sum+n
		}
		for _, c := range src {
			b := byte(c.k >> shift)
			dst[pos[b]] = c
			pos[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &cs[0] {
		copy(cs, src)
	}
}

// radixSortPacked sorts IPv4 clients by subnet: each is its /24 in the
// top three bytes and its number in the low four, and the numbers ascend
// in cs (a stable least-significant-digit radix sort over the subnet bytes
// that are not the same in every word: radixSortSubnets's order).
func radixSortPacked(cs []uint64) {
	if len(cs) < 2 {
		return
	}
	var vary uint64
	for _, c := range cs {
		vary |= c ^ cs[0]
	}
	tmp := make([]uint64, len(cs))
	src, dst := cs, tmp
	for shift := 40; shift < 64; shift += 8 {
		if byte(vary>>shift) == 0 {
			continue
		}
		var pos [256]int32
		for _, c := range src {
			pos[byte(c>>shift)]++
		}
		var sum int32
		for b, n := range pos {
			pos[b], sum = sum, sum+n
		}
		for _, c := range src {
			b := byte(c >> shift)
			dst[pos[b]] = c
			pos[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &cs[0] {
		copy(cs, src)
	}
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
	// (the first user of each client, in its row; then the others)
	nc := int(s.clientCount())
	for blk, cs := range s.clientStats {
		for x := range cs[:min(len(cs), nc-blk*clientBlock)] {
			st := &cs[x]
			if st.user == 0 {
				continue
			}
			r := row(int32(blk*clientBlock + x))
			if r < 0 {
				continue
			}
			if users[r] == nil {
				users[r] = map[int32]int64{}
			}
			users[r][st.user-1] += st.userN
		}
	}
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

// topCut gathers, as they come, the rows a ranking's first n (byHostNorm)
// can be drawn from: those counted at least the n-th largest count so far
// (a row below it ranks after n others, and the cut only rises). Of a
// botnet's 100,000s of addresses or subnets a few hundred are kept, where
// every row was, and then each one's count twice more (topRows).
type topCut struct {
	n    int     // < 0: every row
	seen int     // the rows added
	cuts []int64 // the n largest counts so far: a min-heap
	rows []ranked
}

func (t *topCut) add(r ranked) {
	t.seen++
	switch {
	case t.n < 0:
	case t.n == 0:
		return
	case len(t.cuts) < t.n:
		h := append(t.cuts, r.n)
		for j := len(h) - 1; j > 0; { // up
			p := (j - 1) / 2
			if h[p] <= h[j] {
				break
			}
			h[p], h[j] = h[j], h[p]
			j = p
		}
		t.cuts = h
	case r.n < t.cuts[0]:
		return
	case r.n > t.cuts[0]:
		h := t.cuts
		h[0] = r.n
		for j := 0; ; { // down
			c := 2*j + 1
			if c >= len(h) {
				break
			}
			if c+1 < len(h) && h[c+1] < h[c] {
				c++
			}
			if h[j] <= h[c] {
				break
			}
			h[j], h[c] = h[c], h[j]
			j = c
		}
	}
	t.rows = append(t.rows, r)
}

// kept returns the rows that can be among the first n: all of them when
// no more than n came; else those above the n-th largest count, then those
// at it, each in the order they came (as topRows would have drawn them
// from all the rows: byHostNorm of these is byHostNorm of all).
func (t *topCut) kept() []ranked {
	if t.n <= 0 || t.seen <= t.n {
		return t.rows
	}
	cut := t.cuts[0]
	out := make([]ranked, 0, len(t.rows))
	for _, r := range t.rows {
		if r.n > cut {
			out = append(out, r)
		}
	}
	for _, r := range t.rows {
		if r.n == cut {
			out = append(out, r)
		}
	}
	return out
}

// summary finishes the abuse view; n limits the tables by address, subnet
// and domain (n < 0: all). The per-address tables are complete in memory
// (one compact row per distinct address); an address or a subnet becomes
// a string only now and only for the rows that can be shown, and the users
// of an address or a subnet are gathered only for the rows shown.
func (s *abuseState) summary(n int) Abuse {
	var ab Abuse
	nc := int(s.clientCount())
	clientSub := make([]int32, nc) // client number → subnet number, -1: none
	// The rows that can make the tables by address (topCut: of a botnet's
	// 100,000s of addresses, those that can be among the first n).
	byAddr, relay := topCut{n: n}, topCut{n: n}
	// The clients in order of their subnets: sorting them reads and writes
	// memory front to back, where a hash table of the subnets of a botnet's
	// 100,000s of addresses missed the cache at each. An IPv4 client is its
	// /24 and its number in one word. (The slices are made at most nc long,
	// not grown: only the pages of a slice that are written are faulted in,
	// where each growth wrote a fresh copy of the whole.)
	v4 := make([]uint64, 0, nc)
	v6 := make([]subClient, 0, nc)
	for blk, rows := range s.clientStats {
		for x := range rows[:min(len(rows), nc-blk*clientBlock)] {
			st, i := &rows[x], int32(blk*clientBlock+x)
			if st.auth > 0 {
				ab.AuthFailures += st.auth
				byAddr.add(ranked{st.auth, i})
			}
			if st.relay > 0 {
				ab.RelayAttempts += st.relay
				relay.add(ranked{st.relay, i})
			}
			clientSub[i] = -1
			k := &st.addr
			if s.oddAddrs != nil {
				if _, odd := s.oddAddrs[i]; odd {
					if ip := s.addrOf(i); ip.IsValid() { // (a zone: its address's subnet)
						v6 = append(v6, subClient{binary.BigEndian.Uint64(k[:8]), i})
					}
					continue
				}
			}
			// (As16 of an IPv4 address: ::ffff:a.b.c.d)
			if binary.BigEndian.Uint64(k[:8]) == 0 && binary.BigEndian.Uint32(k[8:12]) == 0xffff {
				v4 = append(v4, uint64(k[12])<<56|uint64(k[13])<<48|uint64(k[14])<<40|uint64(uint32(i)))
			} else {
				v6 = append(v6, subClient{binary.BigEndian.Uint64(k[:8]), i})
			}
		}
	}
	radixSortPacked(v4)
	radixSortSubnets(v6)
	// The subnets are numbered in that order, each named after its first
	// client; then their counts are added up in the clients' order (which
	// reads the clients' rows front to back).
	subFirst := make([]int32, 0, len(v4)+len(v6))
	for x, c := range v4 {
		i := int32(uint32(c))
		if x == 0 || c>>40 != v4[x-1]>>40 {
			subFirst = append(subFirst, i)
		}
		clientSub[i] = int32(len(subFirst) - 1)
	}
	for x, c := range v6 {
		if x == 0 || c.k != v6[x-1].k {
			subFirst = append(subFirst, c.i)
		}
		clientSub[c.i] = int32(len(subFirst) - 1)
	}
	subs := make([]subnetAgg, len(subFirst))
	// (written before the sums read it: a large slice is fresh memory, and
	// a page read first is the kernel's zero page, copied again at the first
	// write with the other core's TLB flushed, 4 % of botnet's samples)
	clear(subs)
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
	shownAddrs := byHostNorm(byAddr.kept(), n, rankedCount, addrName, addrNorm)
	addrRow := make([]int32, nc) // client number → row + 1, 0: not shown
	for j, r := range shownAddrs {
		addrRow[r.idx] = int32(j + 1)
	}
	addrUsers := s.userRows(len(shownAddrs), func(i int32) int32 { return addrRow[i] - 1 })
	for j, r := range shownAddrs {
		ab.AuthByAddress = append(ab.AuthByAddress, AuthRow{Key: addrName(&r), Failures: r.n, idx: r.idx,
			Users: s.topUsers(addrUsers[j], 10)})
	}
	for _, r := range byHostNorm(relay.kept(), n, rankedCount, addrName, addrNorm) {
		ab.RelayByClient = append(ab.RelayByClient, CountRow{addrName(&r), r.n})
	}
	if ab.RelayByClient == nil && (n != 0 || relay.seen > 0) {
		ab.RelayByClient = []CountRow{} // (JSON: [], as before)
	}
	ab.RelayByDomain = s.relayByDomain.sorted(n)

	bySub, tops := topCut{n: n}, topCut{n: max(n, 20)}
	for j, g := range subs {
		if g.auth > 0 {
			bySub.add(ranked{g.auth, int32(j)})
		}
		tops.add(ranked{g.auth + g.relay + g.rejects, int32(j)})
	}
	ab.AuthBySubnet = []AuthRow{}
	for _, r := range byHostNorm(bySub.kept(), n, rankedCount, subName, subNorm) {
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
	top := byHostNorm(tops.kept(), max(n, 20), rankedCount, subName, subNorm)
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
	ab.Accounts = s.accounts
	ab.EgressBlocks = s.egressCount
	ab.Actors = limit(s.actorRows(), n)
	for who, st := range s.egress {
		ab.Egress = append(ab.Egress, EgressRow{Who: who, Count: st.count, Destinations: st.dsts.sorted(5)})
	}
	ab.Egress = byHost(ab.Egress, -1, func(r *EgressRow) int64 { return r.Count }, func(r *EgressRow) string { return r.Who })
	return ab
}
