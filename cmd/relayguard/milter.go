package main

import (
	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/server"
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
			cfg, err := stateConfig()
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Milter.Listen = listen
			}
			return server.Milter(cmd.Context(), cfg, newLogger(cfg), metrics)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen `address` (host:port or unix:/path), overrides milter.listen")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus /metrics on this `address` (off by default)")
	rootCmd.AddCommand(cmd)
}
