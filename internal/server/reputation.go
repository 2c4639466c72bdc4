package server

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/maillog"
)

// startReputation runs the audit's reputation monitor ([audit]
// reputation_interval; not scheduled when 0) in a goroutine of wg until
// ctx is done. A change (the host's address or domain listed or delisted,
// a certificate expiring) is alerted through the accounts' channel
// ([accounts] alert_mail_to through alert_smtp, else alertSMTP;
// webhook_url) and the relayguard_reputation_* metrics of reg. The monitor
// is returned either way: the web console shows its state and asks it to
// check on demand.
func startReputation(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, alertSMTP string) *audit.Monitor {
	m := &audit.Monitor{
		Options:    audit.Options{Config: cfg, Catalog: cfg.Audit.Catalog, Log: log},
		Interval:   cfg.Audit.ReputationInterval.D(),
		Registerer: reg,
	}
	if al := accounts.NewAlerter(cfg.Accounts, cfg.Hostname, alertSMTP, maillog.New(log)); al != nil {
		m.Alert = func(ctx context.Context, c audit.Change) error {
			return al.Notify(ctx, c.Subject(), c.Text(), c.Time, c, "alert", "reputation")
		}
	}
	if cfg.Audit.ReputationInterval > 0 {
		wg.Go(func() { m.Run(ctx) })
	}
	return m
}
