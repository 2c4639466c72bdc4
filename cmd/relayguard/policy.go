package main

import (
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/server"
)

func init() {
	rootCmd.AddCommand(daemonCommand("policy", "Run the Postfix SMTP access policy delegation server (check_policy_service)",
		`Serve Postfix's policy delegation protocol (SMTPD_POLICY_README) with relayguard's
policy engine: the [policy] restriction lists, [dnsbl] zones and SPF, same as "serve", and the
send limits of [delivery.rate_limits] per sasl_username (counted once per message, in the
state store: SQLite, or Redis shared by several Postfix hosts).

Postfix side (main.cf), with the check BEFORE permit_sasl_authenticated (after it, no mail of
an authenticated user would reach the service):
  smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:10031,
      permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
  smtpd_policy_service_default_action = 451 4.3.5 Server configuration problem
See docs/policy.md.`,
		"policy.listen", func(c *config.Config, addr string) { c.Policy.Listen = addr }, server.Policy))
}
