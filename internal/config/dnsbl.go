package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
)

// DNSBLConfig is the [dnsbl] section: DNS block and allow lists, scored like
// Postfix postscreen, with list health checks and a TTL cache.
type DNSBLConfig struct {
	Zones           []string `toml:"zones" comment:"Client-IP lists in postscreen syntax zone[=filter][*weight], e.g.\n\"zen.spamhaus.org=127.0.0.[2..11]*3\", \"bl.spamcop.net*2\", \"list.dnswl.org=127.0.[0..255].[1..3]*-5\".\nEmpty by default (no DNS query). Recommended with a local caching resolver: see docs/policy.md."`
	DomainZones     []string `toml:"domain_zones" comment:"Domain lists (RHSBL) checked against the sender domain and the HELO name, same syntax,\ne.g. \"dbl.spamhaus.org=127.0.1.[2..99]*3\"."`
	RejectThreshold int      `toml:"reject_threshold" comment:"dnsbl_score rejects when the summed weights reach this (postscreen_dnsbl_threshold)."`
	AllowThreshold  int      `toml:"allow_threshold" comment:"dnsbl_score permits when the sum is at most this negative value (postscreen_dnsbl_allowlist_threshold); 0 disables."`
	Resolvers       []string `toml:"resolvers" comment:"DNS servers (host or host:port) for lists, rDNS and SPF. Empty: /etc/resolv.conf.\nUse a local caching resolver (unbound): large lists refuse queries from public resolvers."`
	Timeout         Duration `toml:"timeout" comment:"One deadline for the queries to all zones of one check."`
	CacheMinTTL     Duration `toml:"cache_min_ttl" comment:"Cache answers at least this long (floor on the DNS TTL)."`
	CacheMaxTTL     Duration `toml:"cache_max_ttl" comment:"Cache answers at most this long (ceiling on the DNS TTL)."`
	CacheSize       int      `toml:"cache_size" comment:"Client addresses (and as many domain names) whose DNS-list answers are cached, every zone's\nanswer in one entry; the least recently seen are dropped first. The default holds a day of a busy MX\n(answers live at most cache_max_ttl), about 70 MB with 10 zones."`
	HealthInterval  Duration `toml:"health_interval" comment:"Check each zone's health (RFC 5782 §5 test points, lists-everything probes) this often; 0 disables."`
}

func defaultDNSBL() DNSBLConfig {
	return DNSBLConfig{
		RejectThreshold: 1,
		Timeout:         Duration(5 * time.Second),
		CacheMinTTL:     Duration(time.Minute),
		CacheMaxTTL:     Duration(time.Hour),
		CacheSize:       500000, // dnsbl.DefaultCacheSize
		HealthInterval:  Duration(5 * time.Minute),
	}
}

func (c *DNSBLConfig) validate() error {
	for _, list := range []struct {
		key   string
		zones []string
	}{{"dnsbl.zones", c.Zones}, {"dnsbl.domain_zones", c.DomainZones}} {
		for _, z := range list.zones {
			if _, err := zonespec.Parse(z); err != nil {
				return fmt.Errorf("%s %q: %w", list.key, z, err)
			}
		}
	}
	for _, r := range c.Resolvers {
		if !resolverOK(r) {
			return fmt.Errorf("dnsbl.resolvers %q: want an IP address or address:port", r)
		}
	}
	if c.RejectThreshold < 1 {
		return fmt.Errorf("dnsbl.reject_threshold %d: must be at least 1", c.RejectThreshold)
	}
	if c.AllowThreshold > 0 {
		return fmt.Errorf("dnsbl.allow_threshold %d: must be 0 (off) or negative", c.AllowThreshold)
	}
	if c.Timeout.D() <= 0 {
		return fmt.Errorf("dnsbl.timeout %s: must be positive", c.Timeout.D())
	}
	if c.CacheMinTTL.D() < 0 || c.CacheMaxTTL.D() < c.CacheMinTTL.D() {
		return fmt.Errorf("dnsbl.cache_max_ttl %s: must be at least cache_min_ttl %s", c.CacheMaxTTL.D(), c.CacheMinTTL.D())
	}
	if c.CacheSize < 0 {
		return fmt.Errorf("dnsbl.cache_size %d: must not be negative", c.CacheSize)
	}
	if c.HealthInterval.D() < 0 {
		return fmt.Errorf("dnsbl.health_interval %s: must not be negative", c.HealthInterval.D())
	}
	return nil
}

// resolverOK accepts "192.0.2.53", "2001:db8::53", "[2001:db8::53]:53" and
// "192.0.2.53:5353", as dnsutil.New does.
func resolverOK(s string) bool {
	s = strings.TrimSpace(s)
	if host, port, err := net.SplitHostPort(s); err == nil {
		p, err := strconv.Atoi(port)
		return host != "" && err == nil && p > 0 && p < 65536
	}
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}
