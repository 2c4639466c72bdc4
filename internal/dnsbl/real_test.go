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
//	doc.rgtest    a normal list that also lists all of 192.0.2.0/24
//	lagwild.rgtest lists everything, through a proxy that can delay
//	flip.rgtest   a normal list, through a proxy that can be re-pointed
//
// bl.rgtest answers 127.255.255.254 (an error code) for 198.18.7.7 alone.
type realDNS struct {
	nsd     *dnstest.NSD
	unbound *dnstest.Unbound
	slow    *dnstest.Proxy
	dead    *dnstest.Proxy
	lag     *dnstest.Proxy
	flip    *dnstest.Proxy
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
		"*.wild IN A 127.0.0.2", "*.quota IN A 127.255.255.254",
		"7.7.18.198.bl IN A 127.255.255.254",
		"2.0.0.127.doc IN A 127.0.0.2", "*.2.0.192.doc IN A 127.0.0.2",
		"*.lagwild IN A 127.0.0.2",
		"2.0.0.127.flip IN A 127.0.0.2", "5.0.0.127.flip IN A 127.0.0.2")
	r := &realDNS{nsd: dnstest.StartNSD(t, map[string][]string{"rgtest": recs})}
	r.slow = dnstest.StartProxy(t, r.nsd.Addr)
	r.dead = dnstest.StartProxy(t, r.nsd.Addr)
	r.dead.DropAll(true)
	r.lag = dnstest.StartProxy(t, r.nsd.Addr)
	r.flip = dnstest.StartProxy(t, r.nsd.Addr)
	r.unbound = dnstest.StartUnbound(t,
		dnstest.Stub{Zone: "rgtest", Addrs: []string{r.nsd.Addr}},
		dnstest.Stub{Zone: "slow.rgtest", Addrs: []string{r.slow.Addr}},
		dnstest.Stub{Zone: "dead.rgtest", Addrs: []string{r.dead.Addr}},
		dnstest.Stub{Zone: "lagwild.rgtest", Addrs: []string{r.lag.Addr}},
		dnstest.Stub{Zone: "flip.rgtest", Addrs: []string{r.flip.Addr}})
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
		// found unreachable, then fail at once. (Not from a documentation
		// range: the health checks ask random names from those, and
		// unbound answers a name asked before from its cache.)
		for i := 0; ; i++ {
			n++
			got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 19, 100, byte(n)}))
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
		got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 19, 101, byte(n)}))
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
	if d := stateOf(c, "slow.rgtest").Detail; strings.Contains(d, "second check") {
		t.Errorf("a list silent alone waited for a second check: %s", d)
	}
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

// TestRealZonesUsedOnlyOnceChecked: right after start, with the first
// health check still waiting for a slow list that lists everything, a
// clean client is never scored by that list (issue 13 item 3: across 8
// restarts a clean client got 554 twice); the good list is used.
func TestRealZonesUsedOnlyOnceChecked(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	r.lag.Delay(300 * time.Millisecond)
	for i := range 4 {
		c, _ := r.checker(t, r.unbound.Addr, Options{Zones: []string{"lagwild.rgtest*3", "bl.rgtest"}})
		running(t, c)
		got := c.Check(context.Background(), netip.AddrFrom4([4]byte{198, 18, 6, byte(i)}))
		if st := statusOf(got, "lagwild.rgtest"); got.Score != 0 || (st != Skipped && st != TempError) {
			t.Fatalf("start %d: clean client scored %d, lagwild.rgtest %v: a zone was used before its health check", i, got.Score, st)
		}
		if got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.5")); got.Score != 1 {
			t.Errorf("start %d: listed client scored %d, want 1 (bl.rgtest): %+v", i, got.Score, got.Results)
		}
		if h := stateOf(c, "lagwild.rgtest"); h.State != ListsEverything {
			t.Errorf("start %d: lagwild.rgtest %v (%s)", i, h.State, h.Detail)
		}
	}
}

