package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
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
	TempError               // timeout, SERVFAIL, REFUSED: unknown, never clean
	Skipped                 // zone disabled by its health check
)

func (s Status) String() string {
	return [...]string{"clean", "listed", "list_error", "temp_error", "skipped"}[s]
}

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
	CacheSize      int
	Logger         *slog.Logger
	Clock          func() time.Time
	Registerer     prometheus.Registerer // nil: prometheus.DefaultRegisterer
}

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

	cmu   sync.Mutex
	cache map[string]cacheEntry

	hmu       sync.Mutex
	health    map[string]*Health
	lastError map[string]time.Time // zone -> last time a list error was logged

	m *metrics
}

type cacheEntry struct {
	answers []netip.Addr // nil: negative answer
	expires time.Time
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
		o.CacheSize = 100000
	}
	c := &Checker{q: q, opts: o, log: o.Logger, now: o.Clock,
		cache: map[string]cacheEntry{}, health: map[string]*Health{}, lastError: map[string]time.Time{}}
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
	for _, z := range append(append([]*Zone{}, c.zones...), c.dzones...) {
		c.health[z.Name] = &Health{Zone: z.Name, State: Unknown}
	}
	c.m = newMetrics(o.Registerer)
	for _, h := range c.health {
		c.m.setState(h.Zone, Unknown)
	}
	return c, nil
}

// Watch adds zones used by single rules to the health checks, so that a
// dead or lists-everything zone is skipped there too. Call before RunHealth.
func (c *Checker) Watch(ipZones, domainZones []*Zone) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	for _, set := range []struct {
		in  []*Zone
		out *[]*Zone
	}{{ipZones, &c.wzones}, {domainZones, &c.wdzones}} {
		for _, z := range set.in {
			if _, ok := c.health[z.Name]; ok {
				continue
			}
			c.health[z.Name] = &Health{Zone: z.Name, State: Unknown}
			*set.out = append(*set.out, z)
			c.m.setState(z.Name, Unknown)
		}
	}
}

// Zones returns the configured client-IP zones.
func (c *Checker) Zones() []*Zone { return c.zones }

// DomainZones returns the configured domain zones.
func (c *Checker) DomainZones() []*Zone { return c.dzones }

// Query asks zone about qname (already built with IPQuery or DomainQuery),
// through the cache. It never reads a failure as a listing.
func (c *Checker) Query(ctx context.Context, z *Zone, qname string) Result {
	r := Result{Zone: z, Query: qname}
	if h, off := c.disabled(z.Name); off {
		r.Status = Skipped
		r.Detail = "zone disabled (" + h.State.String() + "): " + h.Detail
		c.m.queries.WithLabelValues(z.Name, r.Status.String()).Inc()
		return r
	}
	answers, cached, err := c.lookup(ctx, qname)
	r.Cached = cached
	r.Answers = answers
	switch {
	case err != nil:
		r.Status, r.Detail = TempError, err.Error()
	case len(answers) == 0:
		r.Status = Clean
	default:
		r.Status = Clean
		for _, a := range answers {
			if why := AnswerError(a); why != "" {
				r.Status, r.Detail = ListError, why
				break
			}
			if z.Match(a) {
				r.Status = Listed
			}
		}
	}
	if r.Status == ListError {
		c.listError(z.Name, qname, r.Detail)
	}
	c.m.queries.WithLabelValues(z.Name, r.Status.String()).Inc()
	return r
}

// lookup returns the A answers of qname (nil for NXDOMAIN / no data) from
// the cache or the resolver. Temporary failures and error codes are not
// cached.
func (c *Checker) lookup(ctx context.Context, qname string) ([]netip.Addr, bool, error) {
	now := c.now()
	c.cmu.Lock()
	e, ok := c.cache[qname]
	c.cmu.Unlock()
	if ok && now.Before(e.expires) {
		c.m.cache.WithLabelValues("hit").Inc()
		return e.answers, true, nil
	}
	c.m.cache.WithLabelValues("miss").Inc()
	answers, ttl, err := c.q.LookupA4(ctx, qname)
	if err != nil {
		var de *dnsutil.Error
		if !errors.As(err, &de) || !de.NotFound() {
			return nil, false, err
		}
		answers, ttl = nil, de.TTL
	}
	ttl = max(c.opts.MinTTL, min(ttl, c.opts.MaxTTL))
	// An error code (over quota, public resolver) says nothing about the
	// name asked and is not cached: once the list recovers and its health
	// check re-enables it, a cached error would switch it off again.
	if ttl > 0 && !hasErrorCode(answers) {
		c.cmu.Lock()
		if len(c.cache) >= c.opts.CacheSize {
			c.evictLocked(now)
		}
		c.cache[qname] = cacheEntry{answers: answers, expires: now.Add(ttl)}
		c.cmu.Unlock()
	}
	return answers, false, nil
}

