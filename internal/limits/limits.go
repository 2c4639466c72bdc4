// Package limits holds relayguard's in-process rate limiters. AuthLimiter
// counts failed AUTH attempts over several prefix sizes at once (the address
// itself and the surrounding IPv4 /24 and /16, IPv6 /64 and /48), each with
// its own per-minute and per-day caps, so that a botnet spreading its guesses
// over one network is limited as a whole — without locking out the
// neighbours of a guesser:
//
//   - An attempt is counted before its credentials are checked (Reserve), so
//     that a burst of concurrent attempts cannot pass a cap; a success takes
//     its count back, and an attempt refused by a cap is never counted: only
//     failures fill the windows.
//   - Windows roll: a cap is over the last Period, not over a calendar
//     minute or UTC day (see Counter for how it is estimated).
//   - A prefix cap bites only on an address that itself failed within that
//     cap's window, and never on an address from which an account logged in
//     successfully recently: an address with no failures is never refused
//     because of what its neighbours did. The address's own cap applies
//     always.
package limits

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// Window is one cap: at most Max failures within the last Period (Max 0:
// counted, no cap).
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

// Counter counts events per key in fixed buckets of a period (the bucket
// of at is at/period). Add adds delta (negative to take back an earlier
// Add made with the same at) to key's bucket of at and returns that
// bucket's count and the count of the bucket before it.
//
// From the two the limiter estimates the count over the rolling window
// ending at at: the current bucket plus the previous one weighted by the
// part of it still inside the window (the sliding-window estimate of
// Cloudflare's rate limiter). It is exact when events are spread evenly
// over the previous bucket, never lets a client double a cap across a
// bucket boundary as fixed windows do, and costs one round trip to a
// shared store (Redis INCRBY + GET in one pipeline).
type Counter interface {
	Add(ctx context.Context, key string, period time.Duration, at time.Time, delta int64) (cur, prev int64, err error)
}

// Estimate is the rolling count over the period ending at at, from the
// bucket pair Counter.Add returned.
func Estimate(cur, prev int64, period time.Duration, at time.Time) float64 {
	into := at.UnixNano() % int64(period)
	if into < 0 {
		into += int64(period)
	}
	w := 1 - float64(into)/float64(period)
	return float64(max(cur, 0)) + float64(max(prev, 0))*w
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

// Exceeded is the refusal of an attempt: a cap is reached. Nothing was
// counted for the refused attempt.
type Exceeded struct {
	Prefix netip.Prefix
	Count  int64 // failures in the window before this attempt (rounded estimate)
	Max    int64
	Period time.Duration
}

func (e *Exceeded) Error() string {
	return fmt.Sprintf("too many failed AUTH attempts from %s (%d in %s), try again later", e.Prefix, e.Count, e.Period)
}

// Value describes the cap that bit, for the "limit reached" log line.
func (e *Exceeded) Value() string {
	return strconv.FormatInt(e.Max, 10) + " per " + e.Period.String() + " for " + e.Prefix.String()
}

// counted is one Add made for a reservation.
type counted struct {
	key    string
	period time.Duration
}

// Reservation is an AUTH attempt counted as a failure before its
// credentials were checked. End it once with the outcome.
type Reservation struct {
	l     *AuthLimiter
	at    time.Time
	keys  []counted
	ended bool
	mu    sync.Mutex
}

// End ends the attempt. failed keeps it counted; otherwise (the login
// succeeded, the credential store failed, the client left before
// answering) its count is taken back. A nil Reservation is a no-op.
func (r *Reservation) End(ctx context.Context, failed bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return
	}
	r.ended = true
	if !failed {
		r.l.release(ctx, r.at, r.keys)
	}
}

func (l *AuthLimiter) release(ctx context.Context, at time.Time, keys []counted) {
	for _, k := range keys {
		if _, _, err := l.Counter.Add(ctx, k.key, k.period, at, -1); err != nil {
			l.Log.Warn("limits: counter unavailable", "key", k.key, "err", err)
		}
	}
}

func key(p netip.Prefix, period time.Duration) string {
	return "auth:" + p.String() + ":" + strconv.FormatInt(int64(period/time.Second), 10)
}

