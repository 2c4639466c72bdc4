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
// watch and serve count in SQLite or Redis). It is bounded: at most Max
// addresses, and Max prefixes per subnet rule, each a fixed-size record (the
// times of an address's last failures, the last failure of each of a
// prefix's most recent failing addresses), dropped as table describes when
// full. Counting stays exact while nothing is dropped; an address needs only
// its last maxretry (twice that under success_grace) failures and a prefix
// its rule's number of addresses to decide a ban, so records keep no more.
type Memory struct {
	// Log gets one notice when a table fills (records of addresses still
	// inside their window dropped) and one when it has room again.
	Log *slog.Logger

	mu        sync.Mutex
	max       int
	keep      int         // failure times kept per address
	members   map[int]int // addresses kept per prefix, by family*1000+bits
	failures  *table
	prefixes  map[int]*table // by family*1000+bits
	base      int64          // Unix milliseconds of time 0 of the records' uint32 times
	sweep     time.Time
	maxWindow time.Duration
	full      bool
	evicted   atomic.Uint64
}

// DefaultMaxTracked bounds NewMemory's tables ([guard] max_tracked's default).
const DefaultMaxTracked = 100_000

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
	return &Memory{max: maxTracked, keep: keep, members: members, failures: newTable(keep, 1, maxTracked), prefixes: map[int]*table{}}
}

func familyBits(v6 bool, bits int) int {
	if v6 {
		return 1000 + bits
	}
	return bits
}

// Evicted is how many records of addresses or prefixes still inside their
// window were dropped to make room.
func (m *Memory) Evicted() uint64 { return m.evicted.Load() }

// Tracked is how many addresses have failures recorded.
func (m *Memory) Tracked() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failures.len()
}

// at returns t as a record time (milliseconds since m.base), moving the
// base forward when t is beyond what 32 bits reach (every ~49 days of log
// time): times then older than every window become 0.
func (m *Memory) at(t time.Time) int64 {
	ms := t.UnixMilli()
	if m.base == 0 {
		m.base = ms - 1<<31 // room for lines a little out of order
	}
	if ms-m.base >= 1<<32-1 {
		nb := ms - m.maxWindow.Milliseconds() - 1<<20
		d := uint32(nb - m.base)
		m.failures.shift(d)
		for _, p := range m.prefixes {
			p.shift(d)
		}
		m.base = nb
	}
	return max(ms-m.base, 0)
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
	k := ip.Unmap().As16()
	r, ok := m.failures.get(k)
	if !ok {
		var lost bool
		if r, lost = m.failures.add(k, cut); lost {
			m.lost("addresses")
		}
	}
	w := m.failures.rec(r)
	n := int(m.failures.nodes[r].level)
	i := 0
	for i < n && int64(w[i]) <= cut {
		i++
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
	fb := familyBits(p.Addr().Is6(), p.Bits())
	tb := m.prefixes[fb]
	aw := 1 // words of a member's address
	if p.Addr().Is6() {
		aw = 4
	}
	if tb == nil {
		keep := m.members[fb]
		if keep == 0 {
			keep = 64
		}
		tb = newTable(keep*(aw+1), aw+1, m.max)
		m.prefixes[fb] = tb
	}
	k := p.Masked().Addr().As16()
	r, ok := tb.get(k)
	if !ok {
		var lost bool
		if r, lost = tb.add(k, cut); lost {
			m.lost("prefixes")
		}
	}
	var me [5]uint32 // the member: address words, then time
	a := ip.As16()
	for i := range aw {
		o := 16 - 4*aw + 4*i
		me[i] = uint32(a[o])<<24 | uint32(a[o+1])<<16 | uint32(a[o+2])<<8 | uint32(a[o+3])
	}
	me[aw] = uint32(now)
	st := aw + 1
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
	if r, ok := m.failures.get(ip.Unmap().As16()); ok {
		m.failures.drop(r)
	}
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
	room := m.failures.len() < m.max*9/10
	for _, p := range m.prefixes {
		p.sweep(cut)
		room = room && p.len() < m.max*9/10
	}
	if m.full && room {
		m.full = false
		if m.Log != nil {
			m.Log.Info("guard: failure counters have room again", "max_tracked", m.max, "dropped", m.evicted.Load())
		}
	}
	m.sweep = t
}
