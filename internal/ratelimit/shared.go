package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// NewStore returns the counters of the process's state stores: in the
// embedded SQLite database, or, with [store] url, in Redis/Valkey shared by
// every server with the database as the fallback while Redis is
// unreachable (Shared).
func NewStore(ctx context.Context, st *store.Stores, log *slog.Logger) (Store, error) {
	local, err := NewSQLStore(ctx, st.DB)
	if err != nil {
		return nil, err
	}
	local.SetLogger(log)
	if st.Redis == nil {
		return local, nil
	}
	return NewShared(local, st.Redis, log), nil
}

// Shared keeps the counters in Redis, shared by a pool of servers. While
// Redis is unreachable (its Health says so, whichever state kind noticed)
// the limits go on biting on counts kept in the embedded database; when
// Redis returns, the counts made meanwhile are added to Redis and the
// recipients first seen meanwhile written to it, before anything else is
// counted there (as the guard writes the ban changes of an outage). Counts
// start from zero in the local store during an outage: a user can send up
// to twice a limit across an outage, never less than it. The recipients a
// user has sent to are also kept locally, so that an outage does not make
// every known recipient "new".
type Shared struct {
	remote *RedisStore
	local  *SQLStore
	health *store.Health
	log    *slog.Logger

	// mu is held for writing while the outage's counts are written to
	// Redis, and for reading by every other operation, so that no local
	// count is made while they are being moved.
	mu    sync.RWMutex
	dirty atomic.Bool // local holds counts or recipients Redis does not have
}

// NewShared returns the shared counters in r with local as the fallback.
// Counts left in local (by an outage before a restart, or by a server that
// ran without Redis before) are written to Redis first.
func NewShared(local *SQLStore, r *store.Redis, log *slog.Logger) *Shared {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Shared{remote: NewRedisStore(r), local: local, health: r.Health, log: log}
	s.dirty.Store(true)
	return s
}

// resync writes what was counted locally to Redis, if Redis may be tried.
func (s *Shared) resync(ctx context.Context) {
	if !s.dirty.Load() || !s.health.Usable() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty.Load() {
		return
	}
	counters, err := s.local.counters(ctx, time.Now())
	if err != nil {
		s.log.Error("ratelimit: resync", "err", err)
		return
	}
	for _, c := range counters {
		if _, err := s.remote.Add(ctx, c.key, c.start, c.window, c.count); err != nil {
			s.health.Failed(err)
			return
		}
		if err := s.local.deleteCounter(ctx, c); err != nil {
			s.log.Error("ratelimit: resync", "err", err)
			return
		}
	}
	pending, err := s.local.pending(ctx)
	if err != nil {
		s.log.Error("ratelimit: resync", "err", err)
		return
	}
	for _, p := range pending {
		if err := s.remote.MarkSeen(ctx, p[0], p[1], time.Time{}); err != nil {
			s.health.Failed(err)
			return
		}
		if err := s.local.clearPending(ctx, p[0], p[1]); err != nil {
			s.log.Error("ratelimit: resync", "err", err)
			return
		}
	}
	s.health.Succeeded()
	s.dirty.Store(false)
	if len(counters)+len(pending) > 0 {
		s.log.Info("ratelimit: counts made while the shared store was unreachable written to it",
			"counters", len(counters), "recipients", len(pending))
	}
}

// Flush commits the counts made in the embedded database (SQLStore.Flush).
func (s *Shared) Flush() { s.local.Flush() }

// Add implements Store.
func (s *Shared) Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error) {
	s.resync(ctx)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return store.Try(s.health,
		func() (int64, error) { return s.remote.Add(ctx, key, start, window, n) },
		func() (int64, error) { s.dirty.Store(true); return s.local.Add(ctx, key, start, window, n) })
}

// Seen implements Store.
func (s *Shared) Seen(ctx context.Context, user, rcpt string) (bool, error) {
	s.resync(ctx)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return store.Try(s.health,
		func() (bool, error) { return s.remote.Seen(ctx, user, rcpt) },
		func() (bool, error) { return s.local.Seen(ctx, user, rcpt) })
}

// MarkSeen implements Store.
func (s *Shared) MarkSeen(ctx context.Context, user, rcpt string, at time.Time) error {
	s.resync(ctx)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.local.MarkSeen(ctx, user, rcpt, at); err != nil {
		return err
	}
	_, err := store.Try(s.health,
		func() (struct{}, error) { return struct{}{}, s.remote.MarkSeen(ctx, user, rcpt, at) },
		func() (struct{}, error) { s.dirty.Store(true); return struct{}{}, s.local.addPending(ctx, user, rcpt) })
	return err
}
