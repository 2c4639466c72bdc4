package main

import (
	"context"
	"sync"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/milter"
	"github.com/relayguard/relayguard/internal/prom"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/server"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

func init() {
	var listen, metrics string
	cmd := &cobra.Command{
		Use:   "milter",
		Short: "Run the Postfix milter: send limits per login and per local user, From binding",
		Long: `Serve the Sendmail/Postfix milter protocol for Postfix's smtpd_milters and
non_smtpd_milters. For authenticated SMTP clients ({auth_authen}) it defers suspended logins,
binds the envelope sender and the header From: to the addresses the login owns, and applies the
send limits of [delivery.rate_limits] (the null sender included). For mail submitted with
sendmail it attributes each message to the local uid Postfix's pickup recorded and applies the
per-uid limits: over a limit the message goes to Postfix's hold queue, never discarded.

Postfix side (main.cf):
  smtpd_milters = inet:127.0.0.1:10032
  non_smtpd_milters = inet:127.0.0.1:10032
  milter_default_action = tempfail
  milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer} {client_addr}
It reads Postfix's queue files ([milter] queue_directories): run it as root or as Postfix's
mail_owner. See docs/milter.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Milter.Listen = listen
			}
			log := newLogger(cfg)
			reg := prom.NewRegistry()
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
			counters, err := ratelimit.NewStore(ctx, st, log)
			if err != nil {
				return err
			}
			lim, err := ratelimit.New(cfg.Delivery.RateLimits, counters, ratelimit.Options{Log: log, Source: "milter", Registerer: reg})
			if err != nil {
				return err
			}
			users, err := userdb.Open(ctx, st.DB, server.UserdbOptions(cfg))
			if err != nil {
				return err
			}
			srv, err := milter.New(milter.Options{
				Config: cfg.Milter, Limiter: lim, Log: maillog.New(log),
				Owners: milter.UserDBOwners{Users: users, LocalDomains: cfg.Site.LocalDomains},
			})
			if err != nil {
				return err
			}
			ln, err := milter.Listen(cfg.Milter.Listen)
			if err != nil {
				return err
			}
			if err := startMetrics(ctx, &wg, metrics, reg, log); err != nil {
				ln.Close()
				return err
			}
			log.Info("milter listening", "address", ln.Addr().String(), "network", ln.Addr().Network())
			return srv.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen `address` (host:port or unix:/path), overrides milter.listen")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus /metrics on this `address` (off by default)")
	rootCmd.AddCommand(cmd)
}
