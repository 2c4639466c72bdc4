package audit

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// tomlStrings renders a TOML array of strings.
func tomlStrings(ss []string) string {
	var q []string
	for _, s := range ss {
		q = append(q, strconv.Quote(s))
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// auditConfig lints relayguard's own configuration.
func (r *run) auditConfig(ctx context.Context) {
	c := r.cfg
	path := c.Path()
	subj := "relayguard configuration"
	if path != "" {
		subj += " " + path
	} else {
		subj += " (embedded defaults)"
	}
	if wide, worst, keep := wideNetworks(c.Site.MyNetworks); len(wide) > 0 {
		f := networkFinding(AreaConfig, subj, "mynetworks", wide, worst)
		keepS := prefixStrings(keep, false)
		if len(c.Site.MyNetworks) == len(wide) {
			keepS = nil // nothing narrower was trusted: trust nobody
		}
		f.Fix = "mynetworks = " + tomlStrings(keepS) + " (then restart relayguard)"
		r.add(withRemedyIf(f, r.configRemedy(path, "set mynetworks = "+tomlStrings(keepS), tomlEdit{"", "mynetworks", tomlStrings(keepS)})))
	}
	// relayguard's own listeners always decide relaying themselves; the
	// restriction lists also answer Postfix through `relayguard policy`,
	// where "permit" is action=OK: Postfix stops evaluating and, if the
	// policy service comes before reject_unauth_destination, relays.
	rl := parseRestrictions(strings.Join(c.Policy.RecipientRestrictions, ","))
	if _, _, perm := relayVerdict(rl); perm == "permit" {
		r.add(Finding{Check: "relayguard.permit-before-reject", Area: AreaConfig, Severity: High, Subject: subj,
			Title:    "[policy] recipient_restrictions permits before reject_unauth_destination: the policy service answers OK, and Postfix relays if it asks before its own reject_unauth_destination",
			Evidence: []string{"recipient_restrictions = " + tomlStrings(c.Policy.RecipientRestrictions)},
			Fix:      `recipient_restrictions = ["permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination", ...] (no bare "permit" before reject_unauth_destination)`})
	}
	for i, l := range c.Listeners {
		host, _, err := net.SplitHostPort(l.Address)
		ip, perr := netip.ParseAddr(host)
		if !l.TrustedLocal || err != nil || perr == nil && ip.IsLoopback() || host == "localhost" {
			continue
		}
		f := Finding{Check: "relayguard.trusted-local-exposed", Area: AreaConfig, Severity: High, Subject: subj,
			Title:    fmt.Sprintf("listener %q (%s) has trusted_local = true but is reachable from the network: PLAIN/LOGIN are offered without TLS", l.Name, l.Address),
			Evidence: []string{fmt.Sprintf("[[listener]] name = %q address = %q trusted_local = true", l.Name, l.Address)},
			Fix:      "trusted_local = false in that [[listener]] (then restart relayguard)"}
		r.add(withRemedyIf(f, r.configRemedy(path, fmt.Sprintf("set trusted_local = false in listener %q", l.Name), tomlEdit{fmt.Sprintf("listener#%d", i), "trusted_local", "false"})))
	}
	if c.Auth.BrokenAuthClients {
		f := Finding{Check: "relayguard.broken-auth-clients", Area: AreaConfig, Severity: Low, Subject: subj,
			Title:    "auth.broken_auth_clients = true: the AUTH= line for 1990s Outlook clients is advertised",
			Evidence: []string{"[auth] broken_auth_clients = true"}, Fix: "[auth] broken_auth_clients = false"}
		r.add(withRemedyIf(f, r.configRemedy(path, "set [auth] broken_auth_clients = false", tomlEdit{"auth", "broken_auth_clients", "false"})))
	}
	if slices.ContainsFunc(c.Auth.Mechanisms, func(m string) bool { return strings.EqualFold(m, "CRAM-MD5") }) || c.Auth.CRAMMD5 {
		mechs := slices.DeleteFunc(slices.Clone(c.Auth.Mechanisms), func(m string) bool { return strings.EqualFold(m, "CRAM-MD5") })
		f := Finding{Check: "relayguard.cram-md5", Area: AreaConfig, Severity: Medium, Subject: subj,
			Title:    "CRAM-MD5 is enabled: a password-equivalent secret is stored for every account whose password is set",
			Evidence: []string{"[auth] mechanisms = " + tomlStrings(c.Auth.Mechanisms), fmt.Sprintf("[auth] cram_md5 = %v", c.Auth.CRAMMD5)},
			Fix:      "[auth] mechanisms = " + tomlStrings(mechs) + " and cram_md5 = false; then relayguard user passwd NAME for every account listed by the accounts check"}
		r.add(withRemedyIf(f, r.configRemedy(path, "remove CRAM-MD5 from [auth] mechanisms and set cram_md5 = false",
			tomlEdit{"auth", "mechanisms", tomlStrings(mechs)}, tomlEdit{"auth", "cram_md5", "false"})))
	}
	var ipZones, domZones []string
	ipZones = append(ipZones, c.DNSBL.Zones...)
	domZones = append(domZones, c.DNSBL.DomainZones...)
	for _, list := range [][]string{c.Policy.ConnectRestrictions, c.Policy.HeloRestrictions, c.Policy.SenderRestrictions, c.Policy.RecipientRestrictions} {
		for _, x := range parseRestrictions(strings.Join(list, ",")) {
			switch strings.TrimPrefix(x.Name, "warn_if_reject ") {
			case "reject_rbl_client":
				ipZones = append(ipZones, x.Arg)
			case "reject_rhsbl_sender", "reject_rhsbl_helo":
				domZones = append(domZones, x.Arg)
			}
		}
	}
	r.listHealthFindings(ctx, AreaConfig, subj, ipZones, domZones)
}

// withRemedyIf attaches a remedy when there is one.
func withRemedyIf(f Finding, rem *Remedy) Finding {
	if rem == nil {
		return f
	}
	f.remedy = rem
	return f
}
