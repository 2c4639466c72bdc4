package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
)

// PolicyConfig is the [policy] section: the restriction lists evaluated by
// the policy engine for the built-in SMTP server and for Postfix through
// `relayguard policy` (the SMTPD policy delegation protocol).
type PolicyConfig struct {
	Listen                string        `toml:"listen" comment:"Postfix policy delegation listener of \"relayguard policy\": host:port, or unix:/path for a unix socket.\nPostfix side: check_policy_service inet:127.0.0.1:10031 before permit_sasl_authenticated (docs/policy.md)."`
	IdleTimeout           Duration      `toml:"idle_timeout" comment:"Close a policy connection idle this long. Postfix closes its own idle ones after smtpd_policy_service_max_idle (300s);\nthe default is a little longer, so that Postfix, not relayguard, closes a connection it may still use, and an idle\nclient cannot hold a policy.max_connections slot for long."`
	MaxConnections        int           `toml:"max_connections" comment:"Concurrent policy connections; more are refused with a log line."`
	DNSTimeout            Duration      `toml:"dns_timeout" comment:"One deadline for all DNS lookups of a check (rDNS, sender domain, SPF, DNS lists). A timeout is a 4xx, never a pass."`
	ConnectRestrictions   []string      `toml:"connect_restrictions" comment:"Restriction lists per stage, evaluated in order; the first check with an opinion decides (Postfix smtpd_*_restrictions).\nChecks: permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, reject_rbl_client ZONE[=FILTER],\nreject_rhsbl_sender ZONE, reject_rhsbl_helo ZONE, reject_unknown_client_hostname, reject_unknown_reverse_client_hostname,\nreject_unknown_sender_domain, reject_non_fqdn_helo, reject_invalid_helo_hostname, reject_non_fqdn_sender, check_spf,\ncheck_client_access TABLE, dnsbl_score, permit, reject, defer; in end_of_data_restrictions also check_dmarc\n(SPF, DKIM and DMARC into one Authentication-Results header, see [policy.dmarc] and docs/msgauth.md). Prefix any check with \"warn_if_reject \" to only log\nwhat it would have done. The defaults make no DNS query. Recommended for an MX (see docs/policy.md):\nrecipient_restrictions = [\"permit_mynetworks\", \"permit_sasl_authenticated\", \"reject_unauth_destination\",\n  \"reject_invalid_helo_hostname\", \"reject_non_fqdn_sender\", \"reject_unknown_sender_domain\",\n  \"reject_unknown_reverse_client_hostname\", \"dnsbl_score\", \"check_spf\"]"`
	HeloRestrictions      []string      `toml:"helo_restrictions"`
	SenderRestrictions    []string      `toml:"sender_restrictions"`
	RecipientRestrictions []string      `toml:"recipient_restrictions"`
	DataRestrictions      []string      `toml:"data_restrictions"`
	EndOfDataRestrictions []string      `toml:"end_of_data_restrictions"`
	Access                []AccessTable `toml:"access" comment:"Client access tables for check_client_access NAME. Each entry is \"CIDR ACTION [text]\" as in a Postfix\ncidr table; ACTION is OK, DUNNO, REJECT, DEFER, WARN or an SMTP code (\"550 5.7.1 go away\"). The first match wins."`
	SPF                   SPFConfig     `toml:"spf"`
	DMARC                 DMARCConfig   `toml:"dmarc"`
	LimitAction           string        `toml:"limit_action" comment:"What \"relayguard policy\" answers when a [delivery.rate_limits] limit bites (the limit's name is in the text):\ndefer_if_permit (DEFER_IF_PERMIT 4.7.1: Postfix defers with access_map_defer_code, 450, unless a later restriction rejects),\ndefer (451 4.7.1) or hold (the message is accepted into Postfix's hold queue for the operator to release or delete)."`
}

// Values of policy.limit_action.
const (
	LimitDeferIfPermit = "defer_if_permit"
	LimitDefer         = "defer"
	LimitHold          = "hold"
)

// AccessTable is one named CIDR access table.
type AccessTable struct {
	Name    string   `toml:"name"`
	File    string   `toml:"file" comment:"Postfix cidr-format file read at start, after entries."`
	Entries []string `toml:"entries"`
}

// SPFConfig tells check_spf what to do with each SPF result (RFC 7208 §8).
type SPFConfig struct {
	RejectFail     bool   `toml:"reject_fail" comment:"Reject on SPF fail with 550 5.7.23 (RFC 7372)."`
	RejectSoftfail bool   `toml:"reject_softfail" comment:"Also reject on softfail (not recommended)."`
	PermError      string `toml:"permerror" comment:"On permerror (broken SPF record): reject (550 5.7.24) or dunno."`
	TempError      string `toml:"temperror" comment:"On temperror (DNS failure): defer (451 4.7.24) or dunno. Never pass."`
	Header         bool   `toml:"header" comment:"Prepend a Received-SPF header (RFC 7208 §9.1) when the check does not reject."`
}

func defaultPolicy() PolicyConfig {
	return PolicyConfig{
		Listen:                "127.0.0.1:10031",
		IdleTimeout:           Duration(330 * time.Second),
		MaxConnections:        1000,
		DNSTimeout:            Duration(10 * time.Second),
		RecipientRestrictions: []string{"permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination", "dnsbl_score"},
		SPF:                   SPFConfig{RejectFail: true, PermError: "dunno", TempError: "defer", Header: true},
		DMARC:                 defaultDMARC(),
		LimitAction:           LimitDeferIfPermit,
	}
}

