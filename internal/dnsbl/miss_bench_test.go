package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// BenchmarkCheckMiss is one Check of a new client against 10 zones whose
// answers come from an in-process DNS server: the client side's cost of a
// cache miss (resolver, breaker, cache store).
func BenchmarkCheckMiss(b *testing.B) {
	c := tenZones(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		c.Check(ctx, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
}

// tenZones is a checker of 10 zones answered by an in-process DNS server.
func tenZones(b *testing.B) *Checker {
	s := dnstest.Start(b)
	var zones []string
	for k := range 10 {
		z := fmt.Sprintf("z%d.test", k)
		s.Add(b, "2.0.0.127."+z+". 300 IN A 127.0.0.2")
		zones = append(zones, z)
	}
	r, _ := dnsutil.New([]string{s.Addr}, time.Second)
	c, err := New(r, Options{Zones: zones, MinTTL: time.Minute, MaxTTL: time.Hour, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkCheckHit is one Check of a known client against 10 zones whose
// answers are all in the cache: the policy service's common case.
func BenchmarkCheckHit(b *testing.B) {
	c := tenZones(b)
	ctx := context.Background()
	for i := range 256 {
		c.Check(ctx, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	b.ResetTimer()
	for i := range b.N {
		if s := c.Check(ctx, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})); !s.Results[0].Cached {
			b.Fatalf("not from the cache: %+v", s.Results[0])
		}
	}
}
