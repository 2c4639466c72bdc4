package dnsbl

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
)

// sameShard returns n distinct keys that land in the same shard.
func sameShard(c *cache, n int) []cacheKey {
	var out []cacheKey
	var want *cacheShard
	for i := 0; len(out) < n; i++ {
		k := ipKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if want == nil {
			want = c.shard(k)
		}
		if c.shard(k) == want {
			out = append(out, k)
		}
	}
	return out
}

// TestCacheEvictsLeastRecentlyUsed: a full shard drops its least recently
// used entry, and a hit makes an entry recent again.
func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newCache(2, 3*cacheShards, now.Add(-time.Hour), newAnswerSets())
	ks := sameShard(c, 5)
	listed := []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	exp := now.Add(time.Hour)
	for _, k := range ks[:3] {
		if c.put(k, 0, listed, exp) {
			t.Fatal("evicted before the shard was full")
		}
	}
	c.put(ks[0], 1, nil, exp) // second zone of the same client: no new entry
	if _, ok := c.get(ks[1], 0, now); !ok {
		t.Fatal("entry 1 missing")
	}
	// Order now (recent first): 1, 0, 2. Adding 3 evicts 2.
	if !c.put(ks[3], 0, listed, exp) {
		t.Fatal("a full shard did not evict")
	}
	if _, ok := c.get(ks[2], 0, now); ok {
		t.Error("the least recently used entry survived")
	}
	for _, i := range []int{0, 1, 3} {
		if a, ok := c.get(ks[i], 0, now); !ok || len(a) != 1 || a[0] != listed[0] {
			t.Errorf("entry %d: %v %v", i, a, ok)
		}
	}
	if a, ok := c.get(ks[0], 1, now); !ok || a != nil {
		t.Errorf("negative answer of zone 1: %v %v", a, ok)
	}
	if _, ok := c.get(ks[1], 1, now); ok {
		t.Error("zone 1 of entry 1 was never stored")
	}
	// An evicted slot reused for a new key keeps nothing of the old one.
	c.put(ks[4], 1, listed, exp) // evicts 1 (order 0, 3... oldest is 1)
	if _, ok := c.get(ks[4], 0, now); ok {
		t.Error("a reused slot kept the evicted entry's zone 0 answer")
	}
	if _, ok := c.get(ks[0], 0, now.Add(time.Hour)); ok {
		t.Error("an expired answer was returned")
	}
	if got := c.count.Load(); got != 3 {
		t.Errorf("%d entries, want 3 (the shard's size)", got)
	}
}

// TestCacheFullLoggedOnce: filling the cache logs one line, not one per
// miss (issue 13 item 2), and the metrics count entries and evictions.
func TestCacheFullLoggedOnce(t *testing.T) {
	t.Parallel()
	s := lists(t)
	var logs bytes.Buffer
	c := newChecker(t, s, Options{Zones: []string{"bl.test", "wl.test"}, CacheSize: 64, MinTTL: time.Minute, MaxTTL: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	for i := range 400 {
		c.Check(ctx, netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}))
	}
	if n := strings.Count(logs.String(), "cache full"); n != 1 {
		t.Errorf("%d 'cache full' lines for 400 clients in a 64-client cache, want 1:\n%s", n, logs.String())
	}
	var m dto.Metric
	c.m.entries.Write(&m)
	if v := m.GetGauge().GetValue(); v < 32 || v > 64 {
		t.Errorf("relayguard_dnsbl_cache_entries = %v, want at most the cache size 64", v)
	}
	c.m.evictions.Write(&m)
	if v := m.GetCounter().GetValue(); v < 300 {
		t.Errorf("relayguard_dnsbl_cache_evictions_total = %v, want > 300", v)
	}
	// The most recent clients are still answered from the cache.
	if r := c.QueryIP(ctx, c.Zones()[0], netip.AddrFrom4([4]byte{198, 51, 1, 143})); !r.Cached {
		t.Errorf("the last client asked is not cached")
	}
}

// TestConfigDefaultCacheSize: the configuration's default is this
// package's (config may not import dnsbl, so the number is written twice).
func TestConfigDefaultCacheSize(t *testing.T) {
	if got := config.Default().DNSBL.CacheSize; got != DefaultCacheSize {
		t.Errorf("config default dnsbl.cache_size = %d, dnsbl.DefaultCacheSize = %d", got, DefaultCacheSize)
	}
}

// TestLists: `dnsbl check` asks the catalog and the configured zones, each
// name once; a configured spec replaces the catalog's (the operator's
// filter and weight) and keeps its meanings.
func TestLists(t *testing.T) {
	ls, err := Lists(true, []string{"zen.spamhaus.org=127.0.0.[2..3]*4", "mine.example.org*-2"}, []string{"dbl.spamhaus.org", "rhs.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]CatalogEntry{}
	for _, l := range ls {
		z, _ := zonespec.Parse(l.Spec)
		if _, dup := byName[z.Name]; dup {
			t.Errorf("%s listed twice", z.Name)
		}
		byName[z.Name] = l
	}
	if len(ls) != len(Catalog)+2 {
		t.Errorf("%d lists, want the catalog's %d and 2 configured", len(ls), len(Catalog))
	}
	if zen := byName["zen.spamhaus.org"]; zen.Spec != "zen.spamhaus.org=127.0.0.[2..3]*4" || zen.Meanings["127.0.0.2"] == "" {
		t.Errorf("zen: %+v", zen)
	}
	if m := byName["mine.example.org"]; !m.Allow || m.Domain {
		t.Errorf("negative weight: %+v, want an allowlist", m)
	}
	if d := byName["rhs.example.org"]; !d.Domain {
		t.Errorf("domain zone: %+v", d)
	}
	if _, err := Lists(false, []string{"bad zone"}, nil); err == nil || !strings.Contains(err.Error(), `"bad zone"`) {
		t.Errorf("bad zone: %v", err)
	}
	for _, bad := range []string{"", "nodot", "not a name.example", "192.0.2.300"} {
		if _, _, err := ParseTarget(bad); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParseTarget(%q): %v", bad, err)
		}
	}
	if ip, _, _ := ParseTarget("2001:db8::1"); !ip.IsValid() {
		t.Error("IPv6 target")
	}
	if _, d, _ := ParseTarget("Spam.Example.COM."); d != "spam.example.com" {
		t.Errorf("domain target: %q", d)
	}
}
