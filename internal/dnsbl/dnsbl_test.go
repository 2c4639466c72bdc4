package dnsbl

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

func TestQueryNames(t *testing.T) {
	// RFC 5782 §2.1 and §2.4 examples.
	if got := IPQuery(netip.MustParseAddr("192.168.42.23"), "dnsxl.example.com"); got != "23.42.168.192.dnsxl.example.com" {
		t.Errorf("IPv4 query = %q", got)
	}
	if got := IPQuery(netip.MustParseAddr("2001:db8:1:2:3:4:567:89ab"), "ugly.example.com"); got != "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com" {
		t.Errorf("IPv6 query = %q", got)
	}
	if got := IPQuery(netip.MustParseAddr("::ffff:192.0.2.1"), "z.test"); got != "1.2.0.192.z.test" {
		t.Errorf("mapped query = %q", got)
	}
	if got := nibbleQuery(netip.MustParseAddr("::ffff:7f00:2"), "z.test"); !strings.HasPrefix(got, "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0") {
		t.Errorf("IPv6 test point = %q", got)
	}
	if got := DomainQuery("Spam.Example.", "dbl.test"); got != "spam.example.dbl.test" {
		t.Errorf("domain query = %q", got)
	}
}

func TestAnswerError(t *testing.T) {
	for a, isErr := range map[string]bool{
		"127.0.0.2": false, "127.0.0.11": false, "127.0.1.2": false, "127.0.15.3": false,
		"127.255.255.252": true, "127.255.255.254": true, "127.255.255.255": true,
		"127.0.1.255": true, "127.0.0.255": true, "127.0.0.1": true, "10.0.0.2": true, "192.0.2.1": true,
	} {
		if got := AnswerError(netip.MustParseAddr(a)) != ""; got != isErr {
			t.Errorf("AnswerError(%s) = %v, want %v", a, got, isErr)
		}
	}
}

// lists serves the test zones:
//
//	bl.test    a normal list: test points, 127.0.0.5 listed (127.0.0.2), 127.0.0.6 (127.0.0.3)
//	wl.test    an allowlist (dnswl-style answers): 127.0.0.7 listed
//	wild.test  lists everything
//	dead.test  never answers
//	quota.test answers 127.255.255.254 to everything (Spamhaus "public resolver")
//	sf.test    answers SERVFAIL
//	dbl.test   a domain list: test point, bad.example listed
func lists(t *testing.T) *dnstest.Server {
	s := dnstest.Start(t)
	s.Add(t,
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2",
		"2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.test. 300 IN A 127.0.0.2",
		"5.0.0.127.bl.test. 300 IN A 127.0.0.2",
		"6.0.0.127.bl.test. 300 IN A 127.0.0.3",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.e.e.f.bl.test. 300 IN A 127.0.0.2",
		"2.0.0.127.wl.test. 300 IN A 127.0.10.0",
		"7.0.0.127.wl.test. 300 IN A 127.0.15.2",
		"test.dbl.test. 300 IN A 127.0.1.2",
		"bad.example.dbl.test. 300 IN A 127.0.1.2",
	)
	s.Wildcard("wild.test", "127.0.0.2")
	s.Wildcard("quota.test", "127.255.255.254")
	s.Dead("dead.test", true)
	s.ServFail("sf.test", true)
	return s
}