// Reserve counts one AUTH attempt from ip as a failure before its
// credentials are checked, and returns it to be ended with its outcome.
// recent says that an account logged in successfully from ip recently (the
// guard's success grace): the prefix caps neither bite on it nor count its
// attempts. When a cap is reached it counts nothing and returns an
// *Exceeded. A counter error is logged and lets the attempt through (the
// shared store is down and its fallback failed too; bans still apply).
func (l *AuthLimiter) Reserve(ctx context.Context, ip netip.Addr, recent bool) (*Reservation, error) {
	ip = ip.Unmap()
	r := &Reservation{l: l, at: l.Now()}
	host := netip.PrefixFrom(ip, ip.BitLen())
	// The address's own failures are counted for every period a level of
	// its family uses, so that each prefix cap can ask whether the address
	// itself failed within that cap's window.
	var periods []time.Duration
	var hostCaps, prefixCaps []Level
	for _, lv := range l.Levels {
		if lv.IPv6 != ip.Is6() || lv.Bits > ip.BitLen() || lv.Bits < 0 {
			continue
		}
		for _, w := range lv.Windows {
			if w.Period > 0 && !slices.Contains(periods, w.Period) {
				periods = append(periods, w.Period)
			}
		}
		if lv.Bits == ip.BitLen() {
			hostCaps = append(hostCaps, lv)
		} else {
			prefixCaps = append(prefixCaps, lv)
		}
	}
	own := map[time.Duration]float64{} // the address's failures before this attempt
	for _, period := range periods {
		k := key(host, period)
		cur, prev, err := l.Counter.Add(ctx, k, period, r.at, 1)
		if err != nil {
			l.Log.Warn("limits: counter unavailable", "key", k, "err", err)
			continue
		}
		r.keys = append(r.keys, counted{k, period})
		own[period] = Estimate(cur-1, prev, period, r.at)
	}
	for _, lv := range hostCaps {
		for _, w := range lv.Windows {
			if n, ok := own[w.Period]; ok && w.Max > 0 && n+1 > float64(w.Max) {
				return nil, l.refuse(ctx, r, ip, host, n, w)
			}
		}
	}
	if recent {
		return r, nil
	}
	for _, lv := range prefixCaps {
		p, err := ip.Prefix(lv.Bits)
		if err != nil {
			continue
		}
		for _, w := range lv.Windows {
			if w.Period <= 0 {
				continue
			}
			k := key(p, w.Period)
			cur, prev, err := l.Counter.Add(ctx, k, w.Period, r.at, 1)
			if err != nil {
				l.Log.Warn("limits: counter unavailable", "key", k, "err", err)
				continue
			}
			r.keys = append(r.keys, counted{k, w.Period})
			// An address that did not fail within the window itself is
			// not refused for its neighbours' failures.
			failedItself := own[w.Period] >= 0.5
			if n := Estimate(cur, prev, w.Period, r.at); failedItself && w.Max > 0 && n > float64(w.Max) {
				return nil, l.refuse(ctx, r, ip, p, n-1, w)
			}
		}
	}
	return r, nil
}

// refuse takes back what r counted and returns the refusal.
func (l *AuthLimiter) refuse(ctx context.Context, r *Reservation, ip netip.Addr, p netip.Prefix, n float64, w Window) error {
	l.release(ctx, r.at, r.keys)
	e := &Exceeded{Prefix: p, Count: int64(n + 0.5), Max: w.Max, Period: w.Period}
	l.Log.Info("limits: AUTH refused", "client", ip, "prefix", p.String(), "count", e.Count, "max", w.Max, "window", w.Period.String())
	return e
}

// Memory is a Counter in process memory.
type Memory struct {
	mu    sync.Mutex
	m     map[string]*buckets
	sweep time.Time
}

// buckets are the two newest buckets of one key.
type buckets struct {
	period    time.Duration
	n         int64 // bucket number of cur
	cur, prev int64
}

// NewMemory returns an empty in-memory counter.
func NewMemory() *Memory { return &Memory{m: map[string]*buckets{}} }

// Add implements Counter.
func (m *Memory) Add(_ context.Context, key string, period time.Duration, at time.Time, delta int64) (int64, int64, error) {
	n := at.UnixNano() / int64(period)
	m.mu.Lock()
	defer m.mu.Unlock()
	if at.Sub(m.sweep) > time.Minute {
		m.sweepLocked(at)
	}
	b := m.m[key]
	if b == nil {
		b = &buckets{period: period, n: n}
		m.m[key] = b
	}
	switch {
	case n == b.n:
		b.cur += delta
		return b.cur, b.prev, nil
	case n == b.n-1: // taking back a reservation made in the bucket before
		b.prev += delta
		return b.prev, 0, nil
	case n < b.n:
		return 0, 0, nil // older than both buckets: nothing left to change
	case n == b.n+1:
		b.prev, b.cur = b.cur, 0
	default:
		b.prev, b.cur = 0, 0
	}
	b.n, b.cur = n, b.cur+delta
	return b.cur, b.prev, nil
}

// sweepLocked drops keys whose buckets are both out of every window.
func (m *Memory) sweepLocked(at time.Time) {
	for k, b := range m.m {
		if at.UnixNano()/int64(b.period) > b.n+1 {
			delete(m.m, k)
		}
	}
	m.sweep = at
}

// Len is the number of keys held (for tests of the sweep).
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
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

// Add implements Counter.
func (f *FallbackCounter) Add(ctx context.Context, key string, period time.Duration, at time.Time, delta int64) (int64, int64, error) {
	type pair struct{ cur, prev int64 }
	p, err := store.Try(f.Health,
		func() (pair, error) { c, p, err := f.Primary.Add(ctx, key, period, at, delta); return pair{c, p}, err },
		func() (pair, error) { c, p, err := f.Fallback.Add(ctx, key, period, at, delta); return pair{c, p}, err })
	return p.cur, p.prev, err
}
