package main

import (
	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/server"
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
			cfg, err := stateConfig()
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Policy.Listen = listen
			}
			return server.Policy(cmd.Context(), cfg, newLogger(cfg), metrics)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen `address` (host:port or unix:/path), overrides policy.listen")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus /metrics on this `address` (off by default)")
	rootCmd.AddCommand(cmd)
}
