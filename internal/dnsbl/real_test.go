package dnsbl

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// realDNS is an authoritative NSD for rgtest. behind a caching unbound,
// started by the test:
//
//	bl.rgtest     a normal list: test points, 127.0.0.5 listed
//	wl.rgtest     an allowlist: 127.0.0.7 listed
//	dbl.rgtest    a domain list: test point, bad.example listed
//	wild.rgtest   lists everything (a wildcard, as a dead, parked list)
//	quota.rgtest  answers 127.255.255.254 to everything
//	slow.rgtest   a normal list reached through a proxy that can delay or drop
//	dead.rgtest   reached through a proxy that drops everything
type realDNS struct {
	nsd     *dnstest.NSD
	unbound *dnstest.Unbound
	slow    *dnstest.Proxy
	dead    *dnstest.Proxy
}

func startRealDNS(t *testing.T) *realDNS {
	t.Helper()
	dnstest.NeedReal(t)
	var recs []string
	for _, l := range []string{"bl", "slow", "dead"} {
		recs = append(recs,
			"2.0.0.127."+l+" IN A 127.0.0.2",
			"2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."+l+" IN A 127.0.0.2",
			"5.0.0.127."+l+" IN A 127.0.0.2",
			"6.0.0.127."+l+" IN A 127.0.0.3")
	}
	recs = append(recs,
		"2.0.0.127.wl IN A 127.0.10.0", "7.0.0.127.wl IN A 127.0.15.2",
		"test.dbl IN A 127.0.1.2", "bad.example.dbl IN A 127.0.1.2",
		"*.wild IN A 127.0.0.2", "*.quota IN A 127.255.255.254")
	r := &realDNS{nsd: dnstest.StartNSD(t, map[string][]string{"rgtest": recs})}
	r.slow = dnstest.StartProxy(t, r.nsd.Addr)
	r.dead = dnstest.StartProxy(t, r.nsd.Addr)
	r.dead.DropAll(true)
	r.unbound = dnstest.StartUnbound(t,
		dnstest.Stub{Zone: "rgtest", Addrs: []string{r.nsd.Addr}},
		dnstest.Stub{Zone: "slow.rgtest", Addrs: []string{r.slow.Addr}},
		dnstest.Stub{Zone: "dead.rgtest", Addrs: []string{r.dead.Addr}})
	return r
}

func (r *realDNS) checker(t *testing.T, resolver string, o Options) (*Checker, *syncBuf) {
	t.Helper()
	res, err := dnsutil.New([]string{resolver}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	o.Registerer = prometheus.NewRegistry()
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = time.Hour
	}
	o.MinTTL, o.MaxTTL = time.Minute, time.Hour
	c, err := New(res, o)
	if err != nil {
		t.Fatal(err)
	}
	return c, logs
}

// TestRealHealthStates: the states, as a real caching resolver in front
// of a real authoritative server shows them.
func TestRealHealthStates(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, _ := r.checker(t, r.unbound.Addr, Options{
		Zones:       []string{"bl.rgtest", "wl.rgtest=127.0.[0..255].[1..3]*-5", "wild.rgtest", "quota.rgtest", "dead.rgtest"},
		DomainZones: []string{"dbl.rgtest"}})
	want := map[string]State{"bl.rgtest": Healthy, "wl.rgtest": Healthy, "wild.rgtest": ListsEverything,
		"quota.rgtest": Refusing, "dead.rgtest": Dead, "dbl.rgtest": Healthy}
	for _, h := range c.CheckHealth(context.Background()) {
		if h.State != want[h.Zone] {
			t.Errorf("%s: %v (%s), want %v", h.Zone, h.State, h.Detail, want[h.Zone])
		}
	}
	if up, why := c.DNSReachable(); !up {
		t.Errorf("one dead list made DNS unreachable: %s", why)
	}
}

