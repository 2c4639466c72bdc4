package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"

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

Garbage collection: unless GOGC or GOMEMLIMIT is set in the environment, the service runs
with GOGC=400 and a soft memory limit of 512 MiB (see docs/policy.md).
See docs/policy.md.`,
		"policy.listen", func(c *config.Config, addr string) { c.Policy.Listen = addr },
		func(ctx context.Context, cfg *config.Config, log *slog.Logger, metrics string) error {
			policyGC(log, os.Getenv)
			return server.Policy(ctx, cfg, log, metrics)
		}))
}

// The policy service's collector defaults (docs/policy.md, "Garbage
// collection"). Its live heap is small (a few MB: the DNS list cache, the
// message instances) and a decision leaves ~250 bytes of garbage, so with
// Go's GOGC=100 the collector runs about twice a second at 20,000
// requests/s; a request that arrives during a mark phase waits for the
// mark worker on a busy core (p50 1.3 ms in a runtime trace,
// docs/benchmarks/policy.md). GOGC=400 runs it a quarter as often for a
// heap of a few tens of MB; the soft limit keeps a large live heap (a
// million cached list answers) from growing to five times its size.
const (
	policyGCPercent   = 400
	policyMemoryLimit = 512 << 20
)

// policyGC applies the policy service's collector defaults where the
// environment does not set its own (GOGC, GOMEMLIMIT: the Go runtime has
// already applied those).
func policyGC(log *slog.Logger, getenv func(string) string) {
	gogc := getenv("GOGC")
	if gogc == "" {
		debug.SetGCPercent(policyGCPercent)
		gogc = "400 (default of relayguard policy)"
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(policyMemoryLimit)
	}
	log.Debug("policy service garbage collection", "GOGC", gogc, "GOMEMLIMIT", debug.SetMemoryLimit(-1))
}
