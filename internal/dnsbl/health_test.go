package dnsbl

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/relayguard/relayguard/internal/dnsutil"
)

// syncBuf is a log buffer safe for the health checks' goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// running starts RunHealth for the test's duration.
func running(t *testing.T, c *Checker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.RunHealth(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// resultOf is zone's result in a score.
func resultOf(s Score, zone string) Result {
	for _, r := range s.Results {
		if r.Zone.Name == zone {
			return r
		}
	}
	return Result{Status: -1}
}

// notAsked reports whether a result was given without a query (and so
// without waiting): a switched-off zone, DNS unreachable, a failing zone.
func notAsked(r Result) bool {
	return r.Status == Skipped || strings.Contains(r.Detail, "(not asked)")
}

func stateOf(c *Checker, zone string) Health {
	for _, h := range c.HealthReport() {
		if h.Zone == zone {
			return h
		}
	}
	return Health{}
}

// eventually waits up to d for cond.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after %v: %s", d, what)
}

func gauge(t *testing.T, g interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// TestOneErrorCodeDoesNotSwitchOff: an error code for one address is an
// error of that answer; the zone's health check decides, and finds the
// list healthy (issue 13 item 6). A list that answers error codes to
// everyone is found refusing by the same check.
func TestOneErrorCodeDoesNotSwitchOff(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Add(t, "1.2.0.192.bl.test. 300 IN A 127.255.255.254",
		"2.0.0.127.q2.test. 300 IN A 127.0.0.2", "5.0.0.127.q2.test. 300 IN A 127.0.0.2")
	c := newChecker(t, s, Options{Zones: []string{"bl.test", "q2.test"}, HealthInterval: time.Hour, Timeout: 2 * time.Second})
	running(t, c)
	ctx := context.Background()
	bl := c.Zones()[0]
	if r := c.QueryIP(ctx, bl, netip.MustParseAddr("127.0.0.5")); r.Status != Listed {
		t.Fatalf("listed client: %v %s", r.Status, r.Detail)
	}
	before := stateOf(c, "bl.test").Checked
	if r := c.QueryIP(ctx, bl, netip.MustParseAddr("192.0.2.1")); r.Status != ListError || !r.Status.Unanswered() {
		t.Fatalf("error code answer: %v, want list_error (unanswered)", r.Status)
	}
	eventually(t, 5*time.Second, "no health check after the error code", func() bool { return stateOf(c, "bl.test").Checked.After(before) })
	if h := stateOf(c, "bl.test"); h.State != Healthy {
		t.Fatalf("bl.test after one error code: %v (%s), want healthy", h.State, h.Detail)
	}
	if r := c.QueryIP(ctx, bl, netip.MustParseAddr("127.0.0.6")); r.Status != Listed {
		t.Errorf("another client after the error code: %v %s, want listed (zone still used)", r.Status, r.Detail)
	}

	// Now q2.test refuses everyone (over quota).
	q2 := c.Zones()[1]
	s.Wildcard("q2.test", "127.255.255.255")
	s.Remove("2.0.0.127.q2.test")
	s.Remove("5.0.0.127.q2.test")
	if r := c.QueryIP(ctx, q2, netip.MustParseAddr("127.0.0.5")); r.Status != ListError {
		t.Fatalf("over quota: %v", r.Status)
	}
	eventually(t, 5*time.Second, "q2.test not found refusing", func() bool { return stateOf(c, "q2.test").State == Refusing })
	if r := c.QueryIP(ctx, q2, netip.MustParseAddr("127.0.0.9")); r.Status != Skipped {
		t.Errorf("refusing zone: %v, want skipped", r.Status)
	}
}

// TestListsEverythingNeedsASecondProbe: one probe that no list may list
// being listed is not enough; a second, different probe must be listed too
// (issue 13 item 7).
func TestListsEverythingNeedsASecondProbe(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Add(t, "2.0.0.127.lo.test. 300 IN A 127.0.0.2", "1.0.0.127.lo.test. 300 IN A 127.0.0.2",
		"2.0.0.127.doc.test. 300 IN A 127.0.0.2")
	s.Wildcard("2.0.192.doc.test", "127.0.0.2") // lists all of 192.0.2.0/24, nothing else
	logs := &syncBuf{}
	c := newChecker(t, s, Options{Zones: []string{"lo.test", "doc.test", "wild.test"}, HealthInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for range 3 { // random probes: several rounds
		for _, h := range c.CheckHealth(context.Background()) {
			want := Healthy
			if h.Zone == "wild.test" {
				want = ListsEverything
			}
			if h.State != want {
				t.Errorf("%s: %v (%s), want %v", h.Zone, h.State, h.Detail, want)
			}
		}
	}
	if !strings.Contains(logs.String(), "not switched off") {
		t.Errorf("the single listed probe is not logged:\n%s", logs)
	}
}

// TestZonesUsedOnlyOnceChecked: right after start, a list that lists
// everything must not reject anyone: the first check waits for its
// health check (issue 13 item 3).
func TestZonesUsedOnlyOnceChecked(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Delay("wild.test", 300*time.Millisecond) // the first check takes a while
	for i := range 4 {
		c := newChecker(t, s, Options{Zones: []string{"wild.test*3", "bl.test"}, HealthInterval: time.Hour})
		running(t, c)
		got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.9"))
		if got.Score != 0 || statusOf(got, "wild.test") != Skipped {
			t.Fatalf("start %d: clean client scored %d, wild.test %v: a zone was used before its health check", i, got.Score, statusOf(got, "wild.test"))
		}
		if got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.5")); got.Score != 1 {
			t.Errorf("start %d: listed client scored %d, want 1", i, got.Score)
		}
	}
}

// TestFailingZoneTripsAtOnce: a list that stops answering mid-run is
// taken out after three failed queries — later requests do not wait for
// it — and its health check then finds it dead while the others answer;
// when it returns it is re-enabled (issue 13 item 4).
func TestFailingZoneTripsAtOnce(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Add(t, "2.0.0.127.slow.test. 300 IN A 127.0.0.2")
	logs := &syncBuf{}
	c := newChecker(t, s, Options{Zones: []string{"bl.test", "slow.test"}, HealthInterval: time.Hour, Timeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	s.Dead("slow.test", true)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
			if st := statusOf(got, "slow.test"); st != TempError {
				t.Errorf("dead list while it times out: %v, want temp_error", st)
			}
		})
	}
	wg.Wait()
	if h := stateOf(c, "slow.test"); h.State != Failing && h.State != Dead {
		t.Fatalf("slow.test after 4 timeouts: %v (%s), want failing", h.State, h.Detail)
	}
	got := c.Check(ctx, netip.MustParseAddr("198.51.100.99"))
	if r := resultOf(got, "slow.test"); !notAsked(r) || r.Status == Clean || r.Status == Listed {
		t.Errorf("slow.test after the trip: %v %q, want not asked (no wait for the dead list)", r.Status, r.Detail)
	}
	eventually(t, 5*time.Second, "slow.test not found dead", func() bool { return stateOf(c, "slow.test").State == Dead })
	if up, _ := c.DNSReachable(); !up {
		t.Errorf("one dead list was taken for a DNS outage")
	}
	if h := stateOf(c, "bl.test"); h.State != Healthy {
		t.Errorf("bl.test: %v", h.State)
	}
	s.Dead("slow.test", false)
	eventually(t, 10*time.Second, "slow.test not re-enabled", func() bool { return stateOf(c, "slow.test").State == Healthy })
	if n := strings.Count(logs.String(), "dnsbl zone failing"); n != 1 {
		t.Errorf("%d 'failing' log lines, want 1 (one per change)", n)
	}
}

// TestResolverOutageIsNotADeadList: when nothing answers, no list is
// switched off; cached answers keep being used, everything else is a
// temporary failure given at once, and the metric and the log say that
// DNS is unreachable (issue 13 item 1).
func TestResolverOutageIsNotADeadList(t *testing.T) {
	t.Parallel()
	s := lists(t)
	logs := &syncBuf{}
	c := newChecker(t, s, Options{Zones: []string{"bl.test", "wl.test=127.0.[0..255].[1..3]*-5"}, DomainZones: []string{"dbl.test"},
		HealthInterval: time.Hour, Timeout: time.Second, MinTTL: time.Minute, MaxTTL: time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	running(t, c)
	ctx := context.Background()
	listed := netip.MustParseAddr("127.0.0.5")
	if got := c.Check(ctx, listed); got.Score != 1 {
		t.Fatalf("before the outage: score %d", got.Score)
	}
	s.Outage(true)
	for i := range 3 {
		got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "sender.example")
		if len(got.Unanswered()) != len(got.Results) || got.Score != 0 {
			t.Fatalf("during the outage: %+v, want every list unanswered", got.Results)
		}
	}
	eventually(t, 5*time.Second, "DNS not found unreachable", func() bool { up, _ := c.DNSReachable(); return !up })
	if v := gauge(t, c.m.dnsUp); v != 0 {
		t.Errorf("relayguard_dnsbl_dns_reachable = %v during the outage", v)
	}
	// A cached listing still counts; an uncached client gets a
	// temporary failure without waiting.
	if got := c.Check(ctx, listed); got.Score != 1 || statusOf(got, "bl.test") != Listed {
		t.Errorf("cached listing during the outage: %+v", got.Results)
	}
	got := c.Check(ctx, netip.MustParseAddr("198.51.100.77"))
	if r := resultOf(got, "bl.test"); r.Status != TempError || !notAsked(r) || !strings.Contains(r.Detail, "DNS unreachable") {
		t.Errorf("uncached client during the outage: %+v, want a temporary failure without asking", got.Results)
	}
	time.Sleep(2500 * time.Millisecond) // several health rounds during the outage
	for _, h := range c.HealthReport() {
		if h.State != Healthy {
			t.Errorf("%s switched to %v (%s) by the outage", h.Zone, h.State, h.Detail)
		}
	}
	s.Outage(false)
	eventually(t, 15*time.Second, "DNS not found reachable again", func() bool { up, _ := c.DNSReachable(); return up })
	if got := c.Check(ctx, netip.MustParseAddr("127.0.0.6")); got.Score != 1 {
		t.Errorf("after the outage: %+v", got.Results)
	}
	l := logs.String()
	if strings.Count(l, "DNS unreachable") != 1 || strings.Count(l, "DNS reachable again") != 1 {
		t.Errorf("want one log line for each change:\n%s", l)
	}
	if strings.Contains(l, "zone disabled") || strings.Contains(l, "zone failing") {
		t.Errorf("a zone was taken out by the outage:\n%s", l)
	}
}

// TestStartDuringOutage: a server started while DNS is down does not
// fail open once its first health check is over (issue 13 item 1).
func TestStartDuringOutage(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Outage(true)
	c := newChecker(t, s, Options{Zones: []string{"bl.test"}, HealthInterval: time.Hour, Timeout: time.Second})
	running(t, c)
	for i := range 3 {
		got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.5"))
		if st := statusOf(got, "bl.test"); st != TempError {
			t.Fatalf("check %d during a DNS outage at start: %v, want temp_error", i, st)
		}
	}
	if up, _ := c.DNSReachable(); up {
		t.Errorf("DNS reachable after a first round where nothing answered")
	}
	if h := stateOf(c, "bl.test"); h.State != Unknown {
		t.Errorf("bl.test: %v, want unknown (not judged)", h.State)
	}
	s.Outage(false)
	eventually(t, 15*time.Second, "bl.test not checked after the outage", func() bool { return stateOf(c, "bl.test").State == Healthy })
	if got := c.Check(context.Background(), netip.MustParseAddr("127.0.0.5")); got.Score != 1 {
		t.Errorf("after the outage: %+v", got.Results)
	}
}

// TestStalledZoneTripsBeforeTimeout: with a 6 s timeout, requests caught
// by a list that just died wait about a quarter of it (three unanswered
// retransmissions), not all of it: the zone is failing as soon as three
// of its queries are that late while the other lists answer.
func TestStalledZoneTripsBeforeTimeout(t *testing.T) {
	t.Parallel()
	s := lists(t)
	s.Add(t, "2.0.0.127.gone.test. 300 IN A 127.0.0.2")
	c := newChecker(t, s, Options{Zones: []string{"bl.test", "gone.test"}, HealthInterval: time.Hour, Timeout: 6 * time.Second})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	s.Dead("gone.test", true)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			got := c.Check(ctx, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
			if statusOf(got, "gone.test") != TempError || statusOf(got, "bl.test") != Clean {
				t.Errorf("caught by the dying list: %+v", got.Results)
			}
		})
	}
	wg.Wait()
	if el := time.Since(t0); el > 4*time.Second {
		t.Errorf("requests caught by a dying list waited %v of a 6 s timeout", el)
	}
	if h := stateOf(c, "gone.test"); h.State != Failing && h.State != Dead {
		t.Errorf("gone.test: %v (%s), want failing", h.State, h.Detail)
	}
	if up, _ := c.DNSReachable(); !up {
		t.Error("DNS taken for unreachable")
	}
}

// TestSlowAnswersAreNotADeadList: under load a resolver answers some
// names late and others at once. Lists whose late answers come with
// prompt ones are not failing: only a list that answers nothing is (the
// benchmark's overload once took every zone out this way).
func TestSlowAnswersAreNotADeadList(t *testing.T) {
	t.Parallel()
	s := lists(t)
	zones := []string{"bl.test", "wl.test=127.0.[0..255].[1..3]*-5"}
	for _, z := range []string{"bl.test", "wl.test"} {
		s.Delay("1.198."+z, 2*time.Second) // clients 198.1.x.y answer late
	}
	logs := &syncBuf{}
	c := newChecker(t, s, Options{Zones: zones, HealthInterval: time.Hour, Timeout: 6 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	running(t, c)
	ctx := context.Background()
	c.waitFirst(ctx)
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			slow := netip.AddrFrom4([4]byte{198, 1, 0, byte(i)})
			c.Check(ctx, slow)
		})
		wg.Go(func() {
			time.Sleep(500 * time.Millisecond) // prompt answers before the slow ones count as late
			c.Check(ctx, netip.AddrFrom4([4]byte{198, 2, 0, byte(i)}))
		})
	}
	wg.Wait()
	for _, h := range c.HealthReport() {
		if h.State != Healthy {
			t.Errorf("%s: %v (%s): late answers among prompt ones taken for a dead list", h.Zone, h.State, h.Detail)
		}
	}
	if strings.Contains(logs.String(), "zone failing") {
		t.Errorf("log:\n%s", logs)
	}
}

