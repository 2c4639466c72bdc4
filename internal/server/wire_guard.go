package server

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
)

// wireGuard connects the guard to the SMTP server: bans refuse clients
// before the banner, per-address and per-prefix AUTH failure limits apply,
// AUTH outcomes from the event bus feed the decisions, and (if enabled)
// POP-before-SMTP permits relay. The firewall is left to `relayguard watch`.
// Each ban decided is published on the bus (event.Banned) for the
// console's charts. The returned function stops the guard's goroutines
// and waits for them.
func wireGuard(ctx context.Context, cfg *config.Config, log *slog.Logger, st *store.Stores, bus *event.Bus, deps *smtpd.Deps, reg prometheus.Registerer) (*guard.Guard, func(), error) {
	g, err := guard.Open(ctx, cfg.Guard, cfg.Site, log, st, guard.Options{OnBan: banEvents(ctx, bus)})
	if err != nil {
		return nil, nil, err
	}
	if st.Redis != nil {
		// AUTH failure limits and the per-client rates shared by every
		// server; counted locally while Redis is unreachable, so that the
		// limits keep biting.
		c := limits.NewFallbackCounter(st.Redis, st.Redis.Health)
		guard.UseLimitCounter(g, c)
		deps.Counter = c
	}
	bus.Subscribe(g)
	deps.Guard = g
	if cfg.Guard.PopBeforeSMTP > 0 {
		deps.PopBeforeSMTP = g.PopBeforeSMTP
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	g.Start(ctx, st.Redis, &wg)
	return g, func() { cancel(); wg.Wait() }, nil
}

// banEvents publishes each ban the guard decides on sink.
func banEvents(ctx context.Context, sink event.Sink) func(guard.Ban) {
	return func(b guard.Ban) {
		sink.Publish(ctx, event.Event{Time: b.Created, Kind: event.Banned, Source: "guard", IP: b.Prefix.Addr(),
			Detail: b.Prefix.String(), Rule: b.Reason})
	}
}