func hasErrorCode(answers []netip.Addr) bool {
	for _, a := range answers {
		if AnswerError(a) != "" {
			return true
		}
	}
	return false
}

// evictLocked drops expired entries, and if none expired, an arbitrary
// tenth of the cache (map order is random).
func (c *Checker) evictLocked(now time.Time) {
	for k, e := range c.cache {
		if !now.Before(e.expires) {
			delete(c.cache, k)
		}
	}
	n := len(c.cache) / 10
	for k := range c.cache {
		if n <= 0 || len(c.cache) < c.opts.CacheSize {
			break
		}
		delete(c.cache, k)
		n--
	}
	c.log.Info("dnsbl cache full: entries evicted", "cache_size", c.opts.CacheSize)
}

// listError logs an out-of-range answer once per zone per hour and marks
// the zone unhealthy (refusing) until its next health check passes.
func (c *Checker) listError(zone, qname, why string) {
	now := c.now()
	c.hmu.Lock()
	last, seen := c.lastError[zone]
	logIt := !seen || now.Sub(last) >= time.Hour
	if logIt {
		c.lastError[zone] = now
	}
	h := c.health[zone]
	changed := false
	if h != nil && h.State != Refusing {
		h.State, h.Detail, h.Checked = Refusing, why, now
		changed = true
	}
	c.hmu.Unlock()
	if changed {
		c.m.setState(zone, Refusing)
	}
	if logIt {
		c.log.Warn("dnsbl list error: answer outside the list's reply range is not a listing; zone disabled until its health check passes",
			"zone", zone, "query", qname, "error", why)
	}
}

// Score is the outcome of checking one client against all zones.
type Score struct {
	Score   int
	Results []Result // one per zone and name asked, in zone order
}

// Listed returns the results that counted.
func (s Score) Listed() []Result { return s.filter(Listed) }

// TempErrors returns the results whose lists could not be asked.
func (s Score) TempErrors() []Result { return s.filter(TempError) }

func (s Score) filter(st Status) []Result {
	var out []Result
	for _, r := range s.Results {
		if r.Status == st {
			out = append(out, r)
		}
	}
	return out
}

// Zones returns the names of the listed zones with their weights, sorted.
func (s Score) String() string {
	var parts []string
	for _, r := range s.Listed() {
		parts = append(parts, fmt.Sprintf("%s*%d", r.Zone.Name, r.Zone.Weight))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// Check asks every client-IP zone about ip and every domain zone about
// each of domains (sender domain, HELO name), all in parallel with one
// deadline, and sums the weights as postscreen does. A domain zone counts
// once even if several names are listed in it.
func (c *Checker) Check(ctx context.Context, ip netip.Addr, domains ...string) Score {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	type job struct {
		z     *Zone
		qname string
	}
	var jobs []job
	if ip.IsValid() {
		for _, z := range c.zones {
			jobs = append(jobs, job{z, IPQuery(ip, z.Name)})
		}
	}
	seen := map[string]bool{}
	for _, d := range domains {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if seen[d] || !DomainQueryable(d) {
			continue
		}
		seen[d] = true
		for _, z := range c.dzones {
			jobs = append(jobs, job{z, DomainQuery(d, z.Name)})
		}
	}
	res := make([]Result, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = c.Query(ctx, j.z, j.qname)
		}()
	}
	wg.Wait()
	s := Score{Results: res}
	counted := map[*Zone]bool{}
	for _, r := range res {
		if r.Status == Listed && !counted[r.Zone] {
			counted[r.Zone] = true
			s.Score += r.Zone.Weight
		}
	}
	return s
}
