package zonespec

import (
	"net/netip"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		spec   string
		name   string
		weight int
		match  []string
		nomat  []string
	}{
		{"zen.spamhaus.org=127.0.0.[2..11]*3", "zen.spamhaus.org", 3, []string{"127.0.0.2", "127.0.0.11"}, []string{"127.0.0.1", "127.0.0.12", "127.0.1.2"}},
		{"bl.spamcop.net*2", "bl.spamcop.net", 2, []string{"127.0.0.2", "127.1.2.3"}, nil},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-5", "list.dnswl.org", -5, []string{"127.0.15.1", "127.0.0.3"}, []string{"127.0.15.0", "127.0.1.4"}},
		{"b.barracudacentral.org=127.0.0.2", "b.barracudacentral.org", 1, []string{"127.0.0.2"}, []string{"127.0.0.3"}},
		{"Mixed.Example.ORG.=127.0.0.[2;4;10..11]", "mixed.example.org", 1, []string{"127.0.0.4", "127.0.0.10"}, []string{"127.0.0.3", "127.0.0.5"}},
	} {
		z, err := Parse(tc.spec)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.spec, err)
		}
		if z.Name != tc.name || z.Weight != tc.weight {
			t.Errorf("Parse(%q) = %q*%d, want %q*%d", tc.spec, z.Name, z.Weight, tc.name, tc.weight)
		}
		for _, a := range tc.match {
			if !z.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s: %s should match", tc.spec, a)
			}
		}
		for _, a := range tc.nomat {
			if z.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s: %s should not match", tc.spec, a)
			}
		}
	}
	for _, bad := range []string{"", "nodot", "zen.spamhaus.org*x", "zen.spamhaus.org=127.0.0", "zen.spamhaus.org=127.0.0.[5..2]",
		"zen.spamhaus.org=127.0.0.256", "bad name.org", "a..b.org", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.org", "zen.spamhaus.org=127.0.0.[a]"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): want an error", bad)
		}
	}
}
