package main

import (
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/server"
)

func init() {
	rootCmd.AddCommand(daemonCommand("milter", "Run the Postfix milter: send limits per login and per local user, From binding",
		`Serve the Sendmail/Postfix milter protocol for Postfix's smtpd_milters and
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
		"milter.listen", func(c *config.Config, addr string) { c.Milter.Listen = addr }, server.Milter))
}
