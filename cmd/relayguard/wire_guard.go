package main

import (
	"context"
	"database/sql"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/smtpd"
)

// wireGuard connects the guard to the SMTP server.
func wireGuard(ctx context.Context, cfg *config.Config, log *slog.Logger, db *sql.DB, bus *event.Bus, deps *smtpd.Deps, reg prometheus.Registerer) (func(), error) {
	return func() {}, nil
}
