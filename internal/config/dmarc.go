package config

import (
	"fmt"
	"strings"
)

// DMARCConfig is [policy.dmarc]: what the check_dmarc restriction does
// with the DMARC verdict (RFC 7489) of a message at the end of DATA.
type DMARCConfig struct {
	Reject     string `toml:"reject" comment:"A message failing DMARC for a domain that publishes p=reject: reject (550 5.7.1), quarantine\n(accept, add X-Relayguard-Quarantine) or none (accept; the verdict is in Authentication-Results only)."`
	Quarantine string `toml:"quarantine" comment:"A message failing DMARC for a domain that publishes p=quarantine: quarantine, reject or none."`
	TempError  string `toml:"temperror" comment:"DMARC cannot be evaluated because DNS fails: defer (451 4.7.1, the sender retries) or dunno (accept, dmarc=temperror)."`
	AuthservID string `toml:"authserv_id" comment:"authserv-id of the Authentication-Results header field (RFC 8601 §2.5); fields claiming it that arrive\nwith a message are removed. Empty: hostname."`
}

// DMARC dispositions.
const (
	DMARCReject     = "reject"
	DMARCQuarantine = "quarantine"
	DMARCNone       = "none"
)

func defaultDMARC() DMARCConfig {
	return DMARCConfig{Reject: DMARCReject, Quarantine: DMARCQuarantine, TempError: "defer"}
}

func (c *DMARCConfig) validate() error {
	for k, v := range map[string]string{"reject": c.Reject, "quarantine": c.Quarantine} {
		switch v {
		case DMARCReject, DMARCQuarantine, DMARCNone:
		default:
			return fmt.Errorf("policy.dmarc.%s %q: want reject, quarantine or none", k, v)
		}
	}
	switch c.TempError {
	case "defer", "dunno":
	default:
		return fmt.Errorf("policy.dmarc.temperror %q: want defer or dunno", c.TempError)
	}
	return nil
}

// ID is the authserv-id of the Authentication-Results fields this server
// writes (RFC 8601 §2.5): authserv_id, else the host name, lower case.
// The SMTP server removes fields that arrive claiming it.
func (c DMARCConfig) ID(hostname string) string {
	if c.AuthservID != "" {
		return strings.ToLower(c.AuthservID)
	}
	return strings.ToLower(hostname)
}
