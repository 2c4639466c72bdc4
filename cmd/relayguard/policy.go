package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/policyd"
)

func init() {
	var listen, metrics string
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Run the Postfix SMTP access policy delegation server (check_policy_service)",
		Long: `Serve Postfix's policy delegation protocol (SMTPD_POLICY_README) with relayguard's
policy engine: the [policy] restriction lists, [dnsbl] zones and SPF, same as "serve".

Postfix side (main.cf), after reject_unauth_destination:
  smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,
      reject_unauth_destination, check_policy_service inet:127.0.0.1:10031
  smtpd_policy_service_default_action = 451 4.3.5 Server configuration problem
and in master.cf nothing (relayguard runs on its own); policy_time_limit = 3600
applies to spawn(8)-started services only. See docs/policy.md.`,
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
			eng, err := policy.New(cfg, policy.Deps{Logger: log, Source: "policyd"})
			if err != nil {
				return err
			}
			defer eng.Close()
			ln, err := policyd.Listen(cfg.Policy.Listen)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if metrics != "" {
				srv := &http.Server{Addr: metrics, Handler: promhttp.Handler(), ReadHeaderTimeout: 10 * time.Second}
				go func() {
					if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
						log.Error("metrics listener failed", "address", metrics, "error", err)
					}
				}()
				defer srv.Shutdown(context.Background())
			}
			log.Info("policy service listening", "address", ln.Addr().String(), "network", ln.Addr().Network())
			s := &policyd.Server{Engine: eng, Logger: log, IdleTimeout: cfg.Policy.IdleTimeout.D(), MaxConns: cfg.Policy.MaxConnections}
			return s.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen `address` (host:port or unix:/path), overrides policy.listen")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus /metrics on this `address` (off by default)")
	rootCmd.AddCommand(cmd)
}
