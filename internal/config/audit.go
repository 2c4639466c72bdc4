package config

import (
	"fmt"
	"time"
)

// AuditConfig is the [audit] section: the reputation part of `relayguard
// audit` that serve and watch run periodically (internal/audit.Monitor).
type AuditConfig struct {
	ReputationInterval Duration `toml:"reputation_interval" comment:"serve and watch check the host's reputation this often: its own addresses and local domains on the DNS lists\n([dnsbl] zones, and the public catalog with catalog = true; unhealthy lists skipped) and its TLS certificates'\nexpiry. A change is alerted through [accounts] alert_mail_to / webhook_url and the relayguard_reputation_* metrics.\n0 disables."`
	Catalog            bool     `toml:"catalog" comment:"Also ask the built-in catalog of public DNS lists (Spamhaus, Barracuda, SpamCop, ...) about this host.\nNeeds a resolver the lists answer (a local unbound): see docs/audit.md."`
}

func defaultAudit() AuditConfig {
	return AuditConfig{ReputationInterval: Duration(time.Hour)}
}

func (c *AuditConfig) validate() error {
	if d := c.ReputationInterval.D(); d < 0 || d > 0 && d < time.Second {
		return fmt.Errorf("audit.reputation_interval %q: want 0 (off) or at least 1s", d)
	}
	return nil
}
