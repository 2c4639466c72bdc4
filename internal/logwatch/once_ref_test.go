package logwatch

// refOnce is Once as it was before the report's speed work on it (fb05ccd:
// Publish copying the event, a map lookup per event, a pending allocated
// per address): FuzzOnceSameAsReference holds Once to it. Only the names
// differ.

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/event"
)

func refLayerOf(e event.Event) layer {
	switch e.Source {
	case "postfix":
		return front
	case "dovecot":
		switch {
		case e.Rule == "pam_unix":
			return pam
		case e.Service == "":
			return passdb
		}
		return front
	}
	return 0
}

// refAttempt is one failed login, with the layers that have reported it.
type refAttempt struct {
	t       int64 // Unix nanoseconds
	session string
	layers  layer
}

// refPending are the recent attempts of one address, and how many of them
// each layer has not reported yet: a line of a layer that no refAttempt
// misses (Postfix's warnings without auth_verbose, the common case) is
// counted without a scan.
type refPending struct {
	list    []refAttempt // at most maxPending; when full, a ring whose oldest is list[next]
	next    int
	missing [3]int32      // by layer bit
	inline  [2]refAttempt // list's first home: most addresses make an attempt or two
}

func newRefPending() *refPending {
	p := &refPending{}
	p.list = p.inline[:0]
	return p
}

// expire forgets the attempts before cut (Unix nanoseconds); it reports
// whether any are left.
func (p *refPending) expire(cut int64) bool {
	var ring [maxPending]refAttempt
	older, newer := p.oldestFirst()
	n := copy(ring[:], older)
	n += copy(ring[n:], newer)
	keep := p.list[:0]
	for _, a := range ring[:n] {
		if a.t >= cut {
			keep = append(keep, a)
		} else {
			p.count(a.layers, -1)
		}
	}
	p.list, p.next = keep, 0
	return len(keep) > 0
}

// add remembers a, forgetting the oldest refAttempt when full.
func (p *refPending) add(a refAttempt) {
	if len(p.list) < maxPending {
		p.list = append(p.list, a)
	} else {
		p.count(p.list[p.next].layers, -1)
		p.list[p.next] = a
		p.next = (p.next + 1) % maxPending
	}
	p.count(a.layers, 1)
}

// oldestFirst returns the attempts in the order they were added.
func (p *refPending) oldestFirst() ([]refAttempt, []refAttempt) {
	return p.list[p.next:], p.list[:p.next]
}

// count adds d to the missing counts of the layers a refAttempt lacks.
func (p *refPending) count(layers layer, d int32) {
	for b := range p.missing {
		if layers&(1<<b) == 0 {
			p.missing[b] += d
		}
	}
}

func (p *refPending) misses(l layer) bool { return p.missing[refBit(l)] > 0 }

// refOnce passes events on to a sink, turning the lines that several layers
// log for one failed login into one auth_failure: a line that reports an
// refAttempt another layer has already reported (the same address, the same
// session id when both name one, close enough in time) is dropped, and a
// login process's summary of N attempts stands for those not yet reported.
// Lines from different files may arrive in any order: the pairing is by the
// lines' own timestamps. Other events pass unchanged. It is safe for
// concurrent use (every source of a watch shares one).
type refOnce struct {
	next event.Sink

	// Max bounds the addresses of a generation (guard.max_tracked; 0: no
	// bound): one that reaches it is rotated at once, dropping the
	// generation before (memory: at most twice Max addresses, ~150 bytes
	// each). What is dropped is only the pairing of lines: a line whose
	// refAttempt was forgotten counts again, so a flood of addresses can make
	// the guard count more, never less. Log gets a notice when that
	// starts, and when rotations are back to every keepAttempts.
	Max int
	Log *slog.Logger
	// dropped counts the addresses forgotten by an early rotation.
	dropped atomic.Uint64
	full    bool

	// The addresses' attempts in two generations: cur, and prev, the
	// generation before the last rotation (every keepAttempts of event
	// time). An address found in prev moves to cur; one not seen for two
	// generations is dropped with prev, so that memory follows the recent
	// attackers without a sweep over all of them.
	mu        sync.Mutex
	cur, prev map[netip.Addr]*refPending
	latest    time.Time // latest event time seen
	rotated   time.Time // event time of the last rotation
}

// newRefOnce returns a refOnce that publishes to next.
func newRefOnce(next event.Sink) *refOnce {
	return &refOnce{next: next, cur: map[netip.Addr]*refPending{}, prev: map[netip.Addr]*refPending{}}
}

