package guard

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// Shared is the BanStore of a server that shares bans through Redis/Valkey.
// Every change is written to the local store first (so the server keeps its
// last known bans when Redis is down, even across a restart) and then to
// Redis; a change Redis did not take is remembered in the local store
// (PendingStore), so that it survives a restart and is also seen by the
// long-running server when a short-lived `relayguard ban` made it. ListBans
// resynchronises: the pending changes are written to Redis first; when Redis
// lost its data (a new epoch), the local bans are pushed back; then the local
// store is made equal to Redis.
//
// Redis that comes back from an older snapshot (RDB persistence after a
// crash, a backup, a lagging replica promoted) keeps its epoch but lost the
// changes made since. Every change raises Redis's change counter (seq, see
// store.Redis.Epoch); the server remembers the highest value it saw (its
// own changes' and ListBans's, saved with the epoch by EpochStore), and a
// counter lower than that, or an own change that got a value not above it,
// means a rollback: the server replaces the epoch (RotateEpoch), so that
// every server pushes its bans back as after a loss
// (TestSharedRedisRolledBack). The price, chosen over lifting bans: a lift
// lost in the rollback may come back, until the ban's own end.
//
// A running server learns the others' changes incrementally (ChangeFeed):
// the announcements on the bans channel carry the ban (Listen queues them)
// and the local database's change feed carries those of other processes on
// this host; the whole list is read (ListBans) only at start, after the
// subscription was interrupted (pub/sub delivers at most once), after
// Redis failed, and rarely as a safety net (guard.ResyncEvery).
type Shared struct {
	Local  BanStore
	Remote *store.Redis
	Log    *slog.Logger

	origin string // this server's announcements, skipped when they come back
	// rw lets PutBan and DeleteBan run together but not during ListBans,
	// whose reads of the local store and of Redis must not straddle one.
	rw sync.RWMutex

	mu    sync.Mutex
	epoch string
	dirty bool
	// seq is the highest change counter seen in epoch (0 before the first
	// ListBans); saved/savedSeq what EpochStore holds; rolled is set
	// when an own change saw Redis's counter go back.
	seq, savedSeq int64
	saved         string
	rolled        bool
	// subs counts the subscription's confirmations; synced is its value
	// when ListBans last read Redis: they differ after a reconnection.
	subs, synced uint64
	in           []Change // announced by other servers, not applied yet
}

// maxQueued bounds the announcements waiting for the guard: past it they
// are dropped and the whole list is read instead.
const maxQueued = 1 << 20

// NewShared returns a Shared store.
func NewShared(local BanStore, remote *store.Redis, log *slog.Logger) *Shared {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Shared{Local: local, Remote: remote, Log: log, origin: newOrigin()}
}

// Listen queues the other servers' announcements until ctx is done,
// calling wake after each (Guard.Start wires it to Run).
func (s *Shared) Listen(ctx context.Context, wake func()) {
	s.Remote.SubscribeBans(ctx, func(msg string) {
		m, err := store.ParseBanMessage(msg)
		s.mu.Lock()
		switch {
		case err != nil:
			s.Log.Warn("guard: unreadable ban announcement; reading the whole list", "err", err)
			s.subs++ // forces a resynchronisation
		case m.Origin == s.origin:
			s.mu.Unlock()
			return
		case m.Resync: // another server pushed its bans back
			s.subs++
		case len(s.in) >= maxQueued:
			s.in, s.subs = nil, s.subs+1
		default:
			c := Change{Ban: m.Ban, Delete: m.Delete}
			c.Ban.Prefix = m.Prefix
			s.in = append(s.in, c)
		}
		s.mu.Unlock()
		wake()
	}, func() {
		s.mu.Lock()
		s.subs++
		s.mu.Unlock()
		wake()
	})
}

// Cursor implements ChangeFeed (the local database's).
func (s *Shared) Cursor(ctx context.Context) (int64, error) {
	f, ok := s.Local.(ChangeFeed)
	if !ok {
		return 0, nil
	}
	return f.Cursor(ctx)
}

