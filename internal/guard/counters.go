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
	attackers map[netip.Prefix]map[netip.Addr]time.Time
	sweep     time.Time
	maxWindow time.Duration
}

// NewMemory returns empty in-memory counters.
func NewMemory() *Memory {
	return &Memory{failures: map[netip.Addr][]time.Time{}, attackers: map[netip.Prefix]map[netip.Addr]time.Time{}}
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
	set := m.attackers[p]
	if set == nil {
		set = map[netip.Addr]time.Time{}
		m.attackers[p] = set
	}
	set[ip] = t
	cut := t.Add(-window)
	n := 0
	for a, last := range set {
		if last.After(cut) {
			n++
		} else {
			delete(set, a)
		}
	}
	return n, nil
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
		for a, last := range set {
			if !last.After(cut) {
				delete(set, a)
			}
		}
		if len(set) == 0 {
			delete(m.attackers, p)
		}
	}
	m.sweep = t
}
