package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
	"github.com/relayguard/relayguard/internal/dnsutil"
)

// Querier asks for the A records of a name. *dnsutil.Resolver implements
// it; errors must be *dnsutil.Error so that NXDOMAIN is told apart from a
// failure.
type Querier interface {
	LookupA4(ctx context.Context, name string) ([]netip.Addr, time.Duration, error)
}

// Status is the outcome of one query to one zone.
type Status int

// Statuses. Only Listed ever counts toward a score.
const (
	Clean     Status = iota // NXDOMAIN / no data, or answers the filter does not select
	Listed                  // at least one answer selected by the filter
	ListError               // the list answered with an error code: not a listing
	TempError               // timeout, SERVFAIL, REFUSED, DNS unreachable: unknown, never clean
	Skipped                 // zone switched off (dead, lists everything, refusing)
)

func (s Status) String() string {
	return [...]string{"clean", "listed", "list_error", "temp_error", "skipped"}[s]
}

// Unanswered reports whether a result says nothing about the target: the
// list could not be asked (TempError) or answered with an error code
// (ListError). A decision that depends on such a list is a temporary
// failure (4xx), in the policy checks and in `dnsbl check` alike. A
// Skipped zone is switched off: it has no say at all.
func (s Status) Unanswered() bool { return s == TempError || s == ListError }

// Result is one zone's answer about one name.
type Result struct {
	Zone    *Zone
	Query   string
	Status  Status
	Answers []netip.Addr // all A records seen
	Detail  string       // error text, for ListError and TempError; why, for Skipped
	Cached  bool
}

// Options configure a Checker.
type Options struct {
	Zones          []string // postscreen syntax, client-IP lists
	DomainZones    []string // postscreen syntax, domain lists
	Timeout        time.Duration
	MinTTL, MaxTTL time.Duration
	// CacheSize is the number of client addresses whose answers are
	// cached (and as many domain names); each entry holds every zone's
	// answer. 0 means DefaultCacheSize.
	CacheSize int
	// HealthInterval is how often RunHealth checks every zone. With 0,
	// zones are used without a first check and only a zone that fails at
	// run time is checked (until it answers again).
	HealthInterval time.Duration
	Logger         *slog.Logger
	Clock          func() time.Time
	Registerer     prometheus.Registerer // nil: metrics not exported
}

// DefaultCacheSize holds a day of a busy MX: entries live at most
// cache_max_ttl (1 h by default), so the cache needs the distinct clients
// of its busiest hour; 500,000 is a server taking some 10 million
// connections a day (68 MiB with 10 zones, BenchmarkCacheMemory:
// docs/benchmarks/dnsbl.md).
const DefaultCacheSize = 500000

// Checker queries lists with a shared cache and keeps each zone's health.
type Checker struct {
	q      Querier
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	zones  []*Zone
	dzones []*Zone
	// watched zones are used by single rules (reject_rbl_client ZONE):
	// health-checked but not part of the score.
	wzones, wdzones []*Zone

	// zst and dzst are the health records of zones and dzones, in order
	// (records are made in New and never replaced).
	zst, dzst []*zoneState

	ipCache, domCache *cache
	cacheFull         atomic.Bool

	mu    sync.Mutex
	state map[string]*zoneState
	dns   dnsState
	kick  chan struct{}

	m *metrics
}

// New parses the zones and returns a Checker. No query is sent until the
// first check.
func New(q Querier, o Options) (*Checker, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.MaxTTL < o.MinTTL {
		o.MaxTTL = o.MinTTL
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	c := &Checker{q: q, opts: o, log: o.Logger, now: o.Clock, state: map[string]*zoneState{},
		kick: make(chan struct{}, 1)}
	for _, s := range o.Zones {
		z, err := zonespec.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("dnsbl zone %q: %w", s, err)
		}
		c.zones = append(c.zones, z)
	}
	for _, s := range o.DomainZones {
		z, err := zonespec.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("dnsbl domain zone %q: %w", s, err)
		}
		c.dzones = append(c.dzones, z)
	}
	c.m = newMetrics(o.Registerer)
	c.addZones(c.zones, false)
	c.addZones(c.dzones, true)
	for _, z := range c.zones {
		c.zst = append(c.zst, c.state[z.Name])
	}
	for _, z := range c.dzones {
		c.dzst = append(c.dzst, c.state[z.Name])
	}
	return c, nil
}