// TestRealOneErrorCode: a list answering 127.255.255.254 for one address
// gives that client "could not ask" (never listed, never clean), in the
// policy path and in `dnsbl check`'s Lookup alike, and does not switch the
// list off for anyone else (issue 13 item 6).
func TestRealOneErrorCode(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, logs := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest"}})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	before := stateOf(c, "bl.rgtest").Checked
	odd := netip.MustParseAddr("198.18.7.7")
	got := c.Check(ctx, odd)
	if r := resultOf(got, "bl.rgtest"); r.Status != ListError || got.Score != 0 || len(got.Unanswered()) != 1 {
		t.Fatalf("error code answer: %+v, want list_error (unanswered)", got.Results)
	}
	eventually(t, 10*time.Second, "no health check after the error code", func() bool { return stateOf(c, "bl.rgtest").Checked.After(before) })
	if h := stateOf(c, "bl.rgtest"); h.State != Healthy {
		t.Fatalf("bl.rgtest after one error code: %v (%s), want healthy", h.State, h.Detail)
	}
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.6")); got.Score != 1 {
		t.Errorf("another client after the error code: %+v, want listed (the zone still used)", got.Results)
	}
	if got := c.Check(ctx, odd); resultOf(got, "bl.rgtest").Status != ListError || resultOf(got, "bl.rgtest").Cached {
		t.Errorf("the error code asked again: %+v, want list_error, not cached", got.Results)
	}
	if !strings.Contains(logs.String(), "dnsbl list error") {
		t.Errorf("the error code is not logged:\n%s", logs)
	}
	res, err := dnsutil.New([]string{r.unbound.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := Lists(false, []string{"bl.rgtest"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Lookup(ctx, res, ls, []string{odd.String(), "127.0.0.6"}, true, Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows[0].Result != ListError.String() || rep.Rows[1].Result != Listed.String() || !rep.Unanswered() {
		t.Errorf("dnsbl check's Lookup: %+v, want list_error then listed, unanswered", rep.Rows)
	}
}

// TestRealListsEverythingNeedsASecondProbe: a list that lists one whole
// documentation range (and so, sometimes, one random probe) stays healthy;
// one that lists everything is found (issue 13 item 7).
func TestRealListsEverythingNeedsASecondProbe(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, logs := r.checker(t, r.unbound.Addr, Options{Zones: []string{"doc.rgtest", "wild.rgtest"}})
	for range 4 { // random probes: several rounds
		for _, h := range c.CheckHealth(context.Background()) {
			want := Healthy
			if h.Zone == "wild.rgtest" {
				want = ListsEverything
			}
			if h.State != want {
				t.Errorf("%s: %v (%s), want %v", h.Zone, h.State, h.Detail, want)
			}
		}
	}
	if !strings.Contains(logs.String(), "not switched off") {
		t.Errorf("four rounds never listed a 192.0.2.0/24 probe of doc.rgtest (or did not log it):\n%s", logs)
	}
}

// TestRealListStartsListingEverything: a healthy list whose name servers
// are replaced mid-run by a wildcard (what parked, dead lists do) is not
// believed at the first listing that follows: a random name no list may
// list is asked, and when it is listed too the zone is taken out at once and
// found lists-everything — instead of rejecting every client until the next
// health check, 5 minutes later by default.
func TestRealListStartsListingEverything(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	parked := dnstest.StartNSD(t, map[string][]string{"flip.rgtest": {"* IN A 127.0.0.2"}})
	c, logs := r.checker(t, r.unbound.Addr, Options{Zones: []string{"flip.rgtest*3", "bl.rgtest"}})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.9")); got.Score != 0 || len(got.Unanswered()) != 0 {
		t.Fatalf("clean client before: %+v", got.Results)
	}
	r.flip.SetUpstream(parked.Addr)
	for i := range 5 {
		got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 18, 8, byte(i)}))
		if st := statusOf(got, "flip.rgtest"); got.Score != 0 || st == Listed {
			t.Fatalf("clean client %d after the list was parked: score %d, flip.rgtest %v", i, got.Score, st)
		}
	}
	eventually(t, 10*time.Second, "flip.rgtest not found listing everything", func() bool {
		return stateOf(c, "flip.rgtest").State == ListsEverything
	})
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 1 || statusOf(got, "flip.rgtest") != Skipped {
		t.Errorf("listed client after: %+v, want bl.rgtest only", got.Results)
	}
	if !strings.Contains(logs.String(), "LISTS EVERYTHING") {
		t.Errorf("not logged:\n%s", logs)
	}
	r.flip.SetUpstream(r.nsd.Addr)
	eventually(t, 20*time.Second, "flip.rgtest not re-enabled", func() bool { return stateOf(c, "flip.rgtest").State == Healthy })
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 4 {
		t.Errorf("listed client after the list returned: %+v, want 4", got.Results)
	}
}

