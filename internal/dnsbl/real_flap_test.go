package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/dnsutil"
)

// TestRealCachedAnswersAreNotReachability: the lists' servers die behind a
// live unbound that has every documentation-range IPv4 name of both lists
// cached (it had been asked each of them: health probes from a /24 repeat
// within a few hundred checks, and clients are asked over and over). DNS is
// found unreachable and stays so through several health rounds — answers
// from the resolver's cache do not make it reachable again, nor make one
// list look dead while "the other answers" — and no list is marked failing
// or switched off. Before, the health checks' IPv4 probes were answered
// from the cache: DNS flapped back and forth and a list was put in failing
// (TestRealResolverOutage failed about 1 run in 8 this way).
func TestRealCachedAnswersAreNotReachability(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, logs := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest*2", "wl.rgtest=127.0.[0..255].[1..3]*-5"}})
	running(t, c)
	ctx := context.Background()
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 2 {
		t.Fatalf("before: %+v", got.Results)
	}
	warmResolverCache(t, r.unbound.Addr, "bl.rgtest", "wl.rgtest")

	r.nsd.Stop()
	for i := 0; ; i++ {
		got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}))
		if len(got.Unanswered()) != 2 {
			t.Fatalf("a list answered for a new client: %+v", got.Results)
		}
		if up, _ := c.DNSReachable(); !up {
			break
		}
		if i > 5 {
			t.Fatalf("DNS still reachable after %d failed checks", i)
		}
	}
	// Health rounds at 0, 1 and 3 s: each asks every list about IPv4
	// names the resolver has cached.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if up, _ := c.DNSReachable(); up {
			t.Fatalf("DNS reachable again while the lists' servers are down:\n%s", logs.String())
		}
	}
	for _, h := range c.HealthReport() {
		if h.State != Healthy {
			t.Errorf("%s switched to %v (%s) by the outage", h.Zone, h.State, h.Detail)
		}
	}
	r.nsd.Start()
	eventually(t, 20*time.Second, "DNS not reachable again", func() bool { up, _ := c.DNSReachable(); return up })
	eventually(t, 10*time.Second, "a new listed client is not found after the outage", func() bool {
		return c.Check(ctx, netip.MustParseAddr("127.0.0.6")).Score == 2
	})
	l := logs.String()
	if strings.Count(l, "DNS unreachable") != 1 || strings.Count(l, "DNS reachable again") != 1 {
		t.Errorf("want one line per change:\n%s", l)
	}
	if strings.Contains(l, "zone disabled") || strings.Contains(l, "zone failing") {
		t.Errorf("the outage switched a list off:\n%s", l)
	}
}

// warmResolverCache asks the resolver at addr, for each zone, about every
// address of the IPv4 documentation ranges, so that it holds their answers.
func warmResolverCache(t *testing.T, addr string, zones ...string) {
	t.Helper()
	res, err := dnsutil.New([]string{addr}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	names := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for range 16 {
		wg.Go(func() {
			for q := range names {
				if _, _, err := res.LookupA4(context.Background(), q); err != nil {
					var de *dnsutil.Error
					if !errors.As(err, &de) || !de.NotFound() {
						mu.Lock()
						failed = append(failed, fmt.Sprintf("%s: %v", q, err))
						mu.Unlock()
					}
				}
			}
		})
	}
	for _, z := range zones {
		for _, p := range docRanges {
			if !p.Addr().Is4() {
				continue
			}
			b := p.Addr().As4()
			for i := 1; i < 255; i++ {
				b[3] = byte(i)
				names <- IPQuery(netip.AddrFrom4(b), z)
			}
		}
	}
	close(names)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("warming the resolver's cache: %d failed, e.g. %s", len(failed), failed[0])
	}
}
