package server

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/service"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
)

// wireExtensions connects the policy engine, the send limits and the
// delivery scheduler (and, in wire_guard.go, the guard) to the SMTP
// server. It returns a function that stops them, in reverse order.
func wireExtensions(ctx context.Context, cfg *config.Config, log *slog.Logger, st *store.Stores, bus *event.Bus, spool *queue.Spool, deps *smtpd.Deps, reg prometheus.Registerer) (func(), error) {
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}

	// The restriction lists of [policy], the same engine as `relayguard policy`.
	eng, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Events: bus, Registerer: reg, Source: "smtpd"})
	if err != nil {
		return nil, err
	}
	ectx, ecancel := context.WithCancel(ctx)
	edone := make(chan struct{})
	go func() { defer close(edone); eng.Run(ectx) }() // DNS list health checks
	stops = append(stops, func() { ecancel(); <-edone })
	deps.Policy = eng

	// The guard: bans, per-IP and per-subnet AUTH limits, POP-before-SMTP.
	gstop, err := wireGuard(ctx, cfg, log, st, bus, deps, reg)
	if err != nil {
		stop()
		return nil, err
	}
	stops = append(stops, gstop)

	// Send limits and the delivery scheduler over the spool.
	suspender, _ := deps.Users.(ratelimit.Suspender)
	dl, err := service.Start(ctx, cfg, service.Deps{Stores: st, Spool: spool, Users: suspender, Events: bus, Log: log, Registerer: reg})
	if err != nil {
		stop()
		return nil, err
	}
	deps.Limits = dl.Limiter
	stops = append(stops, func() {
		if err := dl.Stop(); err != nil {
			log.Error("delivery: stop", "err", err)
		}
	})
	return stop, nil
}
