package config

import (
	"strings"
	"testing"
	"time"
)

// TestDNSBLValidation: every bad [dnsbl] value is refused with an error
// naming the key and the value.
func TestDNSBLValidation(t *testing.T) {
	for _, tc := range []struct {
		edit func(c *DNSBLConfig)
		want []string
	}{
		{func(c *DNSBLConfig) { c.Zones = []string{"zen.spamhaus.org=127.0.0.[9..2]*3"} }, []string{"dnsbl.zones", "127.0.0.[9..2]"}},
		{func(c *DNSBLConfig) { c.DomainZones = []string{"dbl*x"} }, []string{"dnsbl.domain_zones", `"dbl*x"`}},
		{func(c *DNSBLConfig) { c.Resolvers = []string{"ns1.example"} }, []string{"dnsbl.resolvers", `"ns1.example"`}},
		{func(c *DNSBLConfig) { c.Resolvers = []string{"192.0.2.53:99999"} }, []string{"dnsbl.resolvers", "99999"}},
		{func(c *DNSBLConfig) { c.RejectThreshold = 0 }, []string{"dnsbl.reject_threshold", "0"}},
		{func(c *DNSBLConfig) { c.AllowThreshold = 2 }, []string{"dnsbl.allow_threshold", "2"}},
		{func(c *DNSBLConfig) { c.Timeout = 0 }, []string{"dnsbl.timeout"}},
		{func(c *DNSBLConfig) { c.CacheMinTTL, c.CacheMaxTTL = Duration(time.Hour), Duration(time.Minute) }, []string{"dnsbl.cache_max_ttl", "1m0s"}},
	} {
		c := defaultDNSBL()
		tc.edit(&c)
		err := c.validate()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error %v does not name %s", err, w)
			}
		}
	}
	c := defaultDNSBL()
	c.Zones = []string{"zen.spamhaus.org=127.0.0.[2..11]*3", "bl.spamcop.net*2", "list.dnswl.org=127.0.[0..255].[1..3]*-5"}
	c.Resolvers = []string{"127.0.0.1", "::1", "[::1]:5353", "127.0.0.1:53"}
	if err := c.validate(); err != nil {
		t.Errorf("valid [dnsbl]: %v", err)
	}
}
