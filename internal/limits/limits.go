// Package limits holds relayguard's in-process rate limiters. AuthLimiter
// counts failed AUTH attempts over several prefix sizes at once (the address
// itself and the surrounding IPv4 /24 and /16, IPv6 /64 and /48), each with
// its own per-minute and per-day caps, so that a botnet spreading its guesses
// over one network is limited as a whole.
//
// Windows are fixed (aligned to multiples of the period): one counter per
// key and window, which a shared store (Redis INCR + EXPIRE) does in one
// round trip. A client can at most double a cap across a window boundary.
package limits

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// Window is one cap: at most Max events per Period (Max 0: no cap).
type Window struct {
	Period time.Duration
	Max    int64
}

// Level is the caps for one prefix size of one address family.
type Level struct {
	IPv6    bool
	Bits    int
	Windows []Window
}

// Counter counts events per key in fixed windows. Incr adds one to the
// window containing now and returns the new count; Get returns the count.
type Counter interface {
	Incr(ctx context.Context, key string, period time.Duration, now time.Time) (int64, error)
	Get(ctx context.Context, key string, period time.Duration, now time.Time) (int64, error)
}

// AuthLimiter limits failed AUTH attempts per address and per prefix.
type AuthLimiter struct {
	Levels  []Level
	Counter Counter
	Now     func() time.Time
	Log     *slog.Logger
}

// NewAuthLimiter returns a limiter over levels, counting in c (a *Memory if
// nil).
func NewAuthLimiter(levels []Level, c Counter, log *slog.Logger) *AuthLimiter {
	if c == nil {
		c = NewMemory()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &AuthLimiter{Levels: levels, Counter: c, Now: time.Now, Log: log}
}

func key(p netip.Prefix, w Window) string {
	return fmt.Sprintf("auth:%s:%d", p, int64(w.Period/time.Second))
}

// levels returns the prefixes of ip that have caps, with their level.
func (l *AuthLimiter) each(ip netip.Addr, f func(p netip.Prefix, w Window) bool) {
	ip = ip.Unmap()
	for _, lv := range l.Levels {
		if lv.IPv6 != ip.Is6() || lv.Bits > ip.BitLen() {
			continue
		}
		p, err := ip.Prefix(lv.Bits)
		if err != nil {
			continue
		}
		for _, w := range lv.Windows {
			if w.Max <= 0 || w.Period <= 0 {
				continue
			}
			if !f(p, w) {
				return
			}
		}
	}
}

// Allowed reports whether ip may try AUTH now. On a counter error it allows
// (the store is down; bans still apply) and logs.
func (l *AuthLimiter) Allowed(ctx context.Context, ip netip.Addr) (bool, string) {
	now := l.Now()
	ok, reason := true, ""
	l.each(ip, func(p netip.Prefix, w Window) bool {
		n, err := l.Counter.Get(ctx, key(p, w), w.Period, now)
		if err != nil {
			l.Log.Warn("limits: counter unavailable", "err", err)
			return true
		}
		if n >= w.Max {
			ok = false
			reason = fmt.Sprintf("too many failed AUTH attempts from %s (%d in %s), try again later", p, n, w.Period)
			l.Log.Info("limit bites: auth failures", "client", ip, "prefix", p.String(), "count", n, "max", w.Max, "window", w.Period.String())
			return false
		}
		return true
	})
	return ok, reason
}

// Fail counts one failed AUTH attempt from ip at every level.
func (l *AuthLimiter) Fail(ctx context.Context, ip netip.Addr) {
	now := l.Now()
	l.each(ip, func(p netip.Prefix, w Window) bool {
		if _, err := l.Counter.Incr(ctx, key(p, w), w.Period, now); err != nil {
			l.Log.Warn("limits: counter unavailable", "err", err)
		}
		return true
	})
}

// Memory is a Counter in process memory.
type Memory struct {
	mu    sync.Mutex
	m     map[string]bucket
	sweep time.Time
}

type bucket struct {
	window int64 // window number: now / period
	n      int64
	expire time.Time
}

// NewMemory returns an empty in-memory counter.
func NewMemory() *Memory { return &Memory{m: map[string]bucket{}} }

// Incr implements Counter.
func (m *Memory) Incr(_ context.Context, key string, period time.Duration, now time.Time) (int64, error) {
	win := now.UnixNano() / int64(period)
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.m[key]
	if b.window != win {
		b = bucket{window: win}
	}
	b.n++
	b.expire = time.Unix(0, (win+1)*int64(period))
	m.m[key] = b
	if now.Sub(m.sweep) > time.Minute {
		for k, b := range m.m {
			if now.After(b.expire) {
				delete(m.m, k)
			}
		}
		m.sweep = now
	}
	return b.n, nil
}

// Get implements Counter.
func (m *Memory) Get(_ context.Context, key string, period time.Duration, now time.Time) (int64, error) {
	win := now.UnixNano() / int64(period)
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.m[key]; ok && b.window == win {
		return b.n, nil
	}
	return 0, nil
}

// FallbackCounter counts in Primary (a shared store such as Redis) and, when
// Primary fails, in Fallback (process memory), so that the AUTH limits go on
// biting while the shared store is unreachable instead of letting every
// attempt through. Health is the shared store's (store.Redis.Health): after
// a failure of any state kind on it, Primary is left alone for its Retry, so
// that a store that times out does not slow every AUTH command. Counts made
// in Fallback are not carried over to Primary when it returns.
type FallbackCounter struct {
	Primary, Fallback Counter
	Health            *store.Health // nil: Primary is tried on every call
}

// NewFallbackCounter returns a FallbackCounter over primary with an
// in-memory fallback.
func NewFallbackCounter(primary Counter, h *store.Health) *FallbackCounter {
	return &FallbackCounter{Primary: primary, Fallback: NewMemory(), Health: h}
}

// Incr implements Counter.
func (f *FallbackCounter) Incr(ctx context.Context, key string, period time.Duration, now time.Time) (int64, error) {
	return store.Try(f.Health,
		func() (int64, error) { return f.Primary.Incr(ctx, key, period, now) },
		func() (int64, error) { return f.Fallback.Incr(ctx, key, period, now) })
}

// Get implements Counter.
func (f *FallbackCounter) Get(ctx context.Context, key string, period time.Duration, now time.Time) (int64, error) {
	return store.Try(f.Health,
		func() (int64, error) { return f.Primary.Get(ctx, key, period, now) },
		func() (int64, error) { return f.Fallback.Get(ctx, key, period, now) })
}
