package guard

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/config"
)

// Counters count failures per address within findtime and distinct failing
// addresses per prefix within a window. Implemented in memory (Memory) and
// in Redis (store.Redis) for several servers.
type Counters interface {
	// AddFailure records a failure of ip at t and returns the number of
	// its failures in (t-window, t].
	AddFailure(ctx context.Context, ip netip.Addr, t time.Time, window time.Duration) (int, error)
	// AddAttacker records ip as failing inside p at t and returns the
	// number of distinct addresses that failed inside p in (t-window, t].
	AddAttacker(ctx context.Context, p netip.Prefix, ip netip.Addr, t time.Time, window time.Duration) (int, error)
	// Forget drops the failures of ip (after it was banned).
	Forget(ctx context.Context, ip netip.Addr) error
}

// Memory is Counters in process memory (`watch --replay`, tests; the live
// watch and serve count in SQLite or Redis). It is bounded, in two tiers
// per key kind (addresses; the prefixes of each subnet rule):
//
//   - a key's first piece of evidence (an address's one recent failure, a
//     prefix's one recent failing address) is an entry of firsts: 8 bytes
//     (IPv4) or 20 (IPv6), at most FirstsPerTracked × max_tracked of them,
//     the least recently written dropped first;
//   - from its second, a key has a fixed-size record in a table (the times
//     of an address's last failures, the last failure of each of a prefix's
//     most recent failing addresses), at most max_tracked of them, dropped
//     as table describes when full.
//
// A flood of addresses that fail once each touches only firsts: it cannot
// push out an address that failed twice or a prefix with two failing
// addresses, and a prefix's first failing address survives FirstsPerTracked
// × max_tracked first failures of other prefixes. A prefix's record keeps
// its members' addresses, so an address that fails again is not counted
// again, whatever became of its own record. Counting is exact while
// nothing is dropped; a drop only ever loses evidence (a count too low,
// never too high): keys are compared whole, never by hash. An address
// needs only its last maxretry (twice that under success_grace) failures
// and a prefix its rule's number of addresses to decide a ban, so records
// keep no more.
type Memory struct {
	// Log gets one notice when a table fills (records of addresses still
	// inside their window dropped) and one when it has room again.
	Log *slog.Logger

	mu        sync.Mutex
	max       int
	keep      int         // failure times kept per address
	members   map[int]int // addresses kept per prefix, by family*1000+bits
	failures  *table
	first4    *firsts // addresses with one recent failure
	first6    *firsts
	prefixes  map[int]*tiers // by family*1000+bits
	base      int64          // Unix milliseconds of time 0 of the records' uint32 times
	sweep     time.Time
	maxWindow time.Duration
	full      bool
	evicted   atomic.Uint64
}

// tiers is the evidence of one subnet rule's prefixes.
type tiers struct {
	firsts *firsts
	table  *table
}

// DefaultMaxTracked bounds NewMemory's tables ([guard] max_tracked's default).
const DefaultMaxTracked = 100_000

// FirstsPerTracked is how many keys with one piece of evidence are kept
// per max_tracked (their entries are a tenth of a record's size).
const FirstsPerTracked = 10

// NewMemory returns empty in-memory counters with room for the default
// number of addresses, keeping up to 64 failures per address and 64
// addresses per prefix.
func NewMemory() *Memory { return newMemory(DefaultMaxTracked, 64, nil) }

// NewMemoryFor returns empty in-memory counters sized for gc: max_tracked
// addresses and prefixes per subnet rule, the failures maxretry needs
// (twice that with success_grace) and the addresses each subnet rule needs.
func NewMemoryFor(gc config.GuardConfig) *Memory {
	keep := gc.MaxRetry
	if gc.SuccessGrace > 0 {
		keep *= 2
	}
	members := map[int]int{}
	for _, r := range gc.Subnets {
		members[familyBits(r.Family == "ipv6", r.Bits)] = max(members[familyBits(r.Family == "ipv6", r.Bits)], r.Addresses)
	}
	maxTracked := gc.MaxTracked
	if maxTracked == 0 {
		maxTracked = DefaultMaxTracked
	}
	return newMemory(maxTracked, max(keep, 1), members)
}

