package firewall

import (
	"math/big"
	"net/netip"
	"strings"
	"testing"
)

func TestExclude(t *testing.T) {
	for _, tc := range []struct {
		p, holes, want string
	}{
		{"192.0.2.0/24", "", "192.0.2.0/24"},
		{"192.0.2.0/24", "198.51.100.1", "192.0.2.0/24"},
		{"192.0.2.0/24", "192.0.2.7", "192.0.2.0/30 192.0.2.4/31 192.0.2.6/32 192.0.2.8/29 192.0.2.16/28 192.0.2.32/27 192.0.2.64/26 192.0.2.128/25"},
		{"192.0.2.0/24", "192.0.2.0", "192.0.2.1/32 192.0.2.2/31 192.0.2.4/30 192.0.2.8/29 192.0.2.16/28 192.0.2.32/27 192.0.2.64/26 192.0.2.128/25"},
		{"192.0.2.0/30", "192.0.2.3 192.0.2.1 192.0.2.3", "192.0.2.0/32 192.0.2.2/32"},
		{"192.0.2.0/31", "192.0.2.0 192.0.2.1", ""},
		{"255.255.255.0/24", "255.255.255.255", "255.255.255.0/25 255.255.255.128/26 255.255.255.192/27 255.255.255.224/28 255.255.255.240/29 255.255.255.248/30 255.255.255.252/31 255.255.255.254/32"},
		{"::ffff:192.0.2.0/120", "192.0.2.128", "192.0.2.0/25 192.0.2.129/32 192.0.2.130/31 192.0.2.132/30 192.0.2.136/29 192.0.2.144/28 192.0.2.160/27 192.0.2.192/26"},
	} {
		var holes []netip.Addr
		for _, h := range strings.Fields(tc.holes) {
			holes = append(holes, netip.MustParseAddr(h))
		}
		var got []string
		for _, p := range Exclude(netip.MustParsePrefix(tc.p), holes) {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("Exclude(%s, %s) = %s\nwant %s", tc.p, tc.holes, strings.Join(got, " "), tc.want)
		}
	}
}

// An IPv6 /64 minus two addresses: the pieces cover exactly 2^64 - 2
// addresses, none of them a hole, without overlaps.
func TestExcludeIPv6Covers(t *testing.T) {
	p := netip.MustParsePrefix("2001:db8:1:2::/64")
	holes := []netip.Addr{netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")}
	pieces := Exclude(p, holes)
	total := new(big.Int)
	for i, q := range pieces {
		if !p.Contains(q.Addr()) || q.Bits() < p.Bits() {
			t.Fatalf("piece %s outside %s", q, p)
		}
		for _, h := range holes {
			if q.Contains(h) {
				t.Fatalf("piece %s contains the hole %s", q, h)
			}
		}
		if i > 0 && pieces[i-1].Overlaps(q) {
			t.Fatalf("pieces %s and %s overlap", pieces[i-1], q)
		}
		total.Add(total, new(big.Int).Lsh(big.NewInt(1), uint(128-q.Bits())))
	}
	want := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 64), big.NewInt(2))
	if total.Cmp(want) != 0 {
		t.Fatalf("pieces cover %s addresses, want %s (%d pieces)", total, want, len(pieces))
	}
	if len(pieces) > 2*64 {
		t.Fatalf("%d pieces", len(pieces))
	}
}
