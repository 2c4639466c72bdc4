package accounts

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// NewStore returns the accounts' state of the process's stores: SQLite
// alone, or, with [store] url, Redis shared by the cluster with SQLite as
// the fallback (Shared).
func NewStore(ctx context.Context, st *store.Stores, keep time.Duration, log *slog.Logger) (Store, error) {
	local, err := NewSQLStore(ctx, st.DB, keep)
	if err != nil {
		return nil, err
	}
	if st.Redis == nil {
		return local, nil
	}
	return NewShared(ctx, local, NewRedisStore(st.Redis, keep), st.Redis.Health, log)
}

// Shared keeps the accounts' state in Redis so that every server of a
// cluster sees the same logins, failures, volumes and suspensions. While
// Redis is unreachable (its Health says so) every operation runs on the
// local SQLite state instead: detection goes on with what this server saw.
// Suspensions are also written locally, always, and a suspension or
// unsuspension Redis did not take is remembered (accounts_pending) and
// written to Redis when it returns, so that no node misses it for longer
// than the outage. Queue ids are tied to one host's queue and stay local.
type Shared struct {
	local  *SQLStore
	remote *RedisStore
	health *store.Health
	log    *slog.Logger

	mu    sync.Mutex  // held while the pending changes are written
	dirty atomic.Bool // there may be pending changes

	// backlog is what the local state took while Redis was down (logins,
	// failures, volumes, outcomes), written to Redis once it is back
	// (catchUp): left local, the cluster's login spread, guessing,
	// volume and bad-recipient counts started afresh after an outage.
	blMu    sync.Mutex
	backlog []func(context.Context) error
}

// maxBacklog bounds Shared.backlog (the oldest tenth is dropped when full).
const maxBacklog = 20_000

// behind remembers op, taken by the local state only, for Redis.
func (s *Shared) behind(op func(context.Context) error) {
	s.blMu.Lock()
	if len(s.backlog) >= maxBacklog {
		s.backlog = slices.Delete(s.backlog, 0, maxBacklog/10)
	}
	s.backlog = append(s.backlog, op)
	s.blMu.Unlock()
}

// catchUp writes the backlog to Redis when it is usable; on an error the
// rest waits for the next try.
func (s *Shared) catchUp(ctx context.Context) {
	s.blMu.Lock()
	defer s.blMu.Unlock()
	if len(s.backlog) == 0 || !s.health.Usable() {
		return
	}
	for i, op := range s.backlog {
		if err := op(ctx); err != nil {
			s.health.Failed(err)
			s.backlog = slices.Delete(s.backlog, 0, i)
			return
		}
	}
	s.log.Info("accounts: what was seen while the shared store was down written to it", "operations", len(s.backlog))
	s.backlog = nil
}

// NewShared returns the shared state with local as the fallback.
func NewShared(ctx context.Context, local *SQLStore, remote *RedisStore, h *store.Health, log *slog.Logger) (*Shared, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, q := range []string{`CREATE TABLE IF NOT EXISTS accounts_pending (user TEXT PRIMARY KEY)`,
		`CREATE TABLE IF NOT EXISTS accounts_epoch (epoch TEXT NOT NULL)`} {
		if _, err := local.db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("accounts: creating tables: %w", err)
		}
	}
	s := &Shared{local: local, remote: remote, health: h, log: log}
	s.dirty.Store(true)
	return s, nil
}

// Remote is the Redis state (for announcements).
func (s *Shared) Remote() *RedisStore { return s.remote }

// Health is the shared backend's health.
func (s *Shared) Health() *store.Health { return s.health }

func try[R any](s *Shared, ctx context.Context, remote, local func() (R, error)) (R, error) {
	s.resync(ctx)
	s.catchUp(ctx)
	return store.Try(s.health, remote, local)
}