// addZones gives each new zone name a health record and a cache slot.
// c.mu must be held or c not yet shared.
func (c *Checker) addZones(zs []*Zone, domain bool) (added []*Zone) {
	for _, z := range zs {
		if _, ok := c.state[z.Name]; ok {
			continue
		}
		n := 0
		for _, st := range c.state {
			if st.domain == domain {
				n++
			}
		}
		st := &zoneState{z: z, domain: domain, slot: n, firstDone: make(chan struct{})}
		st.h = Health{Zone: z.Name, State: Unknown}
		if c.opts.HealthInterval <= 0 {
			st.h.State, st.h.Detail = Healthy, "not checked: health checks are off"
			st.firstClosed = true
			close(st.firstDone)
		}
		// The statuses a cached answer can have: counted without a
		// label lookup per zone and request.
		for i := range st.counted {
			st.counted[i] = c.m.queries.WithLabelValues(z.Name, Status(i).String())
		}
		c.state[z.Name] = st
		c.m.setState(z.Name, st.h.State)
		added = append(added, z)
	}
	return added
}

// Watch adds zones used by single rules to the health checks, so that a
// dead or lists-everything zone is skipped there too. Call before the
// first query and before RunHealth.
func (c *Checker) Watch(ipZones, domainZones []*Zone) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wzones = append(c.wzones, c.addZones(ipZones, false)...)
	c.wdzones = append(c.wdzones, c.addZones(domainZones, true)...)
}

// Zones returns the configured client-IP zones.
func (c *Checker) Zones() []*Zone { return c.zones }

// DomainZones returns the configured domain zones.
func (c *Checker) DomainZones() []*Zone { return c.dzones }

// caches are created on first use: Watch may still add zones before.
func (c *Checker) caches() (ip, dom *cache) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cachesLocked()
}

// cachesLocked is caches with c.mu held.
func (c *Checker) cachesLocked() (ip, dom *cache) {
	if c.ipCache == nil {
		nip, ndom := 0, 0
		for _, st := range c.state {
			if st.domain {
				ndom++
			} else {
				nip++
			}
		}
		base := c.now().Add(-time.Hour)
		sets := newAnswerSets()
		c.ipCache = newCache(nip, c.opts.CacheSize, base, sets)
		c.domCache = newCache(ndom, c.opts.CacheSize, base, sets)
		for _, k := range []*cache{c.ipCache, c.domCache} {
			k.evicted, k.added = c.evicted, c.m.entries.Inc
		}
	}
	return c.ipCache, c.domCache
}

// evicted counts an eviction and logs, once, that the cache is full.
func (c *Checker) evicted() {
	c.m.evictions.Inc()
	if !c.cacheFull.Swap(true) {
		c.log.Warn("dnsbl cache full: the least recently seen clients' answers are dropped to make room; raise dnsbl.cache_size if this happens within cache_max_ttl",
			"cache_size", c.opts.CacheSize)
	}
}

// QueryIP asks zone about a client address, through the cache. It never
// reads a failure as a listing.
func (c *Checker) QueryIP(ctx context.Context, z *Zone, ip netip.Addr) Result {
	ipc, _ := c.caches()
	return c.query(ctx, z, IPQuery(ip, z.Name), ipc, ipKey(ip))
}

// QueryDomain asks zone about a domain (a sender domain, a HELO or client
// name), through the cache. Callers check DomainQueryable first.
func (c *Checker) QueryDomain(ctx context.Context, z *Zone, domain string) Result {
	_, dc := c.caches()
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	return c.query(ctx, z, DomainQuery(d, z.Name), dc, dc.domainKey(d))
}

// cachedResult is the result of z's cached answers for qname, counted as
// a cache hit (the one place for query's and Check's fast path); st is
// z's health record, which holds the zone's counters, resolved once.
func (c *Checker) cachedResult(z *Zone, st *zoneState, qname string, answers []netip.Addr) Result {
	r := Result{Zone: z, Query: qname, Cached: true, Answers: answers}
	r.Status, r.Detail = Classify(z, answers)
	c.m.cacheHit.Inc()
	if int(r.Status) < len(st.counted) {
		st.counted[r.Status].Inc()
	} else {
		c.m.queries.WithLabelValues(z.Name, r.Status.String()).Inc()
	}
	return r
}