// RestrictionArgs gives the number of arguments each restriction takes.
// The policy engine and this validation share it.
var RestrictionArgs = map[string]int{
	"permit_mynetworks": 0, "permit_sasl_authenticated": 0, "reject_unauth_destination": 0,
	"reject_rbl_client": 1, "reject_rhsbl_sender": 1, "reject_rhsbl_helo": 1, "reject_rhsbl_client": 1,
	"reject_unknown_client_hostname": 0, "reject_unknown_reverse_client_hostname": 0,
	"reject_unknown_sender_domain": 0, "reject_non_fqdn_helo": 0, "reject_invalid_helo_hostname": 0,
	"reject_non_fqdn_sender": 0, "check_spf": 0, "check_dmarc": 0, "check_client_access": 1, "dnsbl_score": 0,
	"permit": 0, "reject": 0, "defer": 0, "dunno": 0,
}

// ParseRestriction splits "warn_if_reject reject_rbl_client zone" into
// (warn, name, args) and checks the name and argument count.
func ParseRestriction(s string) (warn bool, name string, args []string, err error) {
	f := strings.Fields(s)
	if len(f) > 0 && f[0] == "warn_if_reject" {
		warn = true
		f = f[1:]
	}
	if len(f) == 0 {
		return false, "", nil, fmt.Errorf("empty restriction %q", s)
	}
	name, args = strings.ToLower(f[0]), f[1:]
	n, ok := RestrictionArgs[name]
	if !ok {
		return false, "", nil, fmt.Errorf("unknown restriction %q", f[0])
	}
	if len(args) != n {
		return false, "", nil, fmt.Errorf("restriction %q takes %d argument(s), got %d", name, n, len(args))
	}
	return warn, name, args, nil
}

func (c *PolicyConfig) validate() error {
	if path, unix := strings.CutPrefix(c.Listen, "unix:"); unix {
		if path == "" {
			return fmt.Errorf("policy.listen %q: no socket path after unix:", c.Listen)
		}
	} else if err := validListenAddress(c.Listen); err != nil {
		return fmt.Errorf("policy.listen %q: %w, or unix:/path", c.Listen, err)
	}
	if c.MaxConnections < 1 {
		return fmt.Errorf("policy.max_connections %d: must be at least 1", c.MaxConnections)
	}
	if c.DNSTimeout.D() <= 0 {
		return fmt.Errorf("policy.dns_timeout %s: must be positive", c.DNSTimeout.D())
	}
	if c.IdleTimeout.D() < 0 {
		// (policyd reads a negative one as 0, never: an idle client
		// would hold a max_connections slot for good.)
		return fmt.Errorf("policy.idle_timeout %s: must not be negative (0: never)", c.IdleTimeout.D())
	}
	tables := map[string]bool{}
	for i, t := range c.Access {
		if t.Name == "" {
			return fmt.Errorf("policy.access[%d]: name is empty", i)
		}
		if tables[t.Name] {
			return fmt.Errorf("policy.access[%d]: duplicate name %q", i, t.Name)
		}
		tables[t.Name] = true
		for _, e := range t.Entries {
			if len(strings.Fields(e)) < 2 {
				return fmt.Errorf("policy.access %q: entry %q: want \"CIDR ACTION [text]\"", t.Name, e)
			}
			if _, err := ParsePrefix(strings.Fields(e)[0]); err != nil {
				return fmt.Errorf("policy.access %q: entry %q: %w", t.Name, e, err)
			}
		}
	}
	lists := map[string][]string{
		"connect_restrictions": c.ConnectRestrictions, "helo_restrictions": c.HeloRestrictions,
		"sender_restrictions": c.SenderRestrictions, "recipient_restrictions": c.RecipientRestrictions,
		"data_restrictions": c.DataRestrictions, "end_of_data_restrictions": c.EndOfDataRestrictions,
	}
	for key, list := range lists {
		for _, r := range list {
			_, name, args, err := ParseRestriction(r)
			if err != nil {
				return fmt.Errorf("policy.%s: %w", key, err)
			}
			if name == "check_dmarc" && key != "end_of_data_restrictions" {
				// SPF, DKIM and DMARC together need the message itself.
				return fmt.Errorf("policy.%s: check_dmarc needs the message: use it in end_of_data_restrictions", key)
			}
			if name == "check_client_access" && !tables[args[0]] {
				return fmt.Errorf("policy.%s: %q: no [[policy.access]] table named %q", key, r, args[0])
			}
			if strings.HasPrefix(name, "reject_rbl_") || strings.HasPrefix(name, "reject_rhsbl_") {
				if _, err := zonespec.Parse(args[0]); err != nil {
					return fmt.Errorf("policy.%s: %q: %w", key, r, err)
				}
			}
		}
	}
	switch c.LimitAction {
	case LimitDeferIfPermit, LimitDefer, LimitHold:
	default:
		return fmt.Errorf("policy.limit_action %q: want defer_if_permit, defer or hold", c.LimitAction)
	}
	switch c.SPF.PermError {
	case "reject", "dunno":
	default:
		return fmt.Errorf("policy.spf.permerror %q: want reject or dunno", c.SPF.PermError)
	}
	switch c.SPF.TempError {
	case "defer", "dunno":
	default:
		return fmt.Errorf("policy.spf.temperror %q: want defer or dunno", c.SPF.TempError)
	}
	return c.DMARC.validate()
}
