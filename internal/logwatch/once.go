package logwatch

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/relayguard/relayguard/internal/event"
)

// One failed login can be logged by up to three processes, each on its own
// line:
//
//	PAM (pam_unix)     pam_unix(dovecot:auth): authentication failure; … rhost=192.0.2.7
//	Dovecot's passdb   auth: passwd-file(alice,192.0.2.7): Password mismatch      (auth_verbose = yes)
//	the front end      postfix/smtpd: warning: unknown[192.0.2.7]: SASL PLAIN authentication failed: …
//	                   imap-login: Disconnected (auth failed, 3 attempts in 18 secs): … rip=192.0.2.7, session=<…>
//
// Counted line by line (as fail2ban does), Dovecot SASL behind Postfix with
// auth_verbose = yes gets every attempt counted twice, and attackers and
// users are banned at half the configured count (issue 12 item 9). Once
// pairs the lines of one attempt across these layers, so that it is counted
// once, by the first line that reports it.
type layer uint8

const (
	front  layer = 1 << iota // Postfix's SASL warning, a Dovecot login process
	passdb                   // Dovecot's auth process (auth_verbose)
	pam                      // PAM's own line
)

// layerOf says which layer logged an auth_failure; 0: a source that logs
// each attempt once (relayguard's own server and log).
func layerOf(e *event.Event) layer {
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

const (
	// pairWindow is how far apart in time two lines of one attempt may be
	// when no session id ties them: the front end logs a failure after
	// Dovecot's auth_failure_delay (2 s by default, at most 15 s useful).
	pairWindow = 30 * time.Second
	// keepAttempts is how long an attempt waits for the other layers: a
	// Dovecot login process summarises its session's failures only when
	// the client disconnects (after at most login_timeout-like minutes).
	keepAttempts = 5 * time.Minute
	// maxPending bounds the attempts remembered per address: the lines of
	// one attempt come within seconds of each other, so a few dozen recent
	// attempts are enough to pair them even under a fast guesser.
	maxPending = 32
)

// attempt is one failed login, with the layers that have reported it.
type attempt struct {
	t       int64 // Unix nanoseconds
	session string
	layers  layer
}

// pending are the recent attempts of one address, and how many of them
// each layer has not reported yet: a line of a layer that no attempt
// misses (Postfix's warnings without auth_verbose, the common case) is
// counted without a scan.
type pending struct {
	list    []attempt // at most maxPending; when full, a ring whose oldest is list[next]
	next    int
	missing [3]int32   // by layer bit
	inline  [2]attempt // list's first home: most addresses make an attempt or two
}

func newPending() *pending {
	p := &pending{}
	p.list = p.inline[:0]
	return p
}

// reset makes p as newPending's (keeping its list's room) for another
// address, and lets go of its sessions.
func (p *pending) reset() *pending {
	clear(p.list)
	p.list, p.next, p.missing = p.list[:0], 0, [3]int32{}
	return p
}

// expire forgets the attempts before cut (Unix nanoseconds); it reports
// whether any are left.
func (p *pending) expire(cut int64) bool {
	var ring [maxPending]attempt
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

// add remembers a, forgetting the oldest attempt when full.
func (p *pending) add(a attempt) {
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
func (p *pending) oldestFirst() ([]attempt, []attempt) { return p.list[p.next:], p.list[:p.next] }

// count adds d to the missing counts of the layers a attempt lacks.
func (p *pending) count(layers layer, d int32) {
	for b := range p.missing {
		if layers&(1<<b) == 0 {
			p.missing[b] += d
		}
	}
}

func (p *pending) misses(l layer) bool { return p.missing[bit(l)] > 0 }

// Once passes events on to a sink, turning the lines that several layers
// log for one failed login into one auth_failure: a line that reports an
// attempt another layer has already reported (the same address, the same
// session id when both name one, close enough in time) is dropped, and a
// login process's summary of N attempts stands for those not yet reported.
// Lines from different files may arrive in any order: the pairing is by the
// lines' own timestamps. Other events pass unchanged. It is safe for
// concurrent use (every source of a watch shares one).
type Once struct {
	next event.Sink

	// Max bounds the addresses of a generation (guard.max_tracked; 0: no
	// bound): one that reaches it is rotated at once, dropping the
	// generation before (memory: at most twice Max addresses, ~150 bytes
	// each). What is dropped is only the pairing of lines: a line whose
	// attempt was forgotten counts again, so a flood of addresses can make
	// the guard count more, never less. Log gets a notice when that
	// starts, and when rotations are back to every keepAttempts.
	Max int
	Log *slog.Logger
	// Reuse keeps the attempts of the addresses a rotation drops (and the
	// dropped generation's table) for the next new addresses, instead of
	// leaving them to the collector and allocating afresh: a replay of a
	// long log (the report) starts hundreds of thousands of addresses, one
	// allocation each, and each rotation made a new table. What is kept is
	// at most one generation's worth, held until reused; the guard leaves
	// it off (its memory bound, bench/guard/memory.sh). Pairing is the same
	// either way. Set it before the first event.
	Reuse bool
	// dropped counts the addresses forgotten by an early rotation.
	dropped atomic.Uint64
	full    bool

	// The addresses' attempts in two generations: cur, and prev, the
	// generation before the last rotation (every keepAttempts of event
	// time). An address found in prev moves to cur; one not seen for two
	// generations is dropped with prev, so that memory follows the recent
	// attackers without a sweep over all of them.
	mu        sync.Mutex
	cur, prev map[netip.Addr]*pending
	latest    time.Time // latest event time seen
	rotated   time.Time // event time of the last rotation
	// last is the address get returned last, and lastP its attempts in
	// cur (nil after a rotation): the lines of one login (a passdb line
	// per attempt, then the login process's summary) come one after the
	// other, and a map lookup was a cache miss on a botnet's log.
	last  netip.Addr
	lastP *pending
	// Reuse: free are the attempts of dropped addresses, reset when
	// reused; curList and prevList the attempts put in cur and prev while
	// each was the current generation. An address moved on from prev has
	// its attempts copied into others (move), so a rotation frees the whole
	// of prevList without reading it: a walk of the dropped table instead
	// was a walk of its whole room, and one of prevList that read each
	// address's attempts a cache miss each.
	free              []*pending
	curList, prevList []*pending
	// Reuse: the sessions of cur's attempts are copied into the chunks of
	// curSess (sess: the one being filled), prev's are in prevSess's; a
	// rotation hands prevSess's to freeSess, as their attempts are dropped
	// (or were moved, their sessions copied again): no allocation per
	// attempt (a Dovecot login's lines each name a session).
	sess                        []byte
	curSess, prevSess, freeSess [][]byte
	chunk                       int // the chunks' size (0: sessChunk; tests: a few bytes, so that chunks are reused)
}

// NewOnce returns a Once that publishes to next.
func NewOnce(next event.Sink) *Once {
	return &Once{next: next, cur: map[netip.Addr]*pending{}, prev: map[netip.Addr]*pending{}}
}

// Publish implements event.Sink.
func (o *Once) Publish(ctx context.Context, e event.Event) {
	if o.Pair(&e) {
		o.next.Publish(ctx, e)
	}
}

// Pair does to e, in place, what Publish does before passing an event on,
// and reports whether Publish would pass it on: an auth_failure whose
// attempts other layers have all reported is dropped; else its Attempts
// is set to the number of attempts it is the first to report (0 for one).
// Other events pass unchanged. (The report calls it with the event it
// parsed instead of copying the ~200-byte event through Publish and the
// sink.)
func (o *Once) Pair(e *event.Event) bool {
	if e.Kind != event.AuthFailure {
		return true
	}
	l := layerOf(e)
	if l == 0 || !e.IP.IsValid() {
		return true
	}
	n := o.attempts(e, l)
	if n == 0 {
		return false
	}
	e.Attempts = 0
	if n > 1 {
		e.Attempts = n
	}
	return true
}

// attempts records the attempts e reports at layer l and returns how many of
// them no other layer had reported.
func (o *Once) attempts(e *event.Event, l layer) int {
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
	// A rotation is due when latest has moved keepAttempts past the last
	// one: asked only when latest moves (after each event it is not due:
	// checked, or just done), and latest moves only when t is not latest
	// itself (most events of a log share their second with the one before).
	due := false
	if t != o.latest && t.After(o.latest) {
		o.latest = t
		due = o.latest.Sub(o.rotated) >= keepAttempts
	}
	if due {
		o.rotate(false)
	} else if o.Max > 0 && len(o.cur) >= o.Max {
		o.rotate(true)
	}
	p := o.get(ip)
	fresh := 0
	for range max(e.Attempts, 1) { // (e.Count(): a copy of the ~200-byte event)
		if p.misses(l) {
			older, newer := p.oldestFirst()
			i := match(older, t, span, l, e.Session)
			if i >= 0 {
				i += p.next
			} else {
				i = match(newer, t, span, l, e.Session)
			}
			if i >= 0 {
				p.list[i].layers |= l
				p.missing[bit(l)]--
				continue
			}
		}
		fresh++
		// (cloned: a replay's event strings point into a buffer that is
		// reused once the batch is done, ReplayFileTransient)
		p.add(attempt{t: t.UnixNano(), layers: l, session: o.keepSession(e.Session)})
	}
	return fresh
}

// rotate starts a new generation, dropping the one before; early when the
// current one reached Max before its time.
func (o *Once) rotate(early bool) {
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
	o.lastP = nil
	var next map[netip.Addr]*pending
	if o.Reuse {
		o.free = append(o.free, o.prevList...)
		clear(o.prevList) // (no pointer kept twice)
		o.prevList, o.curList = o.curList, o.prevList[:0]
		o.freeSess = append(o.freeSess, o.prevSess...)
		o.prevSess, o.curSess, o.sess = o.curSess, o.prevSess[:0], nil
		clear(o.prev)
		next = o.prev
	} else {
		next = make(map[netip.Addr]*pending, min(len(o.cur), max(o.Max, 1024)))
	}
	o.prev, o.cur, o.rotated = o.cur, next, o.latest
}

// sessChunk is the size of the chunks Reuse copies sessions into.
const sessChunk = 4096

// keepSession returns a copy of an attempt's session (the event's points
// into a line, in a buffer a replay reuses).
func (o *Once) keepSession(s string) string {
	if s == "" || !o.Reuse {
		return strings.Clone(s)
	}
	if cap(o.sess)-len(o.sess) < len(s) {
		size := o.chunk
		if size == 0 {
			size = sessChunk
		}
		if n := len(o.freeSess); n > 0 && len(s) <= size {
			o.sess, o.freeSess = o.freeSess[n-1][:0], o.freeSess[:n-1]
		} else {
			o.sess = make([]byte, 0, max(size, len(s)))
		}
		o.curSess = append(o.curSess, o.sess)
	}
	start := len(o.sess)
	o.sess = append(o.sess, s...)
	return unsafe.String(&o.sess[start], len(s))
}

// Dropped is how many addresses' attempts were forgotten early because a
// generation reached Max.
func (o *Once) Dropped() uint64 { return o.dropped.Load() }

// bit is the index of a layer's bit.
func bit(l layer) int {
	for b := range 3 {
		if l == 1<<b {
			return b
		}
	}
	return 0
}

// match returns the oldest attempt of list that a line of layer l at t
// (summarising a session of span) may report too: not yet reported by l,
// of the same session when both name one (PAM never names it), and within
// pairWindow (beyond the span) when no session ties them.
func match(list []attempt, t time.Time, span time.Duration, l layer, session string) int {
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
func (o *Once) get(ip netip.Addr) *pending {
	if o.lastP != nil && o.last == ip {
		return o.lastP
	}
	p := o.cur[ip]
	if p == nil {
		p = o.move(ip)
	}
	o.last, o.lastP = ip, p
	return p
}

// move returns the attempts of ip, not in cur, moved there from the
// previous generation or new.
func (o *Once) move(ip netip.Addr) *pending {
	p := o.prev[ip]
	if p != nil {
		delete(o.prev, ip)
		if !p.expire(o.latest.Add(-keepAttempts).UnixNano()) {
			p = nil
		} else if o.Reuse {
			// (copied into attempts of cur's generation, their sessions
			// into cur's chunks: p and prev's chunks are reused after the
			// next rotation)
			q := o.fresh()
			q.list, q.next, q.missing = append(q.list, p.list...), p.next, p.missing
			for i := range q.list {
				q.list[i].session = o.keepSession(q.list[i].session)
			}
			p = q
		}
	}
	if p == nil {
		p = o.fresh()
	}
	if o.Reuse {
		o.curList = append(o.curList, p)
	}
	o.cur[ip] = p
	return p
}

// fresh returns attempts for an address new to cur: with Reuse, a
// dropped address's, reset (here, not when dropped: the attempts are read
// and written now anyway).
func (o *Once) fresh() *pending {
	if n := len(o.free); n > 0 {
		p := o.free[n-1]
		o.free[n-1], o.free = nil, o.free[:n-1]
		return p.reset()
	}
	return newPending()
}