// Changes implements ChangeFeed: the announcements queued by Listen (written
// to the local store in one transaction), then the local database's changes
// made by other processes. ErrResync when the subscription was
// interrupted, Redis failed and is worth trying again, or changes wait to
// be written to Redis (ListBans does all three).
func (s *Shared) Changes(ctx context.Context, after int64) ([]Change, int64, error) {
	f, ok := s.Local.(ChangeFeed)
	if !ok {
		return nil, after, ErrResync
	}
	s.mu.Lock()
	// (while Redis is unreachable the local feed goes on: the whole list
	// is read once it may be tried again)
	resync := (s.subs != s.synced || s.dirty) && s.Remote.Health.Usable()
	in := s.in
	s.in = nil
	s.mu.Unlock()
	if resync {
		return nil, after, ErrResync
	}
	if err := s.saveSeq(ctx); err != nil {
		return nil, after, err
	}
	if ps, ok := s.Local.(PendingStore); ok && s.Remote.Health.Usable() {
		pending, err := ps.ListPending(ctx)
		if err != nil {
			return nil, after, err
		}
		if len(pending) > 0 {
			return nil, after, ErrResync
		}
	}
	if len(in) > 0 {
		if err := s.applyLocal(ctx, in); err != nil {
			return nil, after, err
		}
	}
	local, next, err := f.Changes(ctx, after)
	if err != nil {
		return nil, after, err
	}
	return append(in, local...), next, nil
}

