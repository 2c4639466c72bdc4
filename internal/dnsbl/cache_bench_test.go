package dnsbl

import (
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// BenchmarkCacheMemory fills a cache of DefaultCacheSize clients with an
// answer for each of 10 zones and reports the heap it holds:
//
//	go test -run '^$' -bench CacheMemory -benchtime 1x ./internal/dnsbl
func BenchmarkCacheMemory(b *testing.B) {
	const zones = 10
	for range b.N {
		now := time.Now()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := newCache(zones, DefaultCacheSize, now.Add(-time.Hour), newAnswerSets())
		listed := []netip.Addr{netip.MustParseAddr("127.0.0.2")}
		for i := range DefaultCacheSize {
			k := ipKey(netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}))
			for z := range zones {
				var a []netip.Addr
				if (i+z)%7 == 0 {
					a = listed
				}
				c.put(k, z, a, now.Add(time.Hour))
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(c)
		heap := float64(after.HeapAlloc - before.HeapAlloc)
		b.ReportMetric(heap/(1<<20), "MiB")
		b.ReportMetric(heap/float64(c.count.Load()), "B/client")
	}
}

// BenchmarkCacheGetPut is one lookup and, for a tenth, one store in a full
// cache, from all CPUs at once.
func BenchmarkCacheGetPut(b *testing.B) {
	now := time.Now()
	const size = 100000
	c := newCache(10, size, now.Add(-time.Hour), newAnswerSets())
	for i := range size {
		c.put(ipKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})), 0, nil, now.Add(time.Hour))
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			k := ipKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
			if _, ok := c.get(k, i%10, now); !ok {
				c.put(k, i%10, nil, now.Add(time.Hour))
			}
		}
	})
}
