package guard

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/store"
)

// NeverBan lists the networks the guard must never ban: mynetworks and the
// server's own addresses (the interface addresses when own_addresses is
// empty). guard.allow is added by New.
func NeverBan(cfg *config.Config) []netip.Prefix {
	out, _ := config.ParsePrefixes(cfg.MyNetworks)
	own := cfg.OwnAddresses
	if len(own) == 0 {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					own = append(own, n.IP.String())
				}
			}
		}
	}
	for _, a := range own {
		if p, err := config.ParsePrefix(a); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Open builds the guard of the configuration over the process's stores:
// bans, failure counters and recent logins in the SQLite database; with
// Redis/Valkey in st, bans mirrored there and failure counters kept there
// (SQLite is the fallback while it is unreachable). It opens nothing itself.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger, st *store.Stores, o Options) (*Guard, error) {
	local, err := NewSQLiteStore(ctx, st.DB)
	if err != nil {
		return nil, err
	}
	counters, err := NewSQLiteCounters(ctx, st.DB)
	if err != nil {
		return nil, err
	}
	o.Config, o.Log, o.Store = cfg.Guard, log, local
	o.Counters, o.Logins = counters, counters
	o.Never = append(o.Never, NeverBan(cfg)...)
	if st.Redis != nil {
		o.Store = NewShared(local, st.Redis, log)
		o.Counters = &FallbackCounters{Primary: st.Redis, Fallback: counters, Health: st.Redis.Health}
	}
	g := New(o)
	if err := g.LoadLogins(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

// Start keeps g in step with its store until ctx is done: a Sync every
// second, and at once when another server announces a ban change on r (nil:
// no Redis). wg tracks the goroutines it starts.
func (g *Guard) Start(ctx context.Context, r *store.Redis, wg *sync.WaitGroup) {
	wake := make(chan struct{}, 1)
	if r != nil {
		wg.Go(func() {
			r.Subscribe(ctx, func(string) {
				select {
				case wake <- struct{}{}:
				default:
				}
			})
		})
	}
	wg.Go(func() { g.Run(ctx, time.Second, wake) })
}