func newChecker(t *testing.T, s *dnstest.Server, o Options) *Checker {
	t.Helper()
	// Generous timeouts: a loaded CI machine must not turn an answer
	// into a timeout. Only the dead lists ever wait for them.
	r, err := dnsutil.New([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Second
	}
	o.Registerer = prometheus.NewRegistry()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := New(r, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func statusOf(s Score, zone string) Status {
	for _, r := range s.Results {
		if r.Zone.Name == zone {
			return r.Status
		}
	}
	return -1
}

func TestScoreNoErrorIsAListing(t *testing.T) {
	t.Parallel()
	s := lists(t)
	c := newChecker(t, s, Options{
		Zones:       []string{"bl.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-5", "quota.test*2", "sf.test*2", "dead.test*2"},
		DomainZones: []string{"dbl.test=127.0.1.[2..99]*4"},
		// Only dead.test waits for this. 1.5 s was too short once under
		// a CI load of 14-17 on 2 cores: quota.test's immediate answer
		// came late and read as temp_error.
		Timeout: 3 * time.Second,
	})
	ctx := context.Background()

	got := c.Check(ctx, netip.MustParseAddr("127.0.0.5"), "bad.example", "helo.example")
	if got.Score != 3+4 {
		t.Errorf("score of listed client = %d, want 7 (bl.test*3 + dbl.test*4): %+v", got.Score, got.Results)
	}
	want := map[string]Status{"bl.test": Listed, "wl.test": Clean, "quota.test": ListError, "sf.test": TempError, "dead.test": TempError, "dbl.test": Listed}
	for z, st := range want {
		if g := statusOf(got, z); g != st {
			t.Errorf("%s: status %v, want %v", z, g, st)
		}
	}
	if len(got.Unanswered()) != 3 {
		t.Errorf("unanswered = %d, want 3 (quota.test, sf.test, dead.test)", len(got.Unanswered()))
	}

	// Listed in the allowlist only: negative score. 127.0.0.6 answers
	// 127.0.0.3, inside bl.test's filter.
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.7")); got.Score != -5 {
		t.Errorf("allowlisted client score = %d, want -5", got.Score)
	}
	// A clean client: nothing counts, whatever the broken lists said.
	clean := c.Check(ctx, netip.MustParseAddr("127.0.0.9"), "good.example")
	if clean.Score != 0 || len(clean.Listed()) != 0 {
		t.Errorf("clean client score = %d, listed in %v", clean.Score, clean.Listed())
	}
	// The over-quota answer did not switch quota.test off for everyone
	// (issue 13 item 6): it is asked again, and again it cannot say.
	if st := statusOf(clean, "quota.test"); st != ListError {
		t.Errorf("quota.test for the next client: %v, want list_error (asked again)", st)
	}
	for _, h := range c.HealthReport() {
		if h.Zone == "quota.test" && h.State != Healthy {
			t.Errorf("quota.test state %v after error codes, want unchanged: only a health check switches a list off", h.State)
		}
	}
	// A health check finds it refusing everyone: now it is skipped, and
	// the result says why.
	c.CheckHealth(ctx)
	for _, r := range c.Check(ctx, netip.MustParseAddr("127.0.0.9")).Results {
		if r.Zone.Name == "quota.test" && (r.Status != Skipped || !strings.Contains(r.Detail, "refusing") || !strings.Contains(r.Detail, "127.255.255.254")) {
			t.Errorf("quota.test after its health check: %v %q, want skipped naming the error code", r.Status, r.Detail)
		}
	}
}

func TestFilterSelectsAnswers(t *testing.T) {
	t.Parallel()
	s := lists(t)
	c := newChecker(t, s, Options{Zones: []string{"bl.test=127.0.0.2*1"}})
	ctx := context.Background()
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.6")); got.Score != 0 || statusOf(got, "bl.test") != Clean {
		t.Errorf("answer 127.0.0.3 outside filter 127.0.0.2 counted: %+v", got.Results)
	}
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); got.Score != 1 {
		t.Errorf("answer 127.0.0.2 inside filter: score %d", got.Score)
	}
	if got := c.Check(ctx, netip.MustParseAddr("feef::1")); got.Score != 1 {
		t.Errorf("IPv6 client listed by nibbles: score %d", got.Score)
	}
}