// TestRealCacheFull: a cache smaller than the clients, in front of a real
// resolver, keeps the most recent clients, drops the oldest, logs one line
// (issue 13 item 2: one per miss before, 65,559 lines in 8 s).
func TestRealCacheFull(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, logs := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest", "wl.rgtest=127.0.[0..255].[1..3]*-5"}, CacheSize: 20})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	for i := range 120 {
		if got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 18, 9, byte(i)})); len(got.Unanswered()) != 0 || got.Score != 0 {
			t.Fatalf("client %d: %+v", i, got.Results)
		}
	}
	if n := strings.Count(logs.String(), "cache full"); n != 1 {
		t.Errorf("%d 'cache full' lines, want 1:\n%s", n, logs)
	}
	bl := c.Zones()[0]
	if r := c.QueryIP(ctx, bl, netip.AddrFrom4([4]byte{198, 18, 9, 119})); !r.Cached {
		t.Error("the last client is not cached")
	}
	if r := c.QueryIP(ctx, bl, netip.AddrFrom4([4]byte{198, 18, 9, 0})); r.Cached || r.Status != Clean {
		t.Errorf("the first client: cached %v, %v; want evicted, asked again", r.Cached, r.Status)
	}
}

// TestRealCutPathEndsWaitingQueries: a single rule's query
// (reject_rbl_client) under a longer request deadline (policy.dns_timeout)
// waits at most dnsbl.timeout, and the queries waiting when the path to
// the resolver is found cut end at once with a temporary failure (they
// waited out the whole request deadline: 10 s by default).
func TestRealCutPathEndsWaitingQueries(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	path := dnstest.StartProxy(t, r.unbound.Addr)
	// The default timeout: queries count as stalled after 1.25 s of it.
	c, _ := r.checker(t, path.Addr, Options{Zones: []string{"bl.rgtest", "wl.rgtest=127.0.[0..255].[1..3]*-5"}, Timeout: 5 * time.Second})
	running(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the request's, far longer
	defer cancel()
	c.waitFirst(ctx)
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 1 {
		t.Fatalf("before: %+v", got.Results)
	}
	path.DropAll(true)
	bl := c.Zones()[0]
	start := time.Now()
	r1 := c.QueryIP(ctx, bl, netip.MustParseAddr("198.18.10.1"))
	if r1.Status != TempError {
		t.Fatalf("path cut: %v %s", r1.Status, r1.Detail)
	}
	// Not a timing assertion on the machine's speed: the query is bounded
	// by dnsbl.timeout (5 s), not by the request's minute.
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("one query waited %v: the request's deadline, not dnsbl.timeout", el)
	}
	// Three clients are checked together (six queries to two lists);
	// none is answered: DNS is found unreachable and they all end with
	// it, before their own deadline.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var res []Result
	for i := range 3 {
		wg.Go(func() {
			got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 18, 10, byte(2 + i)}))
			mu.Lock()
			res = append(res, got.Results...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if up, _ := c.DNSReachable(); up {
		t.Error("DNS still reachable after six queries went unanswered")
	}
	for i, r := range res {
		if r.Status != TempError || !strings.Contains(r.Detail, "DNS unreachable") {
			t.Errorf("query %d: %v %q, want a temporary failure ended by DNS unreachable", i, r.Status, r.Detail)
		}
	}
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 1 || !got.Results[0].Cached {
		t.Errorf("cached listing while DNS is cut: %+v", got.Results)
	}
	path.DropAll(false)
	eventually(t, 20*time.Second, "DNS not reachable again", func() bool { up, _ := c.DNSReachable(); return up })
}

// TestRealResolverCutOffFromLists: the resolver still answers from its
// cache but reaches no list (its path to the authoritative servers is
// cut, as when it is overloaded): that is DNS unreachable, not every list
// dead — before, the answers from the resolver's cache counted as "other
// lists answer" and every zone was switched off (the benchmark saw it at
// a load of 40: a fail-open of every list).
func TestRealResolverCutOffFromLists(t *testing.T) {
	t.Parallel()
	dnstest.NeedReal(t)
	nsd := dnstest.StartNSD(t, map[string][]string{"rgtest": {
		"2.0.0.127.bl IN A 127.0.0.2", "5.0.0.127.bl IN A 127.0.0.2",
		"2.0.0.127.wl IN A 127.0.10.0", "7.0.0.127.wl IN A 127.0.15.2"}})
	up := dnstest.StartProxy(t, nsd.Addr) // unbound → up → NSD
	ub := dnstest.StartUnbound(t, dnstest.Stub{Zone: "rgtest", Addrs: []string{up.Addr}})
	r := &realDNS{nsd: nsd, unbound: ub}
	c, logs := r.checker(t, ub.Addr, Options{Zones: []string{"bl.rgtest", "wl.rgtest=127.0.[0..255].[1..3]*-5"}})
	ctx := context.Background()
	for _, h := range c.CheckHealth(ctx) {
		if h.State != Healthy {
			t.Fatalf("before: %s %v (%s)", h.Zone, h.State, h.Detail)
		}
	}
	// Prime the resolver's cache (not the checker's) with 200 clients.
	prime, err := dnsutil.New([]string{ub.Addr}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	client := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 11 + byte(i/250), byte(i % 250)}) }
	for i := range 200 {
		for _, z := range []string{"bl.rgtest", "wl.rgtest"} {
			prime.LookupA4(ctx, IPQuery(client(i), z))
		}
	}
	up.DropAll(true)
	// Clients keep coming; the resolver answers them from its cache.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i = (i + 1) % 200 {
			select {
			case <-stop:
				return
			default:
			}
			c.Check(ctx, client(i))
			time.Sleep(5 * time.Millisecond)
		}
	})
	hs := c.CheckHealth(ctx)
	close(stop)
	wg.Wait()
	for _, h := range hs {
		if h.State.Disabled() {
			t.Errorf("%s switched off (%v: %s) while the resolver reaches no list", h.Zone, h.State, h.Detail)
		}
	}
	if ok, _ := c.DNSReachable(); ok {
		t.Error("DNS reachable while the resolver reaches no list")
	}
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.9")); len(got.Unanswered()) != 2 {
		t.Errorf("an uncached client: %+v, want both lists unanswered", got.Results)
	}
	if strings.Contains(logs.String(), "zone disabled") {
		t.Errorf("log:\n%s", logs)
	}
}

