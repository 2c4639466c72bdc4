package guard

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/store"
)

// Open builds the guard of the [guard] section gc over the process's
// stores: bans, failure counters and recent logins in the SQLite database;
// with Redis/Valkey in st, bans mirrored there and failure counters kept
// there (SQLite is the fallback while it is unreachable). site gives the
// networks never banned (config.Site.NeverBan). It opens nothing itself.
func Open(ctx context.Context, gc config.GuardConfig, site *config.Site, log *slog.Logger, st *store.Stores, o Options) (*Guard, error) {
	local, err := NewSQLiteStore(ctx, st.DB)
	if err != nil {
		return nil, err
	}
	counters, err := NewSQLiteCounters(ctx, st.DB)
	if err != nil {
		return nil, err
	}
	o.Config, o.Log, o.Store = gc, log, local
	// The failures are counted in memory while the database cannot be
	// written (its disk full, read-only): every failure was "failure
	// counter unavailable" and nobody was banned.
	localCounters := &FallbackCounters{Primary: counters, Fallback: NewMemoryFor(gc), Health: &store.Health{Log: log,
		DownLine: "guard: the database cannot count failures; counting them in memory until it can",
		BackLine: "guard: failures counted in the database again"}}
	o.Counters, o.Logins = localCounters, counters
	o.Never = append(o.Never, site.NeverBan()...)
	if st.Redis != nil {
		o.Store = NewShared(local, st.Redis, log)
		o.Counters = &FallbackCounters{Primary: st.Redis, Fallback: localCounters, Health: st.Redis.Health}
	}
	g := New(o)
	if err := g.LoadLogins(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

// Start keeps g in step with its store until ctx is done: the changes
// others made every second, and at once when another server announces one
// on r (nil: no Redis). wg tracks the goroutines it starts.
func (g *Guard) Start(ctx context.Context, r *store.Redis, wg *sync.WaitGroup) {
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if sh, ok := g.o.Store.(*Shared); ok {
		wg.Go(func() { sh.Listen(ctx, poke) })
	} else if r != nil {
		wg.Go(func() { r.Subscribe(ctx, func(string) { poke() }) })
	}
	wg.Go(func() { g.Run(ctx, time.Second, wake) })
}