func TestHealthStatesAndRecovery(t *testing.T) {
	t.Parallel()
	s := lists(t)
	var logs bytes.Buffer
	c := newChecker(t, s, Options{
		Zones:       []string{"bl.test*3", "wild.test*3", "dead.test*3", "quota.test*3", "sf.test*3", "wl.test=127.0.[0..255].[1..3]*-5"},
		DomainZones: []string{"dbl.test"},
		Timeout:     3 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx := context.Background()
	want := map[string]State{"bl.test": Healthy, "wild.test": ListsEverything, "dead.test": Dead,
		"quota.test": Refusing, "sf.test": Dead, "wl.test": Healthy, "dbl.test": Healthy}
	for _, h := range c.CheckHealth(ctx) {
		if h.State != want[h.Zone] {
			t.Errorf("%s: state %v (%s), want %v", h.Zone, h.State, h.Detail, want[h.Zone])
		}
		if h.Zone == "bl.test" && !h.IPv6 {
			t.Errorf("bl.test lists ::FFFF:7F00:2 but IPv6 = false")
		}
		if h.Zone == "wl.test" && h.IPv6 {
			t.Errorf("wl.test does not list ::FFFF:7F00:2 but IPv6 = true")
		}
	}
	if !strings.Contains(logs.String(), "LISTS EVERYTHING") || !strings.Contains(logs.String(), "wild.test") {
		t.Errorf("no loud warning for the wildcard zone:\n%s", logs.String())
	}
	// Disabled zones are skipped: a clean client is not listed by the
	// wildcard list, and the dead lists do not make the check temporary.
	got := c.Check(ctx, netip.MustParseAddr("127.0.0.9"))
	if got.Score != 0 || len(got.Unanswered()) != 0 {
		t.Errorf("with disabled zones skipped: score %d, unanswered %d", got.Score, len(got.Unanswered()))
	}
	for _, z := range []string{"wild.test", "dead.test", "quota.test", "sf.test"} {
		if st := statusOf(got, z); st != Skipped {
			t.Errorf("%s: status %v, want skipped", z, st)
		}
	}
	var m dto.Metric
	if err := c.m.state.WithLabelValues("wild.test", "lists-everything").Write(&m); err != nil || m.GetGauge().GetValue() != 1 {
		v := m.GetGauge().GetValue()
		t.Errorf("metric zone_state{wild.test,lists-everything} = %v", v)
	}

	// The lists recover: re-enabled automatically at the next check.
	s.Wildcard("wild.test")
	s.Wildcard("quota.test")
	s.Dead("dead.test", false)
	s.ServFail("sf.test", false)
	for _, z := range []string{"wild.test", "dead.test", "quota.test", "sf.test"} {
		s.Add(t, "2.0.0.127."+z+". 300 IN A 127.0.0.2")
	}
	for _, h := range c.CheckHealth(ctx) {
		if h.State != Healthy {
			t.Errorf("%s after recovery: %v (%s)", h.Zone, h.State, h.Detail)
		}
	}
	if !strings.Contains(logs.String(), "re-enabled") {
		t.Errorf("no log line for re-enabled zones")
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func TestCacheTTLFloorAndCeiling(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Add(t, "10.0.0.127.bl.test. 5 IN A 127.0.0.2", "11.0.0.127.bl.test. 86400 IN A 127.0.0.2")
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newChecker(t, s, Options{Zones: []string{"bl.test"}, MinTTL: time.Minute, MaxTTL: time.Hour, Clock: clk.Now})
	ctx := context.Background()
	z := c.Zones()[0]
	ask := func(ip string) Result { return c.QueryIP(ctx, z, netip.MustParseAddr(ip)) }

	if r := ask("127.0.0.10"); r.Cached || r.Status != Listed {
		t.Fatalf("first query: %+v", r)
	}
	clk.Add(30 * time.Second) // past the record's 5s TTL, within the 1m floor
	if r := ask("127.0.0.10"); !r.Cached {
		t.Errorf("TTL 5s under a 1m floor: not cached after 30s")
	}
	clk.Add(31 * time.Second)
	if r := ask("127.0.0.10"); r.Cached {
		t.Errorf("cached past the 1m floor")
	}
	ask("127.0.0.11")
	clk.Add(59 * time.Minute)
	if r := ask("127.0.0.11"); !r.Cached {
		t.Errorf("TTL 1d: not cached after 59m")
	}
	clk.Add(2 * time.Minute)
	if r := ask("127.0.0.11"); r.Cached {
		t.Errorf("TTL 1d under a 1h ceiling: still cached after 61m")
	}
	// Negative answers are cached too (RFC 2308), temporary failures never.
	ask("127.0.0.99")
	if r := ask("127.0.0.99"); !r.Cached || r.Status != Clean {
		t.Errorf("NXDOMAIN not cached: %+v", r)
	}
	s.ServFail("bl.test", true)
	before := s.Queries.Load()
	ask("127.0.0.98")
	if r := ask("127.0.0.98"); r.Cached || r.Status != TempError {
		t.Errorf("SERVFAIL: %+v", r)
	}
	if s.Queries.Load()-before != 2 {
		t.Errorf("temporary failure was cached: %d queries for 2 asks", s.Queries.Load()-before)
	}
}

func TestListErrorLoggedOncePerZonePerHour(t *testing.T) {
	t.Parallel()
	s := lists(t)
	var logs bytes.Buffer
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newChecker(t, s, Options{Zones: []string{"quota.test"}, Clock: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	z := c.Zones()[0]
	ctx := context.Background()
	for i := range 5 {
		if r := c.QueryIP(ctx, z, netip.MustParseAddr("192.0.2.1")); r.Status != ListError {
			t.Fatalf("query %d: %v, want list_error", i, r.Status)
		}
	}
	if n := strings.Count(logs.String(), "dnsbl list error"); n != 1 {
		t.Errorf("list error logged %d times in an hour, want 1", n)
	}
	clk.Add(time.Hour)
	c.QueryIP(ctx, z, netip.MustParseAddr("192.0.2.2"))
	if n := strings.Count(logs.String(), "dnsbl list error"); n != 2 {
		t.Errorf("list error logged %d times after an hour, want 2", n)
	}
}

// TestIPShapedDomainsAreNotAsked: a HELO of "192.0.2.1" or a sender
// domain that is an address is no domain. Spamhaus DBL answers such
// queries with 127.0.1.255 ("IP queries prohibited"); asking would let any
// client mark the domain list refusing and switch it off for everyone.
func TestIPShapedDomainsAreNotAsked(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Add(t, "192.0.2.1.dbl.test. 300 IN A 127.0.1.255")
	c := newChecker(t, s, Options{DomainZones: []string{"dbl.test=127.0.1.[2..99]*4"}})
	ctx := context.Background()
	before := s.Queries.Load()
	got := c.Check(ctx, netip.Addr{}, "192.0.2.1", "[192.0.2.1]", "192.0.2.1.", "a..b.example", "x", strings.Repeat("a", 64)+".example")
	if len(got.Results) != 0 || s.Queries.Load() != before {
		t.Errorf("IP-shaped or invalid names were asked: %+v (%d queries)", got.Results, s.Queries.Load()-before)
	}
	for _, h := range c.HealthReport() {
		if h.State != Healthy || !strings.Contains(h.Detail, "not checked") {
			t.Errorf("%s: state %v (%s) after IP-shaped names, want untouched", h.Zone, h.State, h.Detail)
		}
	}
	// A real domain is still asked and scored.
	if got := c.Check(ctx, netip.Addr{}, "192.0.2.1", "Bad.Example."); got.Score != 4 || len(got.Results) != 1 {
		t.Errorf("bad.example: score %d, results %+v", got.Score, got.Results)
	}
	for d, ok := range map[string]bool{"bad.example": true, "mail.example.test.": true, "x_y.example": true,
		"192.0.2.1": false, "192.0.2.300": false, "2001:db8::1": false, "[192.0.2.1]": false, "localhost": false, "": false, "a b.example": false} {
		if DomainQueryable(d) != ok {
			t.Errorf("DomainQueryable(%q) = %v, want %v", d, !ok, ok)
		}
	}
}

// TestErrorCodesAreNotCached: after an over-quota spell the list
// recovers; the next query must go to the list, not replay the cached
// 127.255.255.254.
func TestErrorCodesAreNotCached(t *testing.T) {
	t.Parallel()
	s := lists(t)
	c := newChecker(t, s, Options{Zones: []string{"quota.test*2"}, MinTTL: time.Minute, MaxTTL: time.Hour})
	ctx := context.Background()
	z := c.Zones()[0]
	ip := netip.MustParseAddr("192.0.2.9")
	if r := c.QueryIP(ctx, z, ip); r.Status != ListError {
		t.Fatalf("over quota: %v, want list_error", r.Status)
	}
	s.Wildcard("quota.test") // quota back
	s.Add(t, "2.0.0.127.quota.test. 300 IN A 127.0.0.2")
	for _, h := range c.CheckHealth(ctx) {
		if h.State != Healthy {
			t.Fatalf("%s after recovery: %v %s", h.Zone, h.State, h.Detail)
		}
	}
	if r := c.QueryIP(ctx, z, ip); r.Status != Clean || r.Cached {
		t.Errorf("after recovery: %v (cached %v, %s), want a fresh clean answer", r.Status, r.Cached, r.Detail)
	}
}

// barrier is a Querier that holds every query until n queries are in
// flight at once, then lets them all through to the real resolver.
type barrier struct {
	q       Querier
	n       int
	mu      sync.Mutex
	waiting int
	open    chan struct{}
}

func (b *barrier) LookupA4(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	b.mu.Lock()
	b.waiting++
	if b.waiting == b.n {
		close(b.open)
	}
	b.mu.Unlock()
	select {
	case <-b.open:
	case <-ctx.Done():
		return nil, 0, &dnsutil.Error{Kind: dnsutil.Timeout, Name: name, Type: "A", Err: ctx.Err()}
	}
	return b.q.LookupA4(ctx, name)
}

// TestCheckAsksAllZonesAtOnce: every zone and name of one Check is asked
// in parallel. The barrier opens only when all of them are in flight
// together; asked one after another they would all hit the deadline.
func TestCheckAsksAllZonesAtOnce(t *testing.T) {
	t.Parallel()
	s := lists(t)
	r, err := dnsutil.New([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b := &barrier{q: r, n: 4, open: make(chan struct{})} // 2 IP zones + 1 domain zone × 2 names
	c, err := New(b, Options{Zones: []string{"bl.test*3", "wl.test=127.0.[0..255].[1..3]*-5"},
		DomainZones: []string{"dbl.test*4"}, Timeout: 3 * time.Second, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.5"), "bad.example", "helo.example")
	if got.Score != 7 || len(got.Unanswered()) != 0 {
		t.Errorf("score %d, unanswered %+v: the zones were not asked together", got.Score, got.Unanswered())
	}
}