func (c *Checker) query(ctx context.Context, z *Zone, qname string, k *cache, key cacheKey) Result {
	r := Result{Zone: z, Query: qname}
	st := c.zoneState(z.Name)
	if st == nil {
		r.Status, r.Detail = Skipped, "zone not configured"
		return r
	}
	// A zone is used only once it is known healthy: wait (bounded by
	// the request's deadline and the timeout) for its first health check.
	c.waitChecked(ctx, st.firstDone)
	checked := false
	select {
	case <-st.firstDone:
		checked = true
	default:
	}
	c.mu.Lock()
	h, down, downWhy := st.h, c.dns.down, c.dns.detail
	c.mu.Unlock()
	if h.State.Disabled() {
		r.Status, r.Detail = Skipped, "zone disabled ("+h.State.String()+"): "+h.Detail
		c.m.queries.WithLabelValues(z.Name, r.Status.String()).Inc()
		return r
	}
	if answers, ok := k.get(key, st.slot, c.now()); ok {
		return c.cachedResult(z, st, qname, answers)
	}
	c.m.cache.WithLabelValues("miss").Inc()
	// Known failures answer at once instead of stalling every request.
	switch {
	case down:
		r.Status, r.Detail = TempError, "DNS unreachable (not asked): "+downWhy
		c.m.queries.WithLabelValues(z.Name, "dns_unreachable").Inc()
		return r
	case h.State == Failing:
		r.Status, r.Detail = TempError, "list failing, being re-checked (not asked): "+h.Detail
		c.m.queries.WithLabelValues(z.Name, "failing").Inc()
		return r
	case h.State == Unknown && !checked:
		// Its first check is still under way (a server started during a
		// DNS outage must not fail open): unknown, never clean.
		r.Status, r.Detail = TempError, "first health check under way (not asked)"
		c.m.queries.WithLabelValues(z.Name, "not_checked").Inc()
		return r
	case h.State == Unknown:
		r.Status, r.Detail = Skipped, "zone not judged by its first check"
		c.m.queries.WithLabelValues(z.Name, r.Status.String()).Inc()
		return r
	}
	start := time.Now()
	qctx, done := c.inflight(ctx, st, start)
	r, ttl, err := c.resolve(qctx, z, qname)
	ended := done()
	switch {
	case err != nil && ended != "":
		r.Detail = ended + ", stopped waiting: " + r.Detail
	case err != nil:
		c.noteFailure(ctx, st, start, err)
	default:
		c.noteAnswer(st, start)
	}
	if r.Status == Listed && !c.spotCheck(ctx, st) {
		r.Status, r.Detail = TempError, "list failing: it also listed a name no list may contain (not counted)"
		c.m.queries.WithLabelValues(z.Name, "failing").Inc()
		return r
	}
	switch {
	case r.Status == ListError:
		// An error code says nothing about the name asked and is not
		// cached; whether the list refuses everyone is for a health
		// check to say (see Classify).
		c.confirmListError(st, qname, r.Detail)
	case err == nil && ttl > 0:
		k.put(key, st.slot, r.Answers, c.now().Add(ttl))
	}
	c.m.queries.WithLabelValues(z.Name, r.Status.String()).Inc()
	return r
}

// resolve asks the resolver about qname now, without cache or breaker,
// and classifies the answer. err is the failure of a TempError; ttl is the
// answer's cache lifetime within [MinTTL, MaxTTL].
func (c *Checker) resolve(ctx context.Context, z *Zone, qname string) (r Result, ttl time.Duration, err error) {
	r = Result{Zone: z, Query: qname}
	answers, ttl, err := c.q.LookupA4(ctx, qname)
	if err != nil {
		var de *dnsutil.Error
		if !errors.As(err, &de) || !de.NotFound() {
			r.Status, r.Detail = TempError, err.Error()
			return r, 0, err
		}
		answers, ttl = nil, de.TTL
	}
	r.Answers = answers
	r.Status, r.Detail = Classify(z, answers)
	return r, max(c.opts.MinTTL, min(ttl, c.opts.MaxTTL)), nil
}

// Score is the outcome of checking one client against all zones.
type Score struct {
	Score   int
	Results []Result // one per zone and name asked, in zone order
}

// Listed returns the results that counted.
func (s Score) Listed() []Result { return s.filter(func(st Status) bool { return st == Listed }) }

// Unanswered returns the results whose lists could not say (Status.Unanswered).
func (s Score) Unanswered() []Result { return s.filter(Status.Unanswered) }

func (s Score) filter(keep func(Status) bool) []Result {
	var out []Result
	for _, r := range s.Results {
		if keep(r.Status) {
			out = append(out, r)
		}
	}
	return out
}