func newMemory(maxTracked, keep int, members map[int]int) *Memory {
	return &Memory{max: maxTracked, keep: keep, members: members, failures: newTable(keep, 1, maxTracked),
		first4: newFirsts(false, 32, FirstsPerTracked*maxTracked), first6: newFirsts(true, 128, FirstsPerTracked*maxTracked),
		prefixes: map[int]*tiers{}}
}

func familyBits(v6 bool, bits int) int {
	if v6 {
		return 1000 + bits
	}
	return bits
}

// Evicted is how many records or first entries of addresses or prefixes
// still inside their window were dropped to make room.
func (m *Memory) Evicted() uint64 { return m.evicted.Load() }

// Tracked is how many addresses have a record (two failures or more).
func (m *Memory) Tracked() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failures.len()
}

// Firsts is how many addresses have one failure recorded (in firsts).
func (m *Memory) Firsts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.first4.len() + m.first6.len()
}

// at returns t as a record time (milliseconds since m.base), moving the
// base forward when t is beyond what 32 bits reach (every ~49 days of log
// time): times then older than every window become 0 (1 in firsts).
func (m *Memory) at(t time.Time) int64 {
	ms := t.UnixMilli()
	if m.base == 0 {
		m.base = ms - 1<<31 // room for lines a little out of order
	}
	if ms-m.base >= 1<<32-1 {
		nb := ms - m.maxWindow.Milliseconds() - 1<<20
		d := uint32(nb - m.base)
		m.failures.shift(d)
		m.first4.shift(d)
		m.first6.shift(d)
		for _, p := range m.prefixes {
			p.table.shift(d)
			p.firsts.shift(d)
		}
		m.base = nb
	}
	return max(ms-m.base, 1)
}

// lost notes that a live record was dropped, and logs when the tables
// become full.
func (m *Memory) lost(what string) {
	m.evicted.Add(1)
	if !m.full {
		m.full = true
		if m.Log != nil {
			m.Log.Warn("guard: failure counters full: dropping the "+what+" with the fewest recent failures, least recently seen first; raise guard.max_tracked if this is not an attack by that many addresses at once",
				"max_tracked", m.max)
		}
	}
}

// AddFailure implements Counters.
func (m *Memory) AddFailure(_ context.Context, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maybeSweep(t, window)
	now := m.at(t)
	cut := now - window.Milliseconds()
	ip = ip.Unmap()
	fs := m.first4
	if ip.Is6() {
		fs = m.first6
	}
	a := words4(ip)
	k := ip.As16()
	r, ok := m.failures.get(k)
	if !ok {
		_, ft, ok := fs.get(a)
		if !ok || int64(ft) <= cut { // the first recent failure
			if fs.put(a, uint32(now), cut) {
				m.lost("addresses")
			}
			return 1, nil
		}
		// The second: a record, starting with the first.
		fs.remove(a)
		var lost bool
		if r, lost = m.failures.add(k, cut); lost {
			m.lost("addresses")
		}
		m.failures.rec(r)[0] = ft
		m.failures.set(r, 1)
	}
	w := m.failures.rec(r)
	n := int(m.failures.nodes[r].level)
	i := 0
	for i < n && int64(w[i]) <= cut {
		i++
	}
	if i == n { // none left in the window: back to a first failure
		m.failures.drop(r)
		if fs.put(a, uint32(now), cut) {
			m.lost("addresses")
		}
		return 1, nil
	}
	if n-i == len(w) {
		i = 1 // full of recent failures: the oldest goes
	}
	n = copy(w, w[i:n])
	w[n] = uint32(now)
	m.failures.set(r, n+1)
	return n + 1, nil
}