// resync writes the suspension changes Redis missed.
func (s *Shared) resync(ctx context.Context) {
	if !s.dirty.Load() || !s.health.Usable() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty.Load() {
		return
	}
	rows, err := s.local.db.QueryContext(ctx, `SELECT user FROM accounts_pending`)
	if err != nil {
		s.log.Error("accounts: resync", "err", err)
		return
	}
	var users []string
	for rows.Next() {
		var u string
		if rows.Scan(&u) == nil {
			users = append(users, u)
		}
	}
	rows.Close()
	for _, u := range users {
		sp, ok, err := s.local.Suspended(ctx, u)
		if err != nil {
			return
		}
		if ok {
			_, err = s.remote.Suspend(ctx, sp)
		} else {
			_, _, err = s.remote.Unsuspend(ctx, u)
		}
		if err != nil {
			s.health.Failed(err)
			return
		}
		s.local.db.ExecContext(ctx, `DELETE FROM accounts_pending WHERE user = ?`, u)
		s.log.Info("accounts: suspension change written to the shared store after an outage", "user", u, "suspended", ok)
	}
	s.dirty.Store(false)
}

func (s *Shared) pend(ctx context.Context, user string, err error) {
	if err != nil {
		s.health.Failed(err)
	}
	s.dirty.Store(true)
	if _, e := s.local.db.ExecContext(ctx, `INSERT OR IGNORE INTO accounts_pending (user) VALUES (?)`, key(user)); e != nil {
		s.log.Error("accounts: remembering a suspension change for the shared store", "user", user, "err", e)
	}
}

// AddLogin implements Store.
func (s *Shared) AddLogin(ctx context.Context, user string, n netip.Prefix, t time.Time, w time.Duration) ([]netip.Prefix, error) {
	s.local.AddLogin(ctx, user, n, t, w) // known networks survive an outage
	return try(s, ctx, func() ([]netip.Prefix, error) { return s.remote.AddLogin(ctx, user, n, t, w) },
		func() ([]netip.Prefix, error) {
			s.behind(func(ctx context.Context) error { _, err := s.remote.AddLogin(ctx, user, n, t, w); return err })
			return s.local.AddLogin(ctx, user, n, t, w)
		})
}

// Forgive implements Store, here and in the cluster.
func (s *Shared) Forgive(ctx context.Context, user string, t time.Time) error {
	if err := s.local.Forgive(ctx, user, t); err != nil {
		return err
	}
	_, err := try(s, ctx, func() (bool, error) { return true, s.remote.Forgive(ctx, user, t) }, func() (bool, error) { return true, nil })
	return err
}

// KnownNetwork implements Store: known on this server or in the cluster.
func (s *Shared) KnownNetwork(ctx context.Context, user string, n netip.Prefix, since time.Time) (bool, error) {
	if ok, err := s.local.KnownNetwork(ctx, user, n, since); ok || err != nil {
		return ok, err
	}
	return try(s, ctx, func() (bool, error) { return s.remote.KnownNetwork(ctx, user, n, since) },
		func() (bool, error) { return false, nil })
}

// LoggedIn implements Store.
func (s *Shared) LoggedIn(ctx context.Context, user string) (bool, error) {
	if ok, err := s.local.LoggedIn(ctx, user); ok || err != nil {
		return ok, err
	}
	return try(s, ctx, func() (bool, error) { return s.remote.LoggedIn(ctx, user) }, func() (bool, error) { return false, nil })
}

// AddFailure implements Store.
func (s *Shared) AddFailure(ctx context.Context, user string, ip netip.Addr, t time.Time, w time.Duration) (int, error) {
	return try(s, ctx, func() (int, error) { return s.remote.AddFailure(ctx, user, ip, t, w) },
		func() (int, error) {
			s.behind(func(ctx context.Context) error { _, err := s.remote.AddFailure(ctx, user, ip, t, w); return err })
			return s.local.AddFailure(ctx, user, ip, t, w)
		})
}

// Failures implements Store.
func (s *Shared) Failures(ctx context.Context, user string, since time.Time) (int, error) {
	return try(s, ctx, func() (int, error) { return s.remote.Failures(ctx, user, since) },
		func() (int, error) { return s.local.Failures(ctx, user, since) })
}

// AddSent implements Store.
func (s *Shared) AddSent(ctx context.Context, user string, hour time.Time, n int64) (int64, error) {
	return try(s, ctx, func() (int64, error) { return s.remote.AddSent(ctx, user, hour, n) },
		func() (int64, error) {
			s.behind(func(ctx context.Context) error { _, err := s.remote.AddSent(ctx, user, hour, n); return err })
			return s.local.AddSent(ctx, user, hour, n)
		})
}

