package firewall

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
)

func TestSegments(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	for _, tc := range []struct {
		name string
		bans map[string]time.Time
		want string
	}{
		{"single", map[string]time.Time{"192.0.2.3/32": h(1)}, "192.0.2.3-192.0.2.3@1"},
		{"adjacent prefixes are not joined", map[string]time.Time{"192.0.2.0/25": h(1), "192.0.2.128/25": h(1)}, "192.0.2.0-192.0.2.127@1 192.0.2.128-192.0.2.255@1"},
		{"adjacent different expiry kept apart", map[string]time.Time{"192.0.2.0/25": h(1), "192.0.2.128/25": h(2)}, "192.0.2.0-192.0.2.127@1 192.0.2.128-192.0.2.255@2"},
		{"nested earlier is absorbed", map[string]time.Time{"192.0.2.0/24": h(2), "192.0.2.64/26": h(1)}, "192.0.2.0-192.0.2.255@2"},
		{"nested later cuts the container", map[string]time.Time{"192.0.2.0/24": h(1), "192.0.2.64/26": h(3)},
			"192.0.2.0-192.0.2.63@1 192.0.2.64-192.0.2.127@3 192.0.2.128-192.0.2.255@1"},
		{"two levels", map[string]time.Time{"10.0.0.0/8": h(1), "10.1.0.0/16": h(2), "10.1.2.3/32": h(3)},
			"10.0.0.0-10.0.255.255@1 10.1.0.0-10.1.2.2@2 10.1.2.3-10.1.2.3@3 10.1.2.4-10.1.255.255@2 10.2.0.0-10.255.255.255@1"},
		{"nested permanent absorbed", map[string]time.Time{"192.0.2.0/24": {}, "192.0.3.0/24": {}, "192.0.2.7/32": {}}, "192.0.2.0-192.0.2.255@perm 192.0.3.0-192.0.3.255@perm"},
		{"pieces of one prefix joined", map[string]time.Time{"192.0.2.0/24": h(3), "192.0.2.64/26": h(1), "192.0.2.128/26": h(2)}, "192.0.2.0-192.0.2.255@3"},
		{"top of the address space", map[string]time.Time{"255.255.255.0/24": h(1), "255.255.255.255/32": h(2)},
			"255.255.255.0-255.255.255.254@1 255.255.255.255-255.255.255.255@2"},
		{"ipv6", map[string]time.Time{"2001:db8::/48": h(1), "2001:db8:0:1::/64": h(2)},
			"2001:db8::-2001:db8::ffff:ffff:ffff:ffff@1 2001:db8:0:1::-2001:db8:0:1:ffff:ffff:ffff:ffff@2 2001:db8:0:2::-2001:db8:0:ffff:ffff:ffff:ffff:ffff@1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[netip.Prefix]time.Time{}
			var ps []netip.Prefix
			for s, u := range tc.bans {
				p := pfx(s)
				m[p] = u
				ps = append(ps, p)
			}
			var got []string
			for _, s := range segments(ps, m) {
				u := "perm"
				if !s.Until.IsZero() {
					u = fmt.Sprint(int(s.Until.Sub(t0).Hours()))
				}
				got = append(got, s.Start.String()+"-"+s.End.String()+"@"+u)
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("got  %s\nwant %s", g, tc.want)
			}
		})
	}
}

// TestSegmentsAgainstPoints checks segments on random nested prefixes by
// comparing, address by address inside a /22, the expiry each segment gives
// with the latest expiry of the prefixes covering the address.
func TestSegmentsAgainstPoints(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := netip.MustParseAddr("192.0.2.0").As4()
	t0 := time.Unix(1e9, 0)
	for round := 0; round < 200; round++ {
		m := map[netip.Prefix]time.Time{}
		for i := 0; i < 1+r.IntN(12); i++ {
			a := base
			a[2] = byte(r.IntN(4))
			a[3] = byte(r.IntN(256))
			p := netip.PrefixFrom(netip.AddrFrom4(a), 22+r.IntN(11)).Masked()
			m[p] = t0.Add(time.Duration(1+r.IntN(5)) * time.Hour)
		}
		var ps []netip.Prefix
		for p := range m {
			ps = append(ps, p)
		}
		segs := segments(ps, m)
		for i := 1; i < len(segs); i++ {
			if segs[i-1].End.Compare(segs[i].Start) >= 0 {
				t.Fatalf("round %d: segments overlap or are unsorted: %v", round, segs)
			}
		}
		for x := 0; x < 1024; x++ {
			a := base
			a[2], a[3] = byte(x>>8), byte(x)
			addr := netip.AddrFrom4(a)
			var want time.Time
			for p, u := range m {
				if p.Contains(addr) && u.After(want) {
					want = u
				}
			}
			var got time.Time
			for _, s := range segs {
				if s.Start.Compare(addr) <= 0 && s.End.Compare(addr) >= 0 {
					got = s.Until
				}
			}
			if !got.Equal(want) {
				t.Fatalf("round %d: %s: segment expiry %v, want %v (bans %v)", round, addr, got, want, m)
			}
		}
	}
}

func TestNormalize(t *testing.T) {
	now := time.Now()
	m := normalize([]ban.Ban{
		{Prefix: pfx("192.0.2.7/24")}, // unmasked
		{Prefix: pfx("192.0.2.0/24"), Until: now.Add(time.Hour)},
		{Prefix: pfx("::ffff:198.51.100.0/120"), Until: now.Add(time.Hour)},
		{Prefix: pfx("::ffff:0:0/90")}, // too short to unmap: dropped
		{Prefix: pfx("2001:db8::/64"), Until: now.Add(-time.Second)},
		{Prefix: pfx("2001:db8::/64"), Until: now.Add(time.Minute)},
		{},
	}, now)
	if len(m) != 3 {
		t.Fatalf("got %v", m)
	}
	if u, ok := m[pfx("192.0.2.0/24")]; !ok || !u.IsZero() {
		t.Errorf("192.0.2.0/24: permanent must win, got %v", u)
	}
	if _, ok := m[pfx("198.51.100.0/24")]; !ok {
		t.Errorf("4-in-6 prefix not unmapped: %v", m)
	}
	if u := m[pfx("2001:db8::/64")]; !u.Equal(now.Add(time.Minute)) {
		t.Errorf("2001:db8::/64: got %v", u)
	}
}

func TestRangePrefixes(t *testing.T) {
	for _, tc := range []struct{ start, end, want string }{
		{"192.0.2.0", "192.0.2.255", "192.0.2.0/24"},
		{"192.0.2.1", "192.0.2.6", "192.0.2.1/32 192.0.2.2/31 192.0.2.4/31 192.0.2.6/32"},
		{"0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
		{"255.255.255.254", "255.255.255.255", "255.255.255.254/31"},
		{"2001:db8::", "2001:db8::1:ffff", "2001:db8::/111"},
	} {
		var got []string
		for _, p := range rangePrefixes(rng{netip.MustParseAddr(tc.start), netip.MustParseAddr(tc.end)}) {
			got = append(got, p.String())
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("%s-%s: got %s, want %s", tc.start, tc.end, g, tc.want)
		}
	}
}

func TestNewBackends(t *testing.T) {
	for _, b := range []string{"none", "nftables", "iptables", "ufw"} {
		cfg := nftConfig()
		cfg.Backend = b
		if _, err := New(cfg, nil); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	cfg := nftConfig()
	cfg.Backend = "pf"
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), `"pf"`) {
		t.Errorf("unknown backend: %v", err)
	}
}