// AddAttacker implements Counters.
func (m *Memory) AddAttacker(_ context.Context, p netip.Prefix, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maybeSweep(t, window)
	now := m.at(t)
	cut := now - window.Milliseconds()
	ip = ip.Unmap()
	v6 := p.Addr().Is6()
	fb := familyBits(v6, p.Bits())
	aw := 1 // words of a member's address
	if v6 {
		aw = 4
	}
	st := aw + 1
	ts := m.prefixes[fb]
	if ts == nil {
		keep := m.members[fb]
		if keep == 0 {
			keep = 64
		}
		ts = &tiers{firsts: newFirsts(v6, p.Bits(), FirstsPerTracked*m.max), table: newTable(keep*st, st, m.max)}
		m.prefixes[fb] = ts
	}
	a := words4(ip)
	var me [5]uint32 // the member: address words, then time
	copy(me[:aw], a[4-aw:])
	me[aw] = uint32(now)
	tb := ts.table
	k := p.Masked().Addr().As16()
	r, ok := tb.get(k)
	if !ok {
		fa, ft, ok := ts.firsts.get(a)
		if !ok || int64(ft) <= cut || fa == a { // the first failing address
			if ts.firsts.put(a, uint32(now), cut) {
				m.lost("prefixes")
			}
			return 1, nil
		}
		// A second address: a record, starting with the first.
		ts.firsts.remove(a)
		var lost bool
		if r, lost = tb.add(k, cut); lost {
			m.lost("prefixes")
		}
		w := tb.rec(r)
		copy(w, fa[4-aw:])
		w[aw] = ft
		tb.set(r, 1)
	}
	w := tb.rec(r)
	n := int(tb.nodes[r].level)
	// Keep the members inside the window, without ip, oldest first; then
	// ip as the newest, dropping the oldest when the record is full.
	kept := 0
	for i := range n {
		e := w[i*st : (i+1)*st]
		if int64(e[aw]) <= cut || slices.Equal(e[:aw], me[:aw]) {
			continue
		}
		copy(w[kept*st:], e)
		kept++
	}
	if kept == 0 { // ip alone in the window: back to a first address
		tb.drop(r)
		if ts.firsts.put(a, uint32(now), cut) {
			m.lost("prefixes")
		}
		return 1, nil
	}
	if kept*st == len(w) {
		copy(w, w[st:])
		kept--
	}
	copy(w[kept*st:], me[:st])
	tb.set(r, kept+1)
	return kept + 1, nil
}

// Forget implements Counters.
func (m *Memory) Forget(_ context.Context, ip netip.Addr) error {
	m.mu.Lock()
	ip = ip.Unmap()
	if r, ok := m.failures.get(ip.As16()); ok {
		m.failures.drop(r)
	}
	m.first4.remove(words4(ip))
	m.first6.remove(words4(ip))
	m.mu.Unlock()
	return nil
}

// maybeSweep drops expired records now and then (every longest window of
// event time) so that memory follows the recent attackers, and notes when
// full tables have room again.
func (m *Memory) maybeSweep(t time.Time, window time.Duration) {
	m.maxWindow = max(m.maxWindow, window)
	if t.Sub(m.sweep) < m.maxWindow {
		return
	}
	cut := m.at(t) - m.maxWindow.Milliseconds()
	m.failures.sweep(cut)
	m.first4.sweep(cut)
	m.first6.sweep(cut)
	room := m.failures.len() < m.max*9/10 && m.first4.len() < m.first4.max*9/10 && m.first6.len() < m.first6.max*9/10
	for _, p := range m.prefixes {
		p.table.sweep(cut)
		p.firsts.sweep(cut)
		room = room && p.table.len() < m.max*9/10 && p.firsts.len() < p.firsts.max*9/10
	}
	if m.full && room {
		m.full = false
		if m.Log != nil {
			m.Log.Info("guard: failure counters have room again", "max_tracked", m.max, "dropped", m.evicted.Load())
		}
	}
	m.sweep = t
}