// String lists the listed zones with their weights, sorted.
func (s Score) String() string {
	var buf [8]string
	parts := buf[:0]
	for _, r := range s.Results {
		if r.Status == Listed {
			parts = append(parts, r.Zone.Name+"*"+strconv.Itoa(r.Zone.Weight))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// Check asks every client-IP zone about ip and every domain zone about
// each of domains (sender domain, HELO name), all in parallel with one
// deadline, and sums the weights as postscreen does. A domain zone counts
// once even if several names are listed in it. A zone not checked yet is
// waited for within the same deadline: a healthy zone's first check takes
// milliseconds, and a dead one's first check is not waited out.
//
// Answers in the cache are taken in one pass, under one lock of the
// checker, and their results leave Query empty (no name was asked; IPQuery
// and DomainQuery make it); only the misses are asked, each on its own
// goroutine. With every answer cached, a check allocates only its
// Results. (A goroutine per zone and the checker's lock taken three times
// per zone cost more than the answers; so did a query name per zone.)
func (c *Checker) Check(ctx context.Context, ip netip.Addr, domains ...string) Score {
	return c.CheckInto(ctx, nil, ip, domains...)
}

// CheckInto is Check with the results in res's array when it has room (a
// caller that checks often reuses it: res = s.Results[:0]); the results
// are valid until then.
func (c *Checker) CheckInto(ctx context.Context, res []Result, ip netip.Addr, domains ...string) Score {
	var jobsBuf [16]checkJob
	jobs := jobsBuf[:0]
	if ip.IsValid() {
		for i, z := range c.zones {
			jobs = append(jobs, checkJob{z: z, st: c.zst[i]})
		}
	}
	if len(c.dzones) > 0 {
		var seen []string
		for _, d := range domains {
			d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
			if slices.Contains(seen, d) || !DomainQueryable(d) {
				continue
			}
			seen = append(seen, d)
			for i, z := range c.dzones {
				jobs = append(jobs, checkJob{z: z, st: c.dzst[i], domain: d})
			}
		}
	}
	res = slices.Grow(res[:0], len(jobs))[:len(jobs)]
	clear(res)
	var usableBuf [16]bool
	usable := usableBuf[:0]
	c.mu.Lock()
	ipc, dc := c.cachesLocked()
	for _, j := range jobs {
		usable = append(usable, j.st != nil && j.st.firstClosed && !j.st.h.State.Disabled())
	}
	c.mu.Unlock()
	now := c.now()
	ipk := ipKey(ip)
	var missBuf [16]int
	misses := missBuf[:0]
	for i, j := range jobs {
		if usable[i] {
			var answers []netip.Addr
			var ok bool
			if j.domain == "" {
				answers, ok = ipc.get(ipk, j.st.slot, now)
			} else {
				answers, ok = dc.get(dc.domainKey(j.domain), j.st.slot, now)
			}
			if ok {
				res[i] = c.cachedResult(j.z, j.st, "", answers)
				continue
			}
		}
		misses = append(misses, i)
	}
	if len(misses) > 0 {
		c.askMisses(ctx, ip, jobs, misses, res)
	}
	s := Score{Results: res}
	for i, r := range res {
		if r.Status == Listed && !slices.ContainsFunc(res[:i], func(p Result) bool { return p.Status == Listed && p.Zone == r.Zone }) {
			s.Score += r.Zone.Weight
		}
	}
	return s
}

// checkJob is one zone to ask in Check: about the client address, or
// about domain in a domain zone.
type checkJob struct {
	z      *Zone
	st     *zoneState
	domain string
}

// askMisses asks the lists whose answers Check did not find in the cache,
// in parallel, under one deadline.
func (c *Checker) askMisses(ctx context.Context, ip netip.Addr, jobs []checkJob, misses []int, res []Result) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, i := range misses {
		j := jobs[i]
		wg.Go(func() {
			if j.domain == "" {
				res[i] = c.QueryIP(ctx, j.z, ip)
			} else {
				res[i] = c.QueryDomain(ctx, j.z, j.domain)
			}
		})
	}
	wg.Wait()
}

// waitFirst waits until every zone has had its first health check, or
// for at most the timeout (or ctx). Tests use it.
func (c *Checker) waitFirst(ctx context.Context) {
	c.mu.Lock()
	var chans []chan struct{}
	for _, st := range c.state {
		chans = append(chans, st.firstDone)
	}
	c.mu.Unlock()
	c.waitChecked(ctx, chans...)
}

// waitChecked waits until every channel is closed, ctx ends or the
// timeout passes (a first health check takes no longer).
func (c *Checker) waitChecked(ctx context.Context, chans ...chan struct{}) {
	var t *time.Timer
	for _, ch := range chans {
		select {
		case <-ch:
			continue
		default:
		}
		if t == nil {
			t = time.NewTimer(c.opts.Timeout)
			defer t.Stop()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-t.C:
			return
		}
	}
}
