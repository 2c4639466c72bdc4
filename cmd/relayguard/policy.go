package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/policyd"
	"github.com/relayguard/relayguard/internal/prom"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

func init() {
	var listen, metrics string
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Run the Postfix SMTP access policy delegation server (check_policy_service)",
		Long: `Serve Postfix's policy delegation protocol (SMTPD_POLICY_README) with relayguard's
policy engine: the [policy] restriction lists, [dnsbl] zones and SPF, same as "serve", and the
send limits of [delivery.rate_limits] per sasl_username (counted once per message, in the
state store: SQLite, or Redis shared by several Postfix hosts).

Postfix side (main.cf), with the check BEFORE permit_sasl_authenticated (after it, no mail of
an authenticated user would reach the service):
  smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:10031,
      permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
  smtpd_policy_service_default_action = 451 4.3.5 Server configuration problem
See docs/policy.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Policy.Listen = listen
			}
			log := newLogger(cfg)
			reg := prom.NewRegistry()
			eng, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Source: "policyd", Registerer: reg})
			if err != nil {
				return err
			}
			// The stores close, and the health checks and the metrics
			// listener are stopped (cancel) and waited for (wg), on return.
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			st, err := store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
			if err != nil {
				return err
			}
			defer st.Close()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			lim, err := policyLimits(ctx, cfg, st, log, reg)
			if err != nil {
				return err
			}
			ln, err := policyd.Listen(cfg.Policy.Listen)
			if err != nil {
				return err
			}
			wg.Go(func() { eng.Run(ctx) }) // DNS list health checks
			if err := startMetrics(ctx, &wg, metrics, reg, log); err != nil {
				ln.Close()
				return err
			}
			log.Info("policy service listening", "address", ln.Addr().String(), "network", ln.Addr().Network())
			s := &policyd.Server{Engine: eng, Logger: log, IdleTimeout: cfg.Policy.IdleTimeout.D(), MaxConns: cfg.Policy.MaxConnections,
				Limits: lim, Registerer: reg}
			return s.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen `address` (host:port or unix:/path), overrides policy.listen")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus /metrics on this `address` (off by default)")
	rootCmd.AddCommand(cmd)
}

// policyLimits builds the send limits of [delivery.rate_limits] over the
// state stores: the SQLite database in the data directory, and Redis/Valkey
// when [store] url names it (then a pool of Postfix hosts shares one budget
// per user).
func policyLimits(ctx context.Context, cfg *config.Config, st *store.Stores, log *slog.Logger, reg prometheus.Registerer) (*policyd.Limits, error) {
	counters, err := ratelimit.NewStore(ctx, st, log)
	if err != nil {
		return nil, err
	}
	lim, err := ratelimit.New(cfg.Delivery.RateLimits, counters, ratelimit.Options{Log: log, Source: "policyd", Registerer: reg})
	if err != nil {
		return nil, err
	}
	mynets, err := config.ParsePrefixes(cfg.MyNetworks)
	if err != nil {
		return nil, fmt.Errorf("config: mynetworks: %w", err)
	}
	trusted := func(ip netip.Addr) bool {
		for _, p := range mynets {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	}
	return &policyd.Limits{Limiter: lim, Trusted: trusted, Action: cfg.Policy.LimitAction}, nil
}

// startMetrics serves the metrics of reg on addr (nothing when addr is
// empty) until ctx is done, in a goroutine of wg.
func startMetrics(ctx context.Context, wg *sync.WaitGroup, addr string, reg prometheus.Gatherer, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	m, err := prom.Listen(addr, reg)
	if err != nil {
		return err
	}
	wg.Go(func() {
		if err := m.Run(ctx); err != nil {
			log.Error("metrics listener failed", "address", addr, "error", err)
		}
	})
	log.Info("metrics listening", "address", m.Addr().String())
	return nil
}
