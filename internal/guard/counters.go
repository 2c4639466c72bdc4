package guard

import (
	"context"
	"net/netip"
	"sync"
	"time"
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

// Memory is Counters in process memory.
type Memory struct {
	mu        sync.Mutex
	failures  map[netip.Addr][]time.Time
	attackers map[netip.Prefix][]lastFailure
	sweep     time.Time
	maxWindow time.Duration
}

// lastFailure is the last failure of one address inside a prefix. A
// prefix's addresses are a slice, not a map: almost every prefix of a
// botnet holds one or two (a map per prefix cost ~370 bytes per address;
// watch --replay of 1,000,000 addresses failing in 30 minutes peaked at
// 1.36 GB), and AddAttacker visits them all anyway to count.
type lastFailure struct {
	ip   netip.Addr
	last int64 // Unix nanoseconds
}

// NewMemory returns empty in-memory counters.
func NewMemory() *Memory {
	return &Memory{failures: map[netip.Addr][]time.Time{}, attackers: map[netip.Prefix][]lastFailure{}}
}

// AddFailure implements Counters.
func (m *Memory) AddFailure(_ context.Context, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maybeSweep(t, window)
	ts := m.failures[ip]
	cut := t.Add(-window)
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	ts = append(ts[i:], t)
	m.failures[ip] = ts
	return len(ts), nil
}

// AddAttacker implements Counters.
func (m *Memory) AddAttacker(_ context.Context, p netip.Prefix, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maybeSweep(t, window)
	cut := t.Add(-window).UnixNano()
	set, kept, seen := m.attackers[p], 0, false
	for _, f := range set {
		if f.ip == ip {
			f.last, seen = t.UnixNano(), true
		}
		if f.last > cut {
			set[kept] = f
			kept++
		}
	}
	set = set[:kept]
	if !seen && t.UnixNano() > cut {
		set = append(set, lastFailure{ip, t.UnixNano()})
	}
	if len(set) == 0 {
		delete(m.attackers, p)
	} else {
		m.attackers[p] = set
	}
	return len(set), nil
}

// Forget implements Counters.
func (m *Memory) Forget(_ context.Context, ip netip.Addr) error {
	m.mu.Lock()
	delete(m.failures, ip)
	m.mu.Unlock()
	return nil
}

// maybeSweep drops stale entries now and then so memory stays bounded by
// the recent attackers.
func (m *Memory) maybeSweep(t time.Time, window time.Duration) {
	m.maxWindow = max(m.maxWindow, window)
	if t.Sub(m.sweep) < m.maxWindow {
		return
	}
	cut := t.Add(-m.maxWindow)
	for a, ts := range m.failures {
		if len(ts) == 0 || !ts[len(ts)-1].After(cut) {
			delete(m.failures, a)
		}
	}
	for p, set := range m.attackers {
		kept := set[:0]
		for _, f := range set {
			if f.last > cut.UnixNano() {
				kept = append(kept, f)
			}
		}
		if len(kept) == 0 {
			delete(m.attackers, p)
		} else {
			m.attackers[p] = kept
		}
	}
	m.sweep = t
}