// TestManyZonesFailingIsNotOneDeadList: when most zones fail at once
// while some answers still come (a resolver overloaded), no zone is taken
// out; each is checked instead. One zone failing alone is taken out.
func TestManyZonesFailingIsNotOneDeadList(t *testing.T) {
	t.Parallel()
	s := lists(t)
	c := newChecker(t, s, Options{Zones: []string{"bl.test", "wl.test", "b2.test", "b3.test"}, Timeout: 3 * time.Second})
	zs := c.Zones()
	timeout := &dnsutil.Error{Kind: dnsutil.Timeout, Name: "x", Type: "A"}
	ctx := context.Background()
	fail := func(z *Zone, n int) {
		st := c.zoneState(z.Name)
		for range n {
			c.noteFailure(ctx, st, time.Now().Add(-2*time.Second), timeout)
		}
	}
	c.noteAnswer(c.zoneState(zs[3].Name), time.Now()) // others answer
	fail(zs[0], 1)
	fail(zs[1], 1)
	fail(zs[2], tripAfter) // three of four zones in trouble
	if h := stateOf(c, zs[2].Name); h.State != Healthy {
		t.Errorf("%s tripped while most zones fail: %v", zs[2].Name, h.State)
	}
	if st := c.zoneState(zs[2].Name); st.due.IsZero() {
		t.Errorf("%s not scheduled for a check", zs[2].Name)
	}
	// The others recover; the same zone failing alone is taken out.
	c.noteAnswer(c.zoneState(zs[0].Name), time.Now())
	c.noteAnswer(c.zoneState(zs[1].Name), time.Now())
	st2 := c.zoneState(zs[2].Name)
	c.mu.Lock()
	st2.fails = 0
	c.mu.Unlock()
	fail(zs[2], tripAfter)
	if h := stateOf(c, zs[2].Name); h.State != Failing {
		t.Errorf("%s failing alone: %v, want failing", zs[2].Name, h.State)
	}
}
