// Package guard turns events (AUTH failures, relay attempts, rejections,
// protocol abuse) into ban decisions: fail2ban's maxretry/findtime/bantime
// model with escalation for repeat offenders, aggregation of attacking
// addresses into whole subnets, never-ban lists, manual bans, persistence and
// expiry. The firewall enforcers (internal/firewall) apply the decisions.
package guard

import "github.com/relayguard/relayguard/internal/ban"

// Ban is one banned prefix. It is defined in internal/ban so that
// internal/firewall can use it without importing this package.
type Ban = ban.Ban