// PeakHour implements Store.
func (s *Shared) PeakHour(ctx context.Context, user string, from, to time.Time) (int64, error) {
	return try(s, ctx, func() (int64, error) { return s.remote.PeakHour(ctx, user, from, to) },
		func() (int64, error) { return s.local.PeakHour(ctx, user, from, to) })
}

// AddOutcome implements Store.
func (s *Shared) AddOutcome(ctx context.Context, user string, start time.Time, w time.Duration, bad bool) (int64, int64, error) {
	type pair struct{ t, b int64 }
	p, err := try(s, ctx, func() (pair, error) {
		t, b, err := s.remote.AddOutcome(ctx, user, start, w, bad)
		return pair{t, b}, err
	},
		func() (pair, error) {
			s.behind(func(ctx context.Context) error {
				_, _, err := s.remote.AddOutcome(ctx, user, start, w, bad)
				return err
			})
			t, b, err := s.local.AddOutcome(ctx, user, start, w, bad)
			return pair{t, b}, err
		})
	return p.t, p.b, err
}

// TieQueueID implements Store (local: queue ids belong to one host).
func (s *Shared) TieQueueID(ctx context.Context, host, user, qid string, t time.Time) error {
	return s.local.TieQueueID(ctx, host, user, qid, t)
}

// QueueUser implements Store (local).
func (s *Shared) QueueUser(ctx context.Context, host, qid string) (string, bool, error) {
	return s.local.QueueUser(ctx, host, qid)
}

// QueueIDs implements Store (local).
func (s *Shared) QueueIDs(ctx context.Context, host, user string, since time.Time) ([]string, error) {
	return s.local.QueueIDs(ctx, host, user, since)
}

// Suspend implements Store: locally, then in Redis (announced), or
// remembered for Redis.
func (s *Shared) Suspend(ctx context.Context, sp Suspension) (bool, error) {
	s.resync(ctx)
	created, err := s.local.Suspend(ctx, sp)
	if err != nil {
		return false, err
	}
	if !s.health.Usable() {
		s.pend(ctx, sp.User, nil)
		return created, nil
	}
	rc, err := s.remote.Suspend(ctx, sp)
	if err != nil {
		s.pend(ctx, sp.User, err)
		return created, nil
	}
	s.health.Succeeded()
	return rc, nil
}

// Unsuspend implements Store.
func (s *Shared) Unsuspend(ctx context.Context, user string) (Suspension, bool, error) {
	s.resync(ctx)
	lsp, lok, err := s.local.Unsuspend(ctx, user)
	if err != nil {
		return Suspension{}, false, err
	}
	if !s.health.Usable() {
		s.pend(ctx, user, nil)
		return lsp, lok, nil
	}
	rsp, rok, err := s.remote.Unsuspend(ctx, user)
	if err != nil {
		s.pend(ctx, user, err)
		return lsp, lok, nil
	}
	s.health.Succeeded()
	if rok {
		return rsp, true, nil
	}
	return lsp, lok, nil
}

// Suspended implements Store: the cluster's answer, or this server's while
// Redis is down. The cluster's answer is copied to the local state (see
// mirror), so that this server's answer during an outage includes the
// suspensions made elsewhere.
func (s *Shared) Suspended(ctx context.Context, user string) (Suspension, bool, error) {
	type r struct {
		sp Suspension
		ok bool
	}
	remote := false
	v, err := try(s, ctx, func() (r, error) {
		sp, ok, err := s.remote.Suspended(ctx, user)
		remote = err == nil
		return r{sp, ok}, err
	},
		func() (r, error) { sp, ok, err := s.local.Suspended(ctx, user); return r{sp, ok}, err })
	if remote {
		lsp, lok, lerr := s.local.Suspended(ctx, user)
		if lerr == nil && lok != v.ok {
			s.mirror(ctx, user, v.sp, v.ok, lsp)
		}
	}
	return v.sp, v.ok, err
}