// TestRealResolverOutage: unbound killed, then frozen, then NSD behind it
// killed — each time no list is switched off, a cached listing still
// counts, other clients get a temporary failure at once, and DNS is back
// when the servers are (issue 13 item 1).
func TestRealResolverOutage(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, logs := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest*2", "wl.rgtest=127.0.[0..255].[1..3]*-5"}})
	running(t, c)
	ctx := context.Background()
	listed := netip.MustParseAddr("127.0.0.5")
	if got := c.Check(ctx, listed); got.Score != 2 {
		t.Fatalf("before: %+v", got.Results)
	}
	n := 0
	for _, outage := range []struct {
		name       string
		start, end func()
	}{
		{"unbound killed", r.unbound.Stop, r.unbound.Start},
		{"unbound frozen", r.unbound.Pause, r.unbound.Resume},
		{"NSD killed", r.nsd.Stop, r.nsd.Start},
	} {
		outage.start()
		// Clients not in our cache: their checks fail until DNS is
		// found unreachable, then fail at once.
		for i := 0; ; i++ {
			n++
			got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 51, 100, byte(n)}))
			if len(got.Unanswered()) != 2 {
				t.Fatalf("%s: a list answered for a new client: %+v", outage.name, got.Results)
			}
			if up, _ := c.DNSReachable(); !up {
				break
			}
			if i > 5 {
				t.Fatalf("%s: DNS still reachable after %d failed checks", outage.name, i)
			}
		}
		got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 51, 101, byte(n)}))
		if r := got.Results[0]; len(got.Unanswered()) != 2 || !notAsked(r) || !strings.Contains(r.Detail, "DNS unreachable") {
			t.Errorf("%s: check after the outage was noticed: %+v, want temporary failures without asking", outage.name, got.Results)
		}
		if got := c.Check(ctx, listed); got.Score != 2 || got.Results[0].Status != Listed || !got.Results[0].Cached {
			t.Errorf("%s: cached listing: %+v", outage.name, got.Results)
		}
		for _, h := range c.HealthReport() {
			if h.State != Healthy {
				t.Errorf("%s: %s switched to %v (%s)", outage.name, h.Zone, h.State, h.Detail)
			}
		}
		outage.end()
		eventually(t, 20*time.Second, outage.name+": DNS not reachable again", func() bool { up, _ := c.DNSReachable(); return up })
		eventually(t, 10*time.Second, outage.name+": a new listed client is not found after the outage", func() bool {
			return c.Check(ctx, netip.MustParseAddr("127.0.0.6")).Score == 2
		})
	}
	l := logs.String()
	if strings.Count(l, "DNS unreachable") != 3 || strings.Count(l, "DNS reachable again") != 3 {
		t.Errorf("want one line per change (3 outages):\n%s", l)
	}
	if strings.Contains(l, "zone disabled") || strings.Contains(l, "zone failing") {
		t.Errorf("an outage switched a list off:\n%s", l)
	}
}

// TestRealStartDuringOutage: started while the resolver is down, the
// checker defers instead of failing open, and uses the lists once the
// resolver is back.
func TestRealStartDuringOutage(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	r.unbound.Stop()
	c, _ := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest", "wild.rgtest*5"}})
	running(t, c)
	got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.5"))
	if got.Score != 0 || len(got.Unanswered()) != 2 {
		t.Fatalf("at start during the outage: %+v, want every list unanswered", got.Results)
	}
	r.unbound.Start()
	eventually(t, 20*time.Second, "lists not checked after the resolver returned", func() bool {
		return stateOf(c, "bl.rgtest").State == Healthy && stateOf(c, "wild.rgtest").State == ListsEverything
	})
	if got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.9")); got.Score != 0 || len(got.Unanswered()) != 0 {
		t.Errorf("clean client after the outage: %+v", got.Results)
	}
}

