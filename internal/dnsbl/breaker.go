package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/relayguard/relayguard/internal/dnsutil"
)

// The circuit breaker. A zone whose queries fail tripAfter times in a row
// while another list answered a query sent after the first of them, and
// failed none sent since (othersAnswerLocked), is Failing; when tripAfter
// queries in a row fail and no query sent after the first of them was
// answered, DNS is unreachable. Send times are compared, not arrival times:
// an answer read late by a busy process says nothing about DNS after it was
// asked. Either way queries are no longer sent (the answer is a temporary
// failure at once, or the cached answer) and a health check decides. DNS
// is reachable again only when a health probe of a fresh name (one no
// cache holds) is answered: a resolver cut off from the lists still
// answers what it has cached. While DNS is unreachable, or was so less
// than settle() ago, no zone is tripped or found dead (dnsUnsettledLocked):
// failures then are DNS's, not a list's.
const (
	tripAfter     = 3
	firstBackoff  = time.Second
	dnsBackoffMax = 10 * time.Second // DNS unreachable: notice its return soon
	disabledMax   = 5 * time.Minute
	confirmEvery  = time.Minute // at most one check per zone per error code seen
	listErrorLog  = time.Hour   // one log line per zone per hour for error codes
)

// dnsState is whether DNS answers at all; Checker.mu guards it.
type dnsState struct {
	down     bool
	detail   string
	since    time.Time
	answered time.Time // when the latest query that got a definite answer was sent
	// probed is when the latest health probe of a fresh name (nobody's
	// cache holds it: the answer came from a list's own servers) that got
	// a definite answer was sent. A resolver that answers from its cache
	// but reaches no list says nothing about any list.
	probed     time.Time
	failStreak int
	failStart  time.Time
}

// minCounted is how long a query must have waited before its timeout
// counts against the zone: a query cut short by the request's own
// deadline (spent on earlier checks) says nothing about the list.
func (c *Checker) minCounted() time.Duration { return min(time.Second, c.opts.Timeout/2) }

// noteAnswer records a definite answer (any rcode but a failure) to a
// client's query to st sent at sent: the resolver answered then, and st
// answers. The answer may come from the resolver's cache, so it does not
// make DNS reachable again (noteProbeAnswer does).
func (c *Checker) noteAnswer(st *zoneState, sent time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.fails == 0 || !sent.Before(st.streakStart) {
		st.fails = 0
	}
	if sent.After(st.answered) {
		st.answered = sent
	}
	c.noteDNSAnswerLocked(sent)
}

// noteProbeAnswer records a definite answer to a health probe of a fresh
// name sent at sent: a list's own servers answered then, so DNS reaches
// the lists.
func (c *Checker) noteProbeAnswer(sent time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noteDNSAnswerLocked(sent)
	if sent.After(c.dns.probed) {
		c.dns.probed = sent
	}
	if c.dns.down && !sent.Before(c.dns.since) {
		c.setDNSLocked(false, "")
	}
}

func (c *Checker) noteDNSAnswerLocked(sent time.Time) {
	if !sent.Before(c.dns.failStart) {
		c.dns.failStreak = 0
	}
	if sent.After(c.dns.answered) {
		c.dns.answered = sent
	}
}

// settle is how long after DNS became reachable again failures are still
// taken for the outage's: a resolver coming back from an outage (or one
// whose lists' servers come back) answers some names and loses others
// for a while (unbound probes a server it found down one query at a time).
func (c *Checker) settle() time.Duration { return 2 * c.opts.Timeout }

// dnsUnsettledLocked reports whether DNS is unreachable now, or its
// reachability changed less than settle() before t: evidence gathered
// since t (failures, a silent health check) is then the outage's, and no
// list is tripped or found dead on it.
func (c *Checker) dnsUnsettledLocked(t time.Time) bool {
	return c.dns.down || (!c.dns.since.IsZero() && c.dns.since.After(t.Add(-c.settle())))
}

// othersAnswerLocked reports whether the lists are reached while st fails
// since t: a health probe of a fresh name was answered since t, or another
// list answered a query sent since t and none of its queries sent since t
// failed or is late. An answer alone is not enough: a resolver cut off
// from the lists answers the clients it has cached, for every list alike,
// and fails the others for every list alike; a dead list fails while the
// others answer everything.
func (c *Checker) othersAnswerLocked(st *zoneState, t time.Time) bool {
	if !c.dns.probed.Before(t) {
		return true
	}
	for _, o := range c.state {
		if o == st || o.answered.Before(t) || !o.lastFail.Before(t) {
			continue
		}
		late := false
		for w := range o.waiting {
			if w.stalled && !w.start.Before(t) {
				late = true
				break
			}
		}
		if !late {
			return true
		}
	}
	return false
}