// TestRealSilentOnceIsNotDead: in the running server, one round of
// health checks that got no answer from a list makes it failing (a
// temporary failure), not dead (skipped): only a second silent check a
// second later does. A list whose probes were lost once is used again.
// (A list that goes silent alone, the others answering, is dead at once:
// TestRealDeadListMidRun.)
func TestRealSilentOnceIsNotDead(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, _ := r.checker(t, r.unbound.Addr, Options{Zones: []string{"bl.rgtest", "slow.rgtest"}})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	r.slow.DropAll(true)
	c.mu.Lock()
	for _, st := range c.state { // a round: every zone checked at once
		c.scheduleLocked(st, 0)
	}
	c.mu.Unlock()
	eventually(t, 10*time.Second, "slow.rgtest not failing after a silent check", func() bool { return stateOf(c, "slow.rgtest").State != Healthy })
	r.slow.DropAll(false)
	if h := stateOf(c, "slow.rgtest"); h.State != Failing {
		t.Fatalf("after one silent check: %v (%s), want failing", h.State, h.Detail)
	}
	if got := c.Check(ctx, netip.MustParseAddr("198.18.12.1")); statusOf(got, "slow.rgtest") != TempError {
		t.Errorf("while failing: %+v, want a temporary failure, not skipped", got.Results)
	}
	eventually(t, 10*time.Second, "slow.rgtest not healthy again", func() bool { return stateOf(c, "slow.rgtest").State == Healthy })
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 2 {
		t.Errorf("after: %+v", got.Results)
	}
}