// TestRealDeadListMidRun: one list stops answering while the others go on;
// within three failed queries it is no longer waited for, its check finds
// it dead (not DNS), and it is re-enabled when it answers again (issue 13
// item 4).
func TestRealDeadListMidRun(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, logs := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest", "slow.rgtest"}, Timeout: time.Second})
	running(t, c)
	ctx := context.Background()
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 2 {
		t.Fatalf("before: %+v", got.Results)
	}
	r.slow.DropAll(true)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { c.Check(ctx, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})) })
	}
	wg.Wait()
	got := c.Check(ctx, netip.MustParseAddr("127.0.0.6"))
	if r := resultOf(got, "slow.rgtest"); !notAsked(r) {
		t.Errorf("a check after the list died: %v %q, want not asked (no wait for the dead list)", r.Status, r.Detail)
	}
	if got.Score != 1 {
		t.Errorf("bl.rgtest still counts: %+v", got.Results)
	}
	eventually(t, 10*time.Second, "slow.rgtest not found dead", func() bool { return stateOf(c, "slow.rgtest").State == Dead })
	if up, _ := c.DNSReachable(); !up {
		t.Error("a dead list was taken for a DNS outage")
	}
	r.slow.DropAll(false)
	eventually(t, 30*time.Second, "slow.rgtest not re-enabled", func() bool { return stateOf(c, "slow.rgtest").State == Healthy })
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 2 {
		t.Errorf("after recovery: %+v", got.Results)
	}
	if l := logs.String(); !strings.Contains(l, "zone failing") || !strings.Contains(l, "re-enabled") {
		t.Errorf("log:\n%s", l)
	}
}

// TestRealLossyPath: the first packet of every query between relayguard
// and its resolver is lost; every client still gets its answer in time,
// none a temporary failure (issue 13 item 5: before, each lost packet
// cost the whole timeout and then a 451).
func TestRealLossyPath(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	lossy := dnstest.StartProxy(t, r.unbound.Addr)
	lossy.DropFirst(true)
	c, _ := r.checker(t, lossy.Addr, Options{Zones: []string{"bl.rgtest", "wl.rgtest=127.0.[0..255].[1..3]*-5"}, Timeout: 3 * time.Second})
	running(t, c)
	ctx := context.Background()
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			ip, want := netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), 0
			switch i % 10 {
			case 0:
				ip, want = netip.MustParseAddr("127.0.0.5"), 1
			case 1:
				ip, want = netip.MustParseAddr("127.0.0.7"), -5
			}
			got := c.Check(ctx, ip)
			if got.Score != want || len(got.Unanswered()) > 0 {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s %d %+v", ip, got.Score, got.Unanswered()))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of 60 clients got no answer or a wrong one over a lossy path: %v", len(bad), bad)
	}
	if n := lossy.Dropped.Load(); n < 50 {
		t.Errorf("only %d packets dropped: the test lost less than it should", n)
	}
	for _, h := range c.HealthReport() {
		if h.State != Healthy {
			t.Errorf("%s: %v (%s)", h.Zone, h.State, h.Detail)
		}
	}
}

// TestRealSlowList: a list whose servers answer after 0.6 s (within the
// deadline) is waited for, and neither counted as failing nor dead; one
// that answers only after the deadline is a temporary failure, and the
// breaker takes it out.
func TestRealSlowList(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	r.slow.Delay(600 * time.Millisecond)
	c, _ := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest", "slow.rgtest"}, Timeout: 3 * time.Second})
	running(t, c)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			ip, want := netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), 0
			if i == 3 {
				ip, want = netip.MustParseAddr("127.0.0.5"), 2
			}
			if got := c.Check(ctx, ip); got.Score != want || len(got.Unanswered()) > 0 {
				t.Errorf("%s through a slow list: %+v", ip, got.Results)
			}
		})
	}
	wg.Wait()
	if h := stateOf(c, "slow.rgtest"); h.State != Healthy {
		t.Errorf("slow.rgtest: %v (%s)", h.State, h.Detail)
	}
	r.slow.Delay(10 * time.Second)
	for i := range 3 {
		wg.Go(func() {
			got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 18, 2, byte(i)}))
			if statusOf(got, "slow.rgtest") != TempError || statusOf(got, "bl.rgtest") != Clean {
				t.Errorf("list slower than the deadline: %+v", got.Results)
			}
		})
	}
	wg.Wait()
	if h := stateOf(c, "slow.rgtest"); h.State != Failing && h.State != Dead {
		t.Errorf("slow.rgtest after 3 timeouts: %v (%s), want failing", h.State, h.Detail)
	}
}
