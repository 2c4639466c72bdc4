package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/dnsutil"
)

// State is a zone's health.
type State int

// Health states. Dead, ListsEverything and Refusing zones are disabled:
// skipped when scoring (fail open for that zone) until a health check
// finds them healthy again.
const (
	Unknown         State = iota // not checked yet; used
	Healthy                      // test point listed, 127.0.0.1 and probes not listed
	Dead                         // no answer at all, or test point not listed
	ListsEverything              // lists addresses no list may contain
	Refusing                     // answers with an error code (public resolver, quota)
)

var stateNames = [...]string{"unknown", "healthy", "dead", "lists-everything", "refusing"}

func (s State) String() string { return stateNames[s] }

// Disabled reports whether a zone in this state is skipped.
func (s State) Disabled() bool { return s == Dead || s == ListsEverything || s == Refusing }

// Health is one zone's last health check.
type Health struct {
	Zone    string    `json:"zone"`
	State   State     `json:"-"`
	Detail  string    `json:"detail,omitempty"`
	IPv6    bool      `json:"ipv6"` // ::FFFF:7F00:2 listed (RFC 5782 §5)
	Checked time.Time `json:"checked"`
}

// allZones lists every zone with a health record; hmu must be held.
func (c *Checker) allZones() []*Zone {
	var out []*Zone
	for _, l := range [][]*Zone{c.zones, c.wzones, c.dzones, c.wdzones} {
		out = append(out, l...)
	}
	return out
}

// disabled reports whether zone is skipped, with its health record.
func (c *Checker) disabled(zone string) (Health, bool) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	h := c.health[zone]
	if h == nil {
		return Health{}, false
	}
	return *h, h.State.Disabled()
}

// HealthReport returns every zone's health, client-IP zones first.
func (c *Checker) HealthReport() []Health {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	var out []Health
	for _, z := range c.allZones() {
		out = append(out, *c.health[z.Name])
	}
	return out
}

// probe is one health query and what it must give.
type probe struct {
	qname      string
	mustList   bool // a test point
	mustNot    bool // 127.0.0.1 / INVALID / random documentation addresses
	ipv6       bool
	listedSeen bool
	answered   bool // a definite answer (listed or not)
	errCode    string
	errText    string
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

func (c *Checker) probes(z *Zone, domain bool) []*probe {
	if domain {
		// RFC 5782 §5: TEST must be listed, INVALID must not; random
		// names under the RFC 2606 reserved TLDs must not be either.
		return []*probe{
			{qname: DomainQuery("test", z.Name), mustList: true},
			{qname: DomainQuery("invalid", z.Name), mustNot: true},
			{qname: DomainQuery(fmt.Sprintf("rg%08x.example", rand.Uint32()), z.Name), mustNot: true},
			{qname: DomainQuery(fmt.Sprintf("rg%08x.invalid", rand.Uint32()), z.Name), mustNot: true},
		}
	}
	ps := []*probe{
		{qname: IPQuery(netip.MustParseAddr("127.0.0.2"), z.Name), mustList: true},
		{qname: nibbleQuery(netip.MustParseAddr("::ffff:7f00:2"), z.Name), ipv6: true},
		{qname: IPQuery(netip.MustParseAddr("127.0.0.1"), z.Name), mustNot: true},
	}
	for _, p := range docRanges {
		ps = append(ps, &probe{qname: IPQuery(randomIn(p), z.Name), mustNot: true})
	}
	return ps
}

// CheckHealth checks every zone now, in parallel, and updates their states,
// logging every change (loudly for a list that lists everything).
func (c *Checker) CheckHealth(ctx context.Context) []Health {
	var wg sync.WaitGroup
	c.hmu.Lock()
	ip := append(append([]*Zone{}, c.zones...), c.wzones...)
	dom := append(append([]*Zone{}, c.dzones...), c.wdzones...)
	c.hmu.Unlock()
	for _, z := range ip {
		wg.Add(1)
		go func() { defer wg.Done(); c.checkZone(ctx, z, false) }()
	}
	for _, z := range dom {
		wg.Add(1)
		go func() { defer wg.Done(); c.checkZone(ctx, z, true) }()
	}
	wg.Wait()
	return c.HealthReport()
}

func (c *Checker) checkZone(ctx context.Context, z *Zone, domain bool) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	ps := c.probes(z, domain)
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Health probes bypass the cache: they must see the list as it is now.
			answers, _, err := c.q.LookupA4(ctx, p.qname)
			var de *dnsutil.Error
			switch {
			case err == nil:
				p.answered = true
				for _, a := range answers {
					if why := AnswerError(a); why != "" && !(p.mustNot && a == netip.MustParseAddr("127.0.0.1")) {
						p.errCode = a.String()
						p.errText = why
					} else {
						p.listedSeen = true
					}
				}
			case errors.As(err, &de) && de.NotFound():
				p.answered = true
			default:
				p.errText = err.Error()
			}
		}()
	}
	wg.Wait()

	h := Health{Zone: z.Name, Checked: c.now()}
	anyAnswer := false
	for _, p := range ps {
		anyAnswer = anyAnswer || p.answered
		if p.ipv6 && p.listedSeen {
			h.IPv6 = true
		}
	}
	switch {
	case !anyAnswer:
		h.State, h.Detail = Dead, "no answer: "+ps[0].errText
	default:
		h.State = Healthy
		for _, p := range ps {
			if p.errCode != "" {
				h.State, h.Detail = Refusing, fmt.Sprintf("%s for %s: %s", p.errCode, p.qname, p.errText)
				break
			}
		}
		if h.State == Healthy {
			for _, p := range ps {
				if p.mustNot && p.listedSeen {
					h.State, h.Detail = ListsEverything, "lists "+p.qname+", which no list may contain"
					break
				}
			}
		}
		if h.State == Healthy {
			switch tp := ps[0]; {
			case !tp.answered:
				h.State, h.Detail = Dead, "test point "+tp.qname+": "+tp.errText
			case !tp.listedSeen:
				h.State, h.Detail = Dead, "test point "+tp.qname+" not listed (RFC 5782 §5)"
			}
		}
	}
	c.setHealth(h)
}

func (c *Checker) setHealth(h Health) {
	c.hmu.Lock()
	old := c.health[h.Zone]
	prev := Unknown
	if old != nil {
		prev = old.State
	}
	c.health[h.Zone] = &h
	c.hmu.Unlock()
	c.m.setState(h.Zone, h.State)
	if prev == h.State {
		return
	}
	switch {
	case h.State == ListsEverything:
		c.log.Error("DNSBL ZONE LISTS EVERYTHING: disabled; it would reject every client. Remove it from the configuration",
			"zone", h.Zone, "detail", h.Detail)
	case h.State.Disabled():
		c.log.Warn("dnsbl zone disabled (skipped until it recovers)", "zone", h.Zone, "state", h.State.String(), "detail", h.Detail)
	case prev.Disabled():
		c.log.Info("dnsbl zone recovered: re-enabled", "zone", h.Zone, "was", prev.String())
	default:
		c.log.Debug("dnsbl zone health", "zone", h.Zone, "state", h.State.String(), "ipv6", h.IPv6)
	}
}

// RunHealth checks every zone now and then every interval until ctx ends.
// An interval of 0 disables health checks.
func (c *Checker) RunHealth(ctx context.Context, interval time.Duration) {
	if len(c.HealthReport()) == 0 || interval <= 0 {
		return
	}
	c.CheckHealth(ctx)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.CheckHealth(ctx)
		}
	}
}
