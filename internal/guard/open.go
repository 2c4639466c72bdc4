package guard

import (
	"context"
	"log/slog"
	"net"
	"net/netip"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/store"
)

// Env is a guard with the stores the configuration names.
type Env struct {
	Guard  *Guard
	Redis  *store.Redis // nil without [store] url
	Shared bool
	close  func()
}

// Close closes the stores.
func (e *Env) Close() { e.close() }

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

// Open opens the ban store named by the configuration: the embedded
// SQLite database, mirrored to Redis/Valkey when [store] url is redis://.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) (*Env, error) {
	db, err := store.OpenSQLite(ctx, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	local, err := NewSQLiteStore(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	env := &Env{close: func() { db.Close() }}
	o.Config, o.Log, o.Store = cfg.Guard, log, local
	o.Never = append(o.Never, NeverBan(cfg)...)
	if cfg.Store.URL != "" {
		r, err := store.OpenRedis(ctx, cfg.Store.URL)
		if r == nil {
			db.Close()
			return nil, err
		}
		if err != nil {
			log.Warn("shared store unreachable at start; using local bans until it returns", "err", err)
		}
		env.Redis, env.Shared = r, true
		o.Store = NewShared(local, r, log)
		o.Counters = &FallbackCounters{Primary: r, Fallback: NewMemory(), Log: log}
		env.close = func() { r.Close(); db.Close() }
	}
	env.Guard = New(o)
	return env, nil
}