// noteFailure feeds a failed query, sent at start, to the breaker.
func (c *Checker) noteFailure(ctx context.Context, st *zoneState, start time.Time, err error) {
	var de *dnsutil.Error
	timeout := errors.As(err, &de) && de.Kind == dnsutil.Timeout
	if errors.Is(ctx.Err(), context.Canceled) || (timeout && time.Since(start) < c.minCounted()) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st.fails++
	if st.fails == 1 {
		st.streakStart = start
	}
	if start.After(st.lastFail) {
		st.lastFail = start
	}
	c.dns.failStreak++
	if c.dns.failStreak == 1 {
		c.dns.failStart = start
	}
	if st.fails >= tripAfter && st.h.State == Healthy {
		c.tripLocked(st, st.streakStart, fmt.Sprintf("%d queries in a row failed while other lists answer (last: %v)", st.fails, err))
	}
	if !c.dns.down && c.dns.failStreak >= tripAfter && c.dns.answered.Before(c.dns.failStart) {
		c.setDNSLocked(true, fmt.Sprintf("%d queries in a row failed and nothing answered since (last: %v)", c.dns.failStreak, err))
	}
}

// stallAfter is how long a query may go unanswered before it counts
// toward the breaker while it is still in flight: three retransmissions
// (0, 0.4 and 1.2 s) unanswered. A zone with tripAfter such queries (or
// failures) that has answered nothing asked since the oldest of them, while
// other lists answered, is Failing at once and its waiting queries end: a list that dies costs the
// requests in flight about this long, not the whole timeout. A timeout
// under twice this waits for the failures themselves.
func (c *Checker) stallAfter() time.Duration {
	if d := c.opts.Timeout / 4; d >= 3*dnsutil.FirstRetransmit {
		return d
	}
	return c.opts.Timeout
}

// inflightQuery is a query waiting for its answer.
type inflightQuery struct {
	start   time.Time
	cancel  context.CancelFunc
	stalled bool
	ended   string // why the breaker ended it ("": it did not)
}

// inflight registers a query to st sent at start, bounded by the timeout
// even when the request's deadline is later (a single rule such as
// reject_rbl_client runs under policy.dns_timeout); done unregisters it
// and says why the breaker ended it, if it did.
func (c *Checker) inflight(ctx context.Context, st *zoneState, start time.Time) (context.Context, func() string) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	q := &inflightQuery{start: start, cancel: cancel}
	c.mu.Lock()
	if st.waiting == nil {
		st.waiting = map[*inflightQuery]bool{}
	}
	st.waiting[q] = true
	c.mu.Unlock()
	timer := time.AfterFunc(c.stallAfter(), func() { c.noteStall(st, q) })
	return ctx, func() string {
		timer.Stop()
		c.mu.Lock()
		delete(st.waiting, q)
		if q.stalled {
			st.stalled--
		}
		ended := q.ended
		c.mu.Unlock()
		cancel()
		return ended
	}
}

// endWaitingLocked ends st's queries still waiting for an answer: they
// answer a temporary failure now instead of at their deadline.
func endWaitingLocked(st *zoneState, why string) {
	for w := range st.waiting {
		if w.ended == "" {
			w.ended = why
			w.cancel()
		}
	}
}

// noteStall counts a query still unanswered after stallAfter.
func (c *Checker) noteStall(st *zoneState, q *inflightQuery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !st.waiting[q] {
		return // answered meanwhile
	}
	q.stalled = true
	st.stalled++
	if st.stalled == 1 || q.start.Before(st.stallStart) {
		st.stallStart = q.start
	}
	oldest := st.stallStart
	if st.fails > 0 && st.streakStart.Before(oldest) {
		oldest = st.streakStart
	}
	// The zone answered nothing asked since its oldest late query, while
	// another list did: slow answers under load (some late, some not) are
	// not a dead list.
	if st.stalled+st.fails >= tripAfter && st.h.State == Healthy && st.answered.Before(oldest) {
		c.tripLocked(st, oldest, fmt.Sprintf("%d queries unanswered after %v while other lists answer", st.stalled+st.fails, c.stallAfter()))
	}
	// Nothing at all answered since tripAfter queries, to more than one
	// list (or to the only one), went unanswered this long: DNS is
	// unreachable now, not after their deadline. (One list's queries
	// alone are that list's trouble, above.)
	if !c.dns.down {
		n, lists := 0, 0
		for _, o := range c.state {
			k := 0
			for w := range o.waiting {
				if w.stalled && c.dns.answered.Before(w.start) {
					k++
				}
			}
			if k > 0 {
				n, lists = n+k, lists+1
			}
		}
		if n >= tripAfter && (lists > 1 || len(c.state) == 1) {
			c.setDNSLocked(true, fmt.Sprintf("%d queries unanswered after %v and nothing answered since", n, c.stallAfter()))
		}
	}
}

