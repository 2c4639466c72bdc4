package config

import (
	"strings"
	"testing"
)

// TestPolicyValidation: every bad [policy] value is refused with an error
// naming the key and the value.
func TestPolicyValidation(t *testing.T) {
	for _, tc := range []struct {
		edit func(c *PolicyConfig)
		want []string
	}{
		{func(c *PolicyConfig) { c.Listen = "" }, []string{"policy.listen"}},
		{func(c *PolicyConfig) { c.Listen = "10031" }, []string{"policy.listen", `"10031"`}},
		{func(c *PolicyConfig) { c.Listen = "unix:" }, []string{"policy.listen", `"unix:"`}},
		{func(c *PolicyConfig) { c.MaxConnections = 0 }, []string{"policy.max_connections", "0"}},
		{func(c *PolicyConfig) { c.RecipientRestrictions = []string{"reject_everything"} }, []string{"policy.recipient_restrictions", `"reject_everything"`}},
		{func(c *PolicyConfig) { c.HeloRestrictions = []string{"reject_rhsbl_helo"} }, []string{"policy.helo_restrictions", "reject_rhsbl_helo", "1 argument"}},
		{func(c *PolicyConfig) { c.ConnectRestrictions = []string{"reject_rbl_client zen=127.0.0.[2..11]"} }, []string{"policy.connect_restrictions", "reject_rbl_client zen=127.0.0.[2..11]", `"zen"`}},
		{func(c *PolicyConfig) { c.SenderRestrictions = []string{"reject_rhsbl_sender dbl.example=127.0.1.300"} }, []string{"policy.sender_restrictions", "127.0.1.300"}},
		{func(c *PolicyConfig) { c.ConnectRestrictions = []string{"check_client_access nope"} }, []string{"policy.connect_restrictions", `"nope"`}},
		{func(c *PolicyConfig) { c.Access = []AccessTable{{Name: "t", Entries: []string{"300.1.1.1/32 REJECT"}}} }, []string{"policy.access", "300.1.1.1"}},
		{func(c *PolicyConfig) { c.SPF.TempError = "pass" }, []string{"policy.spf.temperror", `"pass"`}},
	} {
		c := defaultPolicy()
		tc.edit(&c)
		err := c.validate()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error %v does not name %s", err, w)
			}
		}
	}
	c := defaultPolicy()
	c.Listen = "unix:/run/relayguard/policy.sock"
	c.RecipientRestrictions = []string{"permit_mynetworks", "reject_unauth_destination", "warn_if_reject reject_rbl_client zen.spamhaus.org=127.0.0.[2..11]",
		"reject_rhsbl_sender dbl.spamhaus.org=127.0.1.[2..99]", "dnsbl_score", "check_spf"}
	if err := c.validate(); err != nil {
		t.Errorf("valid [policy]: %v", err)
	}
}