// applyLocal writes changes learnt from Redis to the local store.
func (s *Shared) applyLocal(ctx context.Context, cs []Change) error {
	if a, ok := s.Local.(interface {
		Apply(context.Context, []Change) error
	}); ok {
		return a.Apply(ctx, cs)
	}
	for _, c := range cs {
		var err error
		if c.Delete {
			err = s.Local.DeleteBan(ctx, c.Ban.Prefix)
		} else {
			err = s.Local.PutBan(ctx, c.Ban)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// saveSeq writes the change counter seen by this server's own changes to
// the EpochStore (at most once per call of the sync loop, not once per ban).
func (s *Shared) saveSeq(ctx context.Context) error {
	es, ok := s.Local.(EpochStore)
	if !ok {
		return nil
	}
	s.rw.RLock() // not during ListBans, which may replace the epoch
	defer s.rw.RUnlock()
	s.mu.Lock()
	epoch, seq, write := s.epoch, s.seq, s.epoch != "" && s.seq > s.savedSeq && s.epoch == s.saved
	s.mu.Unlock()
	if !write {
		return nil
	}
	if err := es.SetSharedEpoch(ctx, epoch, seq); err != nil {
		return err
	}
	s.mu.Lock()
	if s.saved == epoch {
		s.savedSeq = max(s.savedSeq, seq)
	}
	s.mu.Unlock()
	return nil
}

// before is the change counter seen before an own change is sent to Redis.
func (s *Shared) before() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// saw records the change counter n an own change got. Not above the value
// seen before the change was sent means Redis went back (concurrent own
// changes may complete out of order, hence before and not the maximum).
func (s *Shared) saw(before, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == "" {
		s.seq = max(s.seq, n)
		return
	}
	if n <= before {
		if !s.rolled {
			s.Log.Warn("guard: the shared store's change counter went back: it rolled back to an older snapshot; bans will be pushed back", "counter", n, "seen", before)
		}
		s.rolled, s.dirty = true, true
		return
	}
	s.seq = max(s.seq, n)
}

func (s *Shared) lost(err error) {
	s.Remote.Health.Failed(err)
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
}

// reachable reports whether Redis may be tried now (it has not failed
// lately, for any state kind); when not, the store is marked out of step.
func (s *Shared) reachable() bool {
	if s.Remote.Health.Usable() {
		return true
	}
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
	return false
}

// PutBan implements BanStore.
func (s *Shared) PutBan(ctx context.Context, b Ban) error {
	s.rw.RLock()
	defer s.rw.RUnlock()
	if err := s.Local.PutBan(ctx, b); err != nil {
		// The database cannot be written (its disk full): the other
		// servers get the ban all the same, and the guard enforces it
		// here (decide). It wrote nothing to Redis before.
		if s.reachable() {
			seen := s.before()
			if n, rerr := s.Remote.PutBanFrom(ctx, b, s.origin); rerr != nil {
				s.lost(rerr)
			} else {
				s.saw(seen, n)
			}
		}
		return err
	}
	if !s.reachable() {
		return s.pend(ctx, Pending{Prefix: b.Prefix})
	}
	seen := s.before()
	n, err := s.Remote.PutBanFrom(ctx, b, s.origin)
	if err != nil {
		s.lost(err)
		return s.pend(ctx, Pending{Prefix: b.Prefix})
	}
	s.saw(seen, n)
	return nil
}

// DeleteBan implements BanStore.
func (s *Shared) DeleteBan(ctx context.Context, p netip.Prefix) error {
	s.rw.RLock()
	defer s.rw.RUnlock()
	if err := s.Local.DeleteBan(ctx, p); err != nil {
		return err
	}
	if !s.reachable() {
		return s.pend(ctx, Pending{Prefix: p, Delete: true})
	}
	seen := s.before()
	n, err := s.Remote.DeleteBanFrom(ctx, p, s.origin)
	if err != nil {
		s.lost(err)
		return s.pend(ctx, Pending{Prefix: p, Delete: true})
	}
	s.saw(seen, n)
	return nil
}

// pend remembers a change Redis did not take.
func (s *Shared) pend(ctx context.Context, p Pending) error {
	if ps, ok := s.Local.(PendingStore); ok {
		return ps.AddPending(ctx, p)
	}
	return nil
}

// flushPending writes the remembered changes to Redis.
func (s *Shared) flushPending(ctx context.Context, local []Ban) error {
	ps, ok := s.Local.(PendingStore)
	if !ok {
		return nil
	}
	pending, err := ps.ListPending(ctx)
	if err != nil || len(pending) == 0 {
		return err
	}
	rs, rounds := s.Local.(RoundStore)
	var db string
	var round int64
	if rounds {
		if db, round, err = rs.PendingRounds(ctx); err != nil {
			return err
		}
		done, err := s.Remote.PendingRounds(ctx, db)
		if err != nil {
			return err
		}
		if done > round {
			// This database was restored from a backup (or copied): its
			// pending changes were written in a round since, and other
			// changes may have followed them; writing them again would
			// undo those (TestSharedRestoredDatabaseReplaysStalePending).
			if err := ps.ClearPending(ctx, pending...); err != nil {
				return err
			}
			s.Log.Warn("guard: pending changes already written by this database before (restored from a backup?) dropped", "changes", len(pending), "round", round+1, "written", done)
			return rs.SetPendingRounds(ctx, done)
		}
	}
	start := time.Now()
	have := make(map[netip.Prefix]Ban, len(local))
	for _, b := range local {
		have[b.Prefix] = b
	}
	// the additions in pipelined round trips, announced as one "sync"
	var puts []Ban
	for _, p := range pending {
		if b, ok := have[p.Prefix]; ok && !p.Delete {
			puts = append(puts, b)
		}
	}
	if len(puts) > 0 {
		if _, err := s.Remote.PutBans(ctx, puts, s.origin); err != nil {
			return err
		}
	}
	for _, p := range pending {
		if p.Delete {
			if _, err := s.Remote.DeleteBanFrom(ctx, p.Prefix, s.origin); err != nil {
				return err
			}
		}
	}
	if rounds {
		if err := s.Remote.SetPendingRounds(ctx, db, round+1); err != nil {
			return err
		}
		if err := rs.SetPendingRounds(ctx, round+1); err != nil {
			return err
		}
	}
	if err := ps.ClearPending(ctx, pending...); err != nil {
		return err
	}
	s.Log.Info("guard: changes made while the shared store was unreachable written to it", "changes", len(pending), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// BanCount implements BanStore: the larger of the local and shared history.
func (s *Shared) BanCount(ctx context.Context, p netip.Prefix) (int, error) {
	n, err := s.Local.BanCount(ctx, p)
	if err != nil {
		return 0, err
	}
	if !s.reachable() {
		return n, nil
	}
	if m, err := s.Remote.BanCount(ctx, p); err == nil {
		n = max(n, m)
	} else {
		s.lost(err)
	}
	return n, nil
}

// ListBans implements BanStore (and resynchronises, see Shared).
func (s *Shared) ListBans(ctx context.Context) ([]Ban, error) {
	s.rw.Lock()
	defer s.rw.Unlock()
	local, err := s.Local.ListBans(ctx)
	if err != nil {
		return nil, err
	}
	if !s.reachable() {
		return local, nil
	}
	s.mu.Lock()
	subs := s.subs
	s.mu.Unlock()
	epoch, seq, err := s.Remote.Epoch(ctx)
	if err != nil {
		s.lost(err)
		return local, nil
	}
	if err := s.flushPending(ctx, local); err != nil {
		s.lost(err)
		return local, nil
	}
	s.mu.Lock()
	first := s.epoch == ""
	known, knownSeq, rolled := s.epoch, s.seq, s.rolled
	// Push every local ban when Redis lost its data set (a new epoch).
	// Changes this server made while Redis was unreachable were written
	// by flushPending; pushing all its bans for them would bring back a
	// ban another server lifted meanwhile. Without a PendingStore the
	// local bans are pushed after an outage, as the best left to do.
	_, tracked := s.Local.(PendingStore)
	moved := epoch != s.epoch
	push := (s.dirty && !tracked) || (!first && moved)
	s.mu.Unlock()
	es, remembers := s.Local.(EpochStore)
	saved, savedSeq := "", int64(0)
	if first && remembers {
		if saved, savedSeq, err = es.SharedEpoch(ctx); err != nil {
			return nil, err
		}
		known, knownSeq = saved, max(knownSeq, savedSeq)
		s.mu.Lock()
		s.saved, s.savedSeq = saved, savedSeq
		s.mu.Unlock()
	}
	if known != "" && epoch == known && (rolled || seq < knownSeq) {
		// The data set this server knew, older: Redis came back from a
		// snapshot taken before changes this server saw. A new epoch
		// makes every server push its bans back, as after a loss.
		if epoch, err = s.Remote.RotateEpoch(ctx, epoch); err != nil {
			s.lost(err)
			return local, nil
		}
		s.Log.Warn("guard: the shared store rolled back to an older snapshot (its change counter went back); pushing the bans back", "counter", seq, "seen", knownSeq)
		moved, push = true, true
	}
	switch {
	case push:
	case first && saved != "" && saved != epoch:
		// First contact since a start, and Redis is not the data set this
		// server last synchronised with: it lost it, and the other servers
		// may be refilling it. Their list is not complete: adopting it
		// would lift the bans they have not pushed yet
		// (TestSharedStartAfterRedisLostItsData).
		push = true
	case first && saved == "":
		// First contact ever (or before the epoch was remembered): adopt
		// the shared bans, unless the data set is empty, which is Redis
		// having lost it.
		if n, err := s.Remote.C.HLen(ctx, s.Remote.Prefix+"bans").Result(); err == nil && n == 0 {
			push = true
		}
	}
	// (else the data set this server knew: adopt it, with the bans
	// another server lifted while this one was not running)
	if push {
		if _, err := s.Remote.PutBans(ctx, local, s.origin); err != nil {
			s.lost(err)
			return local, nil
		}
		s.Log.Info("guard: shared store synchronised", "pushed", len(local))
	}
	remote, err := s.Remote.ListBans(ctx)
	if err != nil {
		s.lost(err)
		return local, nil
	}
	// The counter seen: seq is a lower bound of Redis's now (the writes
	// since only raised it); in a data set this server knew, it keeps the
	// highest it saw.
	if epoch == known {
		seq = max(seq, knownSeq)
	}
	s.mu.Lock()
	write := remembers && (epoch != s.saved || seq != s.savedSeq)
	s.epoch, s.seq, s.rolled, s.dirty, s.synced = epoch, seq, false, false, subs
	s.mu.Unlock()
	if write {
		if err := es.SetSharedEpoch(ctx, epoch, seq); err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.saved, s.savedSeq = epoch, seq
		s.mu.Unlock()
	}
	s.Remote.Health.Succeeded()
	// Mirror Redis into the local store.
	have := make(map[netip.Prefix]Ban, len(local))
	for _, b := range local {
		have[b.Prefix] = b
	}
	seen := make(map[netip.Prefix]bool, len(remote))
	var diff []Change
	for _, b := range remote {
		seen[b.Prefix] = true
		if o, ok := have[b.Prefix]; !ok || o != b {
			diff = append(diff, Change{Ban: b})
		}
	}
	for p := range have {
		if !seen[p] {
			diff = append(diff, Change{Ban: Ban{Prefix: p}, Delete: true})
		}
	}
	if len(diff) > 0 {
		if err := s.applyLocal(ctx, diff); err != nil {
			return nil, err
		}
	}
	return remote, nil
}

// FallbackCounters uses Primary (Redis) and, while it fails, Fallback
// (the SQLite counters), so that decisions go on when the shared store is down. Health is
// the shared store's (store.Redis.Health): after a failure of any state kind
// on it, Primary is left alone for its Retry, so that a Redis that times out
// does not cost every log line a network timeout.
//
// What Fallback counted meanwhile is remembered (at most MaxWriteBack
// records, the oldest dropped first) and written to Primary before its
// first use once it works again: left in Fallback, those failures were
// lost to the count, and an attacker whose guesses straddled the end of
// an outage got up to maxretry-1 more.
type FallbackCounters struct {
	Primary, Fallback Counters
	Health            *store.Health // nil: Primary is tried on every call

	mu      sync.Mutex
	pending []counted // counted by Fallback, not yet by Primary
}

// MaxWriteBack bounds what FallbackCounters remembers of an outage (about
// 90 bytes a record, and one call of Primary each to write back).
const MaxWriteBack = 20_000

// counted is one call Fallback took: a failure of ip, or (prefix valid) ip
// failing inside prefix.
type counted struct {
	ip     netip.Addr
	prefix netip.Prefix
	t      time.Time
	w      time.Duration
}

// note remembers a call Fallback took.
func (f *FallbackCounters) note(c counted) {
	f.mu.Lock()
	if len(f.pending) >= MaxWriteBack {
		f.pending = slices.Delete(f.pending, 0, len(f.pending)/10)
	}
	f.pending = append(f.pending, c)
	f.mu.Unlock()
}

// writeBack gives Primary what Fallback counted; on an error what is left
// stays for the next try. The records are taken out under the lock and
// written without it: holding it for up to MaxWriteBack calls of Primary
// (seconds against a remote Redis) stalled every counting call once an
// outage ended (breaker10). A failure counted meanwhile goes to Primary at
// once: counts add up in any order.
func (f *FallbackCounters) writeBack(ctx context.Context) error {
	f.mu.Lock()
	todo := f.pending
	f.pending = nil
	f.mu.Unlock()
	now := time.Now()
	for i, c := range todo {
		if !c.t.Add(c.w).After(now) {
			continue // out of its window: it counts no more
		}
		var err error
		if c.prefix.IsValid() {
			_, err = f.Primary.AddAttacker(ctx, c.prefix, c.ip, c.t, c.w)
		} else {
			_, err = f.Primary.AddFailure(ctx, c.ip, c.t, c.w)
		}
		if err != nil {
			f.mu.Lock()
			// (the unwritten first, then what Fallback took meanwhile;
			// the oldest dropped past the bound, as note does)
			f.pending = append(todo[i:], f.pending...)
			if n := len(f.pending) - MaxWriteBack; n > 0 {
				f.pending = slices.Delete(f.pending, 0, n)
			}
			f.mu.Unlock()
			return err
		}
	}
	return nil
}

func (f *FallbackCounters) primary(ctx context.Context, op func() (int, error)) func() (int, error) {
	return func() (int, error) {
		f.mu.Lock()
		behind := len(f.pending) > 0
		f.mu.Unlock()
		if behind {
			if err := f.writeBack(ctx); err != nil {
				return 0, err
			}
		}
		return op()
	}
}

// AddFailure implements Counters.
func (f *FallbackCounters) AddFailure(ctx context.Context, ip netip.Addr, t time.Time, w time.Duration) (int, error) {
	return store.Try(f.Health,
		f.primary(ctx, func() (int, error) { return f.Primary.AddFailure(ctx, ip, t, w) }),
		func() (int, error) {
			f.note(counted{ip: ip, t: t, w: w})
			return f.Fallback.AddFailure(ctx, ip, t, w)
		})
}

// AddAttacker implements Counters.
func (f *FallbackCounters) AddAttacker(ctx context.Context, p netip.Prefix, ip netip.Addr, t time.Time, w time.Duration) (int, error) {
	return store.Try(f.Health,
		f.primary(ctx, func() (int, error) { return f.Primary.AddAttacker(ctx, p, ip, t, w) }),
		func() (int, error) {
			f.note(counted{ip: ip, prefix: p, t: t, w: w})
			return f.Fallback.AddAttacker(ctx, p, ip, t, w)
		})
}

// Forget implements Counters.
func (f *FallbackCounters) Forget(ctx context.Context, ip netip.Addr) error {
	_ = f.Fallback.Forget(ctx, ip)
	f.mu.Lock()
	f.pending = slices.DeleteFunc(f.pending, func(c counted) bool { return !c.prefix.IsValid() && c.ip == ip })
	f.mu.Unlock()
	if !f.Health.Usable() {
		return nil
	}
	return f.Primary.Forget(ctx, ip)
}