// Publish implements event.Sink.
func (o *refOnce) Publish(ctx context.Context, e event.Event) {
	if e.Kind == event.AuthFailure {
		l := refLayerOf(e)
		if l == 0 || !e.IP.IsValid() {
			o.next.Publish(ctx, e)
			return
		}
		n := o.attempts(e, l)
		if n == 0 {
			return
		}
		e.Attempts = 0
		if n > 1 {
			e.Attempts = n
		}
	}
	o.next.Publish(ctx, e)
}

// attempts records the attempts e reports at layer l and returns how many of
// them no other layer had reported.
func (o *refOnce) attempts(e event.Event, l layer) int {
	t := e.Time
	// A login summary spans its session ("3 attempts in 18 secs").
	var span time.Duration
	if l == front && e.Source == "dovecot" {
		if _, after, ok := strings.Cut(e.Detail, " in "); ok {
			if secs, _, ok := strings.Cut(after, " sec"); ok {
				if v, err := strconv.Atoi(secs); err == nil && v > 0 {
					span = time.Duration(v) * time.Second
				}
			}
		}
	}
	ip := e.IP.Unmap()
	o.mu.Lock()
	defer o.mu.Unlock()
	if t.After(o.latest) {
		o.latest = t
	}
	if o.latest.Sub(o.rotated) >= keepAttempts {
		o.rotate(false)
	} else if o.Max > 0 && len(o.cur) >= o.Max {
		o.rotate(true)
	}
	p := o.get(ip)
	fresh := 0
	for range e.Count() {
		if p.misses(l) {
			older, newer := p.oldestFirst()
			i := refMatch(older, t, span, l, e.Session)
			if i >= 0 {
				i += p.next
			} else {
				i = refMatch(newer, t, span, l, e.Session)
			}
			if i >= 0 {
				p.list[i].layers |= l
				p.missing[refBit(l)]--
				continue
			}
		}
		fresh++
		// (cloned: a replay's event strings point into a buffer that is
		// reused once the batch is done, ReplayFileTransient)
		p.add(refAttempt{t: t.UnixNano(), layers: l, session: strings.Clone(e.Session)})
	}
	return fresh
}

// rotate starts a new generation, dropping the one before; early when the
// current one reached Max before its time.
func (o *refOnce) rotate(early bool) {
	if early {
		o.dropped.Add(uint64(len(o.prev)))
	}
	if early != o.full && o.Log != nil {
		if early {
			o.Log.Warn("logwatch: failed-login pairing full: forgetting the oldest addresses' attempts early (a line of one of them may count again); raise guard.max_tracked if this is not an attack by that many addresses at once",
				"max_tracked", o.Max)
		} else {
			o.Log.Info("logwatch: failed-login pairing has room again", "max_tracked", o.Max, "dropped", o.dropped.Load())
		}
	}
	o.full = early
	o.prev, o.cur, o.rotated = o.cur, make(map[netip.Addr]*refPending, min(len(o.cur), max(o.Max, 1024))), o.latest
}

// Dropped is how many addresses' attempts were forgotten early because a
// generation reached Max.
func (o *refOnce) Dropped() uint64 { return o.dropped.Load() }

// bit is the index of a layer's bit.
func refBit(l layer) int {
	for b := range 3 {
		if l == 1<<b {
			return b
		}
	}
	return 0
}

// match returns the oldest refAttempt of list that a line of layer l at t
// (summarising a session of span) may report too: not yet reported by l,
// of the same session when both name one (PAM never names it), and within
// pairWindow (beyond the span) when no session ties them.
func refMatch(list []refAttempt, t time.Time, span time.Duration, l layer, session string) int {
	for i, a := range list {
		if a.layers&l != 0 {
			continue
		}
		if session != "" && a.session != "" {
			if a.session == session {
				return i
			}
			continue
		}
		d := time.Duration(t.UnixNano() - a.t)
		if d <= span+pairWindow && d >= -pairWindow {
			return i
		}
	}
	return -1
}

// get returns the attempts of ip, moving them from the previous
// generation (without those older than keepAttempts) or starting afresh.
func (o *refOnce) get(ip netip.Addr) *refPending {
	if p := o.cur[ip]; p != nil {
		return p
	}
	p := o.prev[ip]
	if p != nil {
		delete(o.prev, ip)
		if !p.expire(o.latest.Add(-keepAttempts).UnixNano()) {
			p = nil
		}
	}
	if p == nil {
		p = newRefPending()
	}
	o.cur[ip] = p
	return p
}