// TestRealNextResolver: with two resolvers configured, one frozen (hung)
// or killed, every client is still answered from the other, without a
// temporary failure (issue 13 item 5: try the next resolver).
func TestRealNextResolver(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	other := dnstest.StartUnbound(t, dnstest.Stub{Zone: "rgtest", Addrs: []string{r.nsd.Addr}})
	res, err := dnsutil.New([]string{r.unbound.Addr, other.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(res, Options{Zones: []string{"bl.rgtest", "wl.rgtest=127.0.[0..255].[1..3]*-5"}, Timeout: 3 * time.Second,
		HealthInterval: time.Hour, MinTTL: time.Minute, MaxTTL: time.Hour, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	n := 0
	for _, outage := range []struct {
		name       string
		start, end func()
	}{
		{"first frozen", r.unbound.Pause, r.unbound.Resume},
		{"second killed", other.Stop, other.Start},
	} {
		outage.start()
		var wg sync.WaitGroup
		for i := range 20 {
			n++
			ip, want := netip.AddrFrom4([4]byte{198, 18, 13, byte(n)}), 0
			if i == 0 {
				ip, want = netip.AddrFrom4([4]byte{127, 0, 0, byte(5 + len(outage.name)%2)}), 1
			}
			wg.Go(func() {
				if got := c.Check(ctx, ip); got.Score != want || len(got.Unanswered()) != 0 {
					t.Errorf("%s: %s: %+v", outage.name, ip, got.Results)
				}
			})
		}
		wg.Wait()
		outage.end()
	}
	for _, h := range c.HealthReport() {
		if h.State != Healthy {
			t.Errorf("%s: %v (%s)", h.Zone, h.State, h.Detail)
		}
	}
}

// TestRealSpotProbeNeedsASecondProbe: a healthy list that lists one whole
// documentation range keeps being believed when the probe after a listing
// falls in that range: a second probe from another range is not listed.
func TestRealSpotProbeNeedsASecondProbe(t *testing.T) {
	t.Parallel()
	r := startRealDNS(t)
	c, _ := r.checker(t, r.unbound.Addr, Options{Zones: []string{"doc.rgtest"}})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	st := c.zoneState("doc.rgtest")
	for i := range 16 { // a probe from 192.0.2.0/24 one time in four
		c.mu.Lock()
		st.lastSpot = time.Time{}
		c.mu.Unlock()
		if got := c.Check(ctx, netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})); got.Score != 1 {
			t.Fatalf("client %d, listed in doc.rgtest: %+v", i, got.Results)
		}
		if h := stateOf(c, "doc.rgtest"); h.State != Healthy {
			t.Fatalf("after listing client %d: %v (%s)", i, h.State, h.Detail)
		}
	}
}