// mirror makes the local state say what Redis said of user (suspended with
// sp, or not), local being what it said: a server that fell back to its own
// database during an outage let in an account another server had
// suspended, and released its held mail. A change of this server's that
// Redis has not taken yet (accounts_pending) is left alone: it is newer.
func (s *Shared) mirror(ctx context.Context, user string, sp Suspension, suspended bool, local Suspension) {
	var pending int
	if err := s.local.db.QueryRowContext(ctx, `SELECT count(*) FROM accounts_pending WHERE user = ?`, key(user)).Scan(&pending); err != nil || pending > 0 {
		return
	}
	// (the epoch is looked at for a copy too: the first comparison
	// remembers it, so that a later lift is told from a loss)
	if lost := s.redisLost(ctx); lost && !suspended {
		return // (pushed back to Redis instead)
	}
	var err error
	if suspended {
		_, err = s.local.Suspend(ctx, sp)
	} else {
		_, _, err = s.local.Unsuspend(ctx, local.User)
	}
	if err != nil {
		s.log.Warn("accounts: keeping a copy of the cluster's suspensions", "user", user, "suspended", suspended, "err", err)
	}
}

// Suspensions implements Store: the cluster's list, copied to the local
// state (see mirror), or this server's while Redis is down.
func (s *Shared) Suspensions(ctx context.Context) ([]Suspension, error) {
	remote := false
	list, err := try(s, ctx, func() ([]Suspension, error) {
		l, err := s.remote.Suspensions(ctx)
		remote = err == nil
		return l, err
	},
		func() ([]Suspension, error) { return s.local.Suspensions(ctx) })
	if !remote {
		return list, err
	}
	local, lerr := s.local.Suspensions(ctx)
	if lerr != nil {
		return list, nil
	}
	have := make(map[string]Suspension, len(local))
	for _, sp := range local {
		have[key(sp.User)] = sp
	}
	for _, sp := range list {
		if _, ok := have[key(sp.User)]; ok {
			delete(have, key(sp.User))
		} else {
			s.mirror(ctx, sp.User, sp, true, Suspension{})
		}
	}
	if len(have) > 0 && s.redisLost(ctx) {
		return local, nil // (pushed back to Redis: the next read has them)
	}
	for _, sp := range have { // lifted elsewhere
		s.mirror(ctx, sp.User, Suspension{}, false, sp)
	}
	return list, nil
}

// redisLost reports whether Redis may have lost the suspensions since this
// server last compared its copy with them, before a suspension Redis no
// longer has is taken as lifted elsewhere: a Redis restarted empty (no
// persistence, a new instance) or rolled back to an older snapshot said
// "no suspensions" and every server dropped its copy, letting the stolen
// accounts in again (breaker10). Redis's epoch (store.Redis.Epoch, the
// guard's: a new one when Redis lost its data, a rotated one after a
// rollback) is kept in the local database; when it differs from the one
// seen before (or none was, or it cannot be read), every local suspension
// is pushed back to Redis (accounts_pending, written by resync) and none is
// lifted. The price, as for the guard's bans: a lift Redis lost may come
// back until lifted again.
func (s *Shared) redisLost(ctx context.Context) bool {
	e, _, err := s.remote.r.Epoch(ctx)
	if err != nil {
		s.health.Failed(err)
		return true
	}
	var saved string
	if err := s.local.db.QueryRowContext(ctx, `SELECT epoch FROM accounts_epoch`).Scan(&saved); err == nil && saved == e {
		return false
	}
	sps, err := s.local.Suspensions(ctx)
	if err != nil {
		return true
	}
	for _, sp := range sps {
		s.pend(ctx, sp.User, nil)
	}
	_, err = s.local.db.ExecContext(ctx, `DELETE FROM accounts_epoch`)
	if err == nil {
		_, err = s.local.db.ExecContext(ctx, `INSERT INTO accounts_epoch (epoch) VALUES (?)`, e)
	}
	if err != nil {
		s.log.Error("accounts: saving the shared store's epoch", "err", err)
	}
	if len(sps) > 0 {
		s.log.Warn("accounts: the shared store lost suspensions (a new epoch): this server's are written back to it", "suspensions", len(sps))
	}
	return true
}
