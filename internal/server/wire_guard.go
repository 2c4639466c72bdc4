package server

import (
	"context"
	"database/sql"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/smtpd"
)

// wireGuard connects the guard to the SMTP server: bans refuse clients
// before the banner, per-address and per-prefix AUTH failure limits apply,
// AUTH outcomes from the event bus feed the decisions, and (if enabled)
// POP-before-SMTP permits relay. The firewall is left to `relayguard watch`.
func wireGuard(ctx context.Context, cfg *config.Config, log *slog.Logger, db *sql.DB, bus *event.Bus, deps *smtpd.Deps, reg prometheus.Registerer) (func(), error) {
	env, err := guard.Open(ctx, cfg, log, guard.Options{})
	if err != nil {
		return nil, err
	}
	if env.Redis != nil {
		// AUTH failure limits shared by every server; counted locally
		// while Redis is unreachable, so that the limits keep biting.
		guard.UseLimitCounter(env.Guard, limits.NewFallbackCounter(env.Redis, log))
	}
	bus.Subscribe(env.Guard)
	deps.Guard = env.Guard
	if cfg.Guard.PopBeforeSMTP > 0 {
		deps.PopBeforeSMTP = env.Guard.PopBeforeSMTP
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	wake := make(chan struct{}, 1)
	go func() {
		defer close(done)
		if env.Redis != nil {
			go env.Redis.Subscribe(ctx, func(string) {
				select {
				case wake <- struct{}{}:
				default:
				}
			})
		}
		env.Guard.Run(ctx, time.Second, wake)
	}()
	return func() { cancel(); <-done; env.Close() }, nil
}