// tripLocked makes st, whose trouble began with a query sent at since,
// Failing, has it checked now and ends the queries still waiting for it
// (they answer a temporary failure). When no other list is known to
// answer meanwhile (othersAnswerLocked), when DNS is unreachable or just
// back (dnsUnsettledLocked), or when most zones are in trouble at once, it
// is the resolver or the path to the lists that struggles (outage,
// overload), not one list: st is only checked now (at most once a
// confirmEvery), and the check decides.
func (c *Checker) tripLocked(st *zoneState, since time.Time, why string) {
	troubled := 0
	for _, o := range c.state {
		if o.fails > 0 || o.stalled > 0 || o.h.State == Failing {
			troubled++
		}
	}
	if 2*troubled > len(c.state) || !c.othersAnswerLocked(st, since) || c.dnsUnsettledLocked(since) {
		if now := time.Now(); now.Sub(st.lastSuspect) >= confirmEvery {
			st.lastSuspect = now
			c.scheduleLocked(st, 0)
		}
		return
	}
	c.setHealthLocked(st, Health{Zone: st.z.Name, State: Failing, IPv6: st.h.IPv6, Checked: c.now(), Detail: why})
	c.scheduleLocked(st, 0)
	endWaitingLocked(st, "list failing")
}

// confirmListError logs an error-code answer (once per zone per hour) and
// has the zone checked now: only a health check may say that the list
// refuses everyone (issue 13 item 6).
func (c *Checker) confirmListError(st *zoneState, qname, why string) {
	now := c.now()
	c.mu.Lock()
	logIt := now.Sub(st.lastErrorLog) >= listErrorLog
	if logIt {
		st.lastErrorLog = now
	}
	if st.h.State == Healthy && now.Sub(st.lastConfirm) >= confirmEvery {
		st.lastConfirm = now
		c.scheduleLocked(st, 0)
	}
	c.mu.Unlock()
	if logIt {
		c.log.Warn("dnsbl list error: an answer outside the list's reply range is not a listing; the list's health is checked now",
			"zone", st.z.Name, "query", qname, "error", why)
	}
}

// scheduleLocked plans st's next check in d and wakes RunHealth.
func (c *Checker) scheduleLocked(st *zoneState, d time.Duration) {
	at := time.Now().Add(d)
	if st.due.IsZero() || at.Before(st.due) {
		st.due = at
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// setDNSLocked records that DNS became unreachable (down) or reachable,
// logs the change once and, when down, ends the queries still waiting and
// has every zone checked now.
func (c *Checker) setDNSLocked(down bool, why string) {
	if c.dns.down == down {
		return
	}
	was := c.dns.since
	c.dns.down, c.dns.detail, c.dns.since = down, why, time.Now()
	if down {
		c.m.dnsUp.Set(0)
		c.log.Error("DNS unreachable: no DNS list answers (resolver down or cut off). Checks that depend on a list answer with a temporary failure (4xx) until it returns; cached answers are still used; no list is switched off for this",
			"detail", why)
		for _, st := range c.state {
			endWaitingLocked(st, "DNS unreachable")
			c.scheduleLocked(st, 0)
		}
		return
	}
	c.m.dnsUp.Set(1)
	c.log.Info("DNS reachable again: DNS lists are asked again", "unreachable_for", time.Since(was).Round(time.Second).String())
}

// setHealthLocked stores a zone's new health and logs a change of state.
func (c *Checker) setHealthLocked(st *zoneState, h Health) {
	prev := st.h.State
	st.h = h
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
	case h.State == Failing:
		c.log.Warn("dnsbl zone failing: not asked (a temporary failure where it matters) until a health check decides",
			"zone", h.Zone, "detail", h.Detail)
	case prev.Disabled() || prev == Failing:
		c.log.Info("dnsbl zone recovered: re-enabled", "zone", h.Zone, "was", prev.String())
	default:
		c.log.Info("dnsbl zone checked", "zone", h.Zone, "state", h.State.String(), "ipv6", h.IPv6)
	}
}
