package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/dnsutil"
)

// State is a zone's health.
type State int

// Health states. Dead, ListsEverything and Refusing zones are switched
// off: skipped when scoring (fail open for that zone) until a health check
// finds them healthy again. Unknown and Failing zones are not asked
// either, but they are not switched off: a query that finds no cached
// answer gets a temporary failure (Failing) or, before the first check,
// what a switched-off zone gets.
const (
	Unknown         State = iota // not checked yet
	Healthy                      // test point listed, probes not listed
	Dead                         // the list does not answer while DNS does, or its test point is not listed
	ListsEverything              // lists addresses no list may contain (two probes)
	Refusing                     // answers with an error code (public resolver, quota)
	Failing                      // queries failed at run time while other lists answered: being re-checked
)

var stateNames = [...]string{"unknown", "healthy", "dead", "lists-everything", "refusing", "failing"}

func (s State) String() string { return stateNames[s] }

// Disabled reports whether a zone in this state is switched off (skipped).
func (s State) Disabled() bool { return s == Dead || s == ListsEverything || s == Refusing }

// Health is one zone's last health check.
type Health struct {
	Zone    string    `json:"zone"`
	State   State     `json:"-"`
	Detail  string    `json:"detail,omitempty"`
	IPv6    bool      `json:"ipv6"` // ::FFFF:7F00:2 listed (RFC 5782 §5)
	Checked time.Time `json:"checked"`
}

// zoneState is a zone's health and the breaker's counters; Checker.mu
// guards it.
type zoneState struct {
	z           *Zone
	domain      bool
	slot        int // index in its cache entry
	h           Health
	firstDone   chan struct{} // closed after the first health check
	firstClosed bool
	// counted[Clean], counted[Listed]: queries{zone, result}, resolved once
	counted [Listed + 1]prometheus.Counter

	fails       int       // temporary failures in a row at run time
	streakStart time.Time // when the first of them was sent
	lastFail    time.Time // when the latest failed query was sent
	answered    time.Time // when the latest query it answered was sent
	stalled     int       // queries in flight for longer than stallAfter
	stallStart  time.Time // when the oldest of them was sent
	waiting     map[*inflightQuery]bool

	checking     bool
	due          time.Time // next check (RunHealth); zero: none planned
	backoff      time.Duration
	lastConfirm  time.Time // last check asked for by an error code
	lastSuspect  time.Time // last check asked for by failures the breaker did not trip on
	lastSpot     time.Time // last spot probe after a listing (spotCheck)
	silentOnce   bool      // the last check found no answer from the list (RunHealth confirms)
	checkStart   time.Time // when RunHealth started its latest check
	lastErrorLog time.Time
}

func (c *Checker) zoneState(name string) *zoneState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state[name]
}

// allZones lists every zone with a health record; c.mu must be held.
func (c *Checker) allZones() []*Zone {
	var out []*Zone
	for _, l := range [][]*Zone{c.zones, c.wzones, c.dzones, c.wdzones} {
		out = append(out, l...)
	}
	return out
}

// HealthReport returns every zone's health, client-IP zones first.
func (c *Checker) HealthReport() []Health {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Health
	for _, z := range c.allZones() {
		out = append(out, c.state[z.Name].h)
	}
	return out
}

// DNSReachable reports whether DNS answers, and if not, why.
func (c *Checker) DNSReachable() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.dns.down, c.dns.detail
}

// probe is one health query and what it must give.
type probe struct {
	qname    string
	mustList bool // the test point
	mustNot  bool // 127.0.0.1 / INVALID / random documentation addresses
	random   bool // a random name no list may list
	// fresh: the name carries at least 32 random bits, so no cache holds
	// its answer: only the list's (or its parent's) own servers can
	// answer it. An IPv4 probe from a documentation /24 has 8 random bits
	// and is asked over and over: the resolver answers it from its cache
	// during an outage, so it says nothing about reachability.
	fresh  bool
	parent bool // a random name under the zone's parent domain
	ipv6   bool
	n      int // which range or reserved domain a random probe is from

	answered bool // a definite answer (listed or not)
	listed   bool // a valid listing code
	invalid  bool // an answer no list gives (127.0.0.1, outside 127/8)
	refusal  string
	errText  string
}

// docRanges are the RFC 5737 and RFC 3849 documentation ranges: no list
// has a reason to list an address from them.
var docRanges = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32"),
}

func randomIn(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits() / 8; i < len(b); i++ {
		b[i] = byte(rand.IntN(254) + 1)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// randomProbe is a name no list may list, different on every call.
func randomProbe(z *Zone, domain bool, n int) *probe {
	if domain {
		tld := [...]string{"example", "invalid", "example.com"}[n%3]
		return &probe{qname: DomainQuery(fmt.Sprintf("rg%08x.%s", rand.Uint32(), tld), z.Name), mustNot: true, random: true, fresh: true, n: n % 3}
	}
	p := docRanges[n%len(docRanges)]
	return &probe{qname: IPQuery(randomIn(p), z.Name), mustNot: true, random: true, fresh: p.Addr().BitLen()-p.Bits() >= 32, n: n % len(docRanges)}
}

// spotRanges are IPv6 documentation ranges (RFC 3849; a byte-aligned part
// of RFC 9637's 3fff::/20): a random address in them is a name no cache
// holds (fresh).
var spotRanges = []netip.Prefix{netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("3fff::/24")}

// spotProbe is a fresh name no list may list, for spotCheck: its "not
// listed" must come from the list itself. An IPv4 documentation /24 has
// only 254 names, which the resolver may still hold from an earlier health
// probe: a cached NXDOMAIN would vouch for a list that now lists
// everything (TestRealListStartsListingEverything failed so, rarely).
// Successive n are different forms (another TLD, another range).
func spotProbe(z *Zone, domain bool, n int) *probe {
	if domain {
		return randomProbe(z, true, n)
	}
	p := spotRanges[n%len(spotRanges)]
	return &probe{qname: IPQuery(randomIn(p), z.Name), mustNot: true, random: true, fresh: true, n: n % len(spotRanges)}
}

// liveProbe asks a random name directly under the zone (not an address
// nor a domain): whatever the answer, only the list's own servers can
// give it, so it shows whether they answer. It judges nothing else.
func liveProbe(z *Zone) *probe {
	return &probe{qname: fmt.Sprintf("rg%08x%08x.%s", rand.Uint32(), rand.Uint32(), z.Name), fresh: true}
}

// parentProbe asks a random name under the zone's parent domain: if that
// answers while the zone does not, the list is dead and DNS is not.
func parentProbe(z *Zone) *probe {
	parent := z.Name
	if _, p, ok := strings.Cut(z.Name, "."); ok {
		parent = p
	}
	return &probe{qname: fmt.Sprintf("rg%08x.%s", rand.Uint32(), parent), parent: true, fresh: true}
}

func (c *Checker) probes(z *Zone, domain bool) []*probe {
	var ps []*probe
	if domain {
		// RFC 5782 §5: TEST must be listed, INVALID must not.
		ps = []*probe{
			{qname: DomainQuery("test", z.Name), mustList: true},
			{qname: DomainQuery("invalid", z.Name), mustNot: true},
		}
	} else {
		ps = []*probe{
			{qname: IPQuery(netip.MustParseAddr("127.0.0.2"), z.Name), mustList: true},
			{qname: nibbleQuery(netip.MustParseAddr("::ffff:7f00:2"), z.Name), ipv6: true},
			{qname: IPQuery(netip.MustParseAddr("127.0.0.1"), z.Name), mustNot: true},
		}
	}
	for i := range 4 {
		ps = append(ps, randomProbe(z, domain, i))
	}
	return append(ps, liveProbe(z), parentProbe(z))
}

// ask sends one probe, bypassing the cache: a health check must see the
// list as it is now.
func (c *Checker) ask(ctx context.Context, p *probe) {
	sent := time.Now()
	answers, _, err := c.q.LookupA4(ctx, p.qname)
	var de *dnsutil.Error
	switch {
	case err == nil:
		p.answered = true
		for _, a := range answers {
			switch {
			case refusalCode(a) != "":
				p.refusal = a.String() + " (" + refusalCode(a) + ")"
			case invalidAnswer(a) != "":
				p.invalid = true
			default:
				p.listed = true
			}
		}
	case errors.As(err, &de) && de.NotFound():
		p.answered = true
	default:
		p.errText = err.Error()
	}
	if p.answered && p.fresh {
		c.noteProbeAnswer(sent)
	}
}

// spotEvery is how often a zone that lists clients is asked, on one of
// those listings, about one random name no list may list (spotCheck).
const spotEvery = 10 * time.Second

// spotCheck runs after a zone listed a client (an answer from the list, not
// the cache), at most once a spotEvery per zone: it asks the list about
// one random address (or domain) that no list may list, and if that is
// listed, about a second one from another range. A list that lists
// everything mid-run — dead lists were parked behind wildcards overnight —
// would otherwise reject every client until its next health check
// (dnsbl.health_interval, 5 min by default). If the probe is listed too,
// the zone is Failing at once (no longer trusted: a temporary failure where
// it matters, never a listing) and checked now; the check's second,
// different probe decides whether it lists everything (issue 13 item 7). It
// reports whether the listing just seen is still to be believed.
func (c *Checker) spotCheck(ctx context.Context, st *zoneState) bool {
	now := time.Now()
	c.mu.Lock()
	due := st.h.State == Healthy && now.Sub(st.lastSpot) >= spotEvery
	if due {
		st.lastSpot = now
	}
	c.mu.Unlock()
	if !due {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	n := rand.IntN(2)
	p := spotProbe(st.z, st.domain, n)
	c.ask(ctx, p)
	if !p.listed && !p.invalid {
		return true
	}
	// A list may list one odd range: a second, different probe confirms
	// (issue 13 item 7), or the zone would flap on every hit.
	p2 := spotProbe(st.z, st.domain, n+1)
	c.ask(ctx, p2)
	if !p2.listed && !p2.invalid {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.h.State == Healthy {
		c.setHealthLocked(st, Health{Zone: st.z.Name, State: Failing, IPv6: st.h.IPv6, Checked: c.now(),
			Detail: "listed " + p.qname + " and another, which no list may contain: checking whether it lists everything"})
		c.scheduleLocked(st, 0)
	}
	return false
}

// checkKind says how far a health check got.
type checkKind int

const (
	conclusive     checkKind = iota
	dnsUnreachable           // nothing answered, not even the parent domain
	inconclusive             // the list answers, but its test point did not
	unsettled                // the list was silent while DNS was unreachable or just back
)

type checkResult struct {
	kind   checkKind
	h      Health
	detail string
	silent bool      // Dead because nothing of the list answered
	start  time.Time // when the check began
}

// checkZone probes one zone under one deadline and says what it is.
func (c *Checker) checkZone(ctx context.Context, st *zoneState) checkResult {
	start := time.Now()
	r := c.probeZone(ctx, st, start)
	r.start = start
	return r
}

func (c *Checker) probeZone(ctx context.Context, st *zoneState, start time.Time) checkResult {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	z := st.z
	ps := c.probes(z, st.domain)
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { c.ask(ctx, p) })
	}
	wg.Wait()

	h := Health{Zone: z.Name, Checked: c.now()}
	live, parentOK := false, false
	var lastErr string
	for _, p := range ps {
		switch {
		case p.parent:
			parentOK = p.answered
		case p.fresh && p.answered:
			live = true
		}
		if p.ipv6 && p.listed {
			h.IPv6 = true
		}
		if p.errText != "" {
			lastErr = p.errText
		}
	}
	if !live {
		// The list's own servers did not answer a name nobody has
		// cached. Dead, if its parent domain's servers or other lists'
		// servers answer such names meanwhile (answers from the
		// resolver's cache do not count: an overloaded resolver answers
		// those and little else); otherwise DNS cannot be reached.
		c.mu.Lock()
		others := !c.dns.probed.Before(start)
		c.mu.Unlock()
		if parentOK || others {
			why := "its parent domain answers"
			if !parentOK {
				why = "other lists answer"
			}
			h.State, h.Detail = Dead, "no answer from the list while "+why+": "+lastErr
			return checkResult{kind: conclusive, h: h, silent: true}
		}
		return checkResult{kind: dnsUnreachable, detail: "no answer from " + z.Name + " nor from its parent domain: " + lastErr}
	}
	var refusals, hits []string
	other := rand.IntN(4) // the confirming probe's range: another than the hit's
	tp := ps[0]
	for _, p := range ps {
		if p.refusal != "" {
			refusals = append(refusals, p.refusal+" for "+p.qname)
		}
		if p.mustNot && (p.listed || p.invalid) {
			hits = append(hits, p.qname)
			if p.random {
				other = p.n + 1 + rand.IntN(2)
			}
		}
	}
	switch {
	case tp.refusal != "" || len(refusals) >= 2:
		h.State, h.Detail = Refusing, strings.Join(refusals, "; ")
		return checkResult{kind: conclusive, h: h}
	case len(hits) == 1:
		// One probe listed: a list may list one odd address. Confirm
		// with a second, different probe before switching it off
		// (issue 13 item 7).
		p := randomProbe(z, st.domain, other)
		c.ask(ctx, p)
		if p.listed || p.invalid {
			hits = append(hits, p.qname)
		} else {
			c.log.Warn("dnsbl zone lists a probe no list should list, but not a second one: not switched off",
				"zone", z.Name, "listed", hits[0], "not_listed", p.qname)
		}
	}
	switch {
	case len(hits) >= 2:
		h.State, h.Detail = ListsEverything, "lists "+strings.Join(hits, " and ")+", which no list may contain"
	case !tp.answered:
		return checkResult{kind: inconclusive, detail: "test point " + tp.qname + ": " + tp.errText}
	case !tp.listed:
		h.State, h.Detail = Dead, "test point "+tp.qname+" not listed (RFC 5782 §5)"
	default:
		h.State = Healthy
		if len(refusals) > 0 {
			h.Detail = "one probe answered an error code: " + refusals[0]
		}
	}
	return checkResult{kind: conclusive, h: h}
}

// apply stores a check's outcome and plans the zone's next check. With
// confirm (the running server's checks), a list found silent while other
// lists were checked at the same time or are in trouble is only failing
// until a second check, a second later, finds it silent too: an overloaded
// resolver loses some names and answers others, and one round of checks
// that lost all of a list's probes must not switch the list off (the
// benchmark saw every zone found dead at once at a load of 40). A list
// silent alone (the breaker tripped it, the others answer) is dead at
// once: every second it is failing defers the clients it could decide.
func (c *Checker) apply(st *zoneState, r checkResult, confirm bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.silent && c.dnsUnsettledLocked(r.start) {
		// Silent while DNS was unreachable, or came back during the
		// check or just before it: that is the outage's, not the
		// list's. Checked again soon.
		r.kind, r.silent = unsettled, false
	}
	if r.kind == conclusive {
		if confirm && r.silent && !st.silentOnce && st.h.State != Dead && c.othersTroubledLocked(st) {
			r.h.State, r.h.Detail = Failing, r.h.Detail+" (a second check confirms it dead)"
		}
		st.silentOnce = r.silent
	}
	st.checking = false
	st.due = time.Time{}
	interval := c.opts.HealthInterval
	next := func(limit time.Duration) time.Duration {
		if interval > 0 {
			limit = min(limit, interval)
		}
		st.backoff = min(max(2*st.backoff, firstBackoff), limit)
		return st.backoff
	}
	switch r.kind {
	case dnsUnreachable:
		c.setDNSLocked(true, r.detail)
		st.due = time.Now().Add(next(dnsBackoffMax))
	case inconclusive:
		st.due = time.Now().Add(next(disabledMax))
	case unsettled:
		st.due = time.Now().Add(next(dnsBackoffMax))
	default:
		c.setHealthLocked(st, r.h)
		if r.h.State == Healthy {
			st.fails, st.backoff = 0, 0
			if interval > 0 {
				st.due = time.Now().Add(interval)
			}
		} else {
			st.due = time.Now().Add(next(disabledMax))
		}
	}
	// A first check that found the list silent while DNS was unsettled
	// judged nothing: queries keep waiting for (at most a timeout) or
	// failing temporarily until one does, instead of skipping the zone.
	if !st.firstClosed && r.kind != unsettled {
		st.firstClosed = true
		close(st.firstDone)
	}
}

// othersTroubledLocked reports whether a zone other than st was checked in
// the same round as st (its check started within half a timeout of st's),
// or is in trouble now.
func (c *Checker) othersTroubledLocked(st *zoneState) bool {
	w := c.opts.Timeout / 2
	for _, o := range c.state {
		if o == st {
			continue
		}
		sameRound := !o.checkStart.IsZero() && o.checkStart.After(st.checkStart.Add(-w)) && o.checkStart.Before(st.checkStart.Add(w))
		if sameRound || o.checking || o.fails > 0 || o.stalled > 0 || o.h.State == Failing || o.silentOnce {
			return true
		}
	}
	return false
}

// CheckHealth checks every zone now, in parallel, and returns their
// health as this one check sees it (`dnsbl health`: a silent list is dead
// at once; RunHealth confirms it first). Every change is logged (loudly
// for a list that lists everything).
func (c *Checker) CheckHealth(ctx context.Context) []Health {
	c.mu.Lock()
	var sts []*zoneState
	for _, z := range c.allZones() {
		sts = append(sts, c.state[z.Name])
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, st := range sts {
		wg.Go(func() { c.apply(st, c.checkZone(ctx, st), false) })
	}
	wg.Wait()
	return c.HealthReport()
}

// RunHealth checks every zone now and then every Options.HealthInterval,
// and at once any zone the breaker trips or that answers an error code,
// until ctx ends. A zone that is switched off, failing or unreachable is
// checked again after 1 s, then twice as long each time (up to the
// interval or 5 min; 10 s while DNS is unreachable). It returns when ctx
// ends and every check it started has ended.
func (c *Checker) RunHealth(ctx context.Context) {
	c.mu.Lock()
	if len(c.state) == 0 {
		c.mu.Unlock()
		return
	}
	if c.opts.HealthInterval > 0 {
		for _, st := range c.state {
			c.scheduleLocked(st, 0)
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := c.startDue(ctx, &wg)
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

// startDue starts the checks that are due and returns when the next one is.
func (c *Checker) startDue(ctx context.Context, wg *sync.WaitGroup) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	next := now.Add(time.Hour)
	for _, st := range c.state {
		switch {
		case st.checking || st.due.IsZero():
		case !st.due.After(now):
			st.checking, st.checkStart = true, now
			wg.Go(func() {
				r := c.checkZone(ctx, st)
				if ctx.Err() != nil {
					c.mu.Lock()
					st.checking = false
					c.mu.Unlock()
					return
				}
				c.apply(st, r, true)
				select {
				case c.kick <- struct{}{}:
				default:
				}
			})
		case st.due.Before(next):
			next = st.due
		}
	}
	return next
}
