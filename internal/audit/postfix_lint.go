package audit

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/relayguard/relayguard/internal/dnsbl"
)

// parseNetworks reads a mynetworks value (postconf(5): networks as
// a.b.c.d/n or [ipv6]/n, bare addresses, separated by commas or spaces);
// entries that are not networks (files, tables, names, "!" exclusions)
// are returned in others.
func parseNetworks(v string) (nets []netip.Prefix, others []string) {
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		s := strings.Replace(strings.Replace(f, "[", "", 1), "]", "", 1)
		if p, err := netip.ParsePrefix(s); err == nil {
			nets = append(nets, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			nets = append(nets, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		others = append(others, f)
	}
	return nets, others
}

var loopbackNets = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:127.0.0.0/104"),
}

// wideness grades a trusted network: Critical for the world (fewer than 8
// prefix bits for IPv4, 16 for IPv6), High for more than a /16 (/48),
// Medium for any other network beyond this host; -1 for loopback and
// single addresses.
func wideness(p netip.Prefix) Severity {
	for _, lo := range loopbackNets {
		if lo.Bits() <= p.Bits() && lo.Contains(p.Addr()) {
			return -1
		}
	}
	a := p.Addr()
	if a.Is4In6() {
		p = netip.PrefixFrom(a.Unmap(), max(0, p.Bits()-96))
		a = p.Addr()
	}
	bits, full := p.Bits(), a.BitLen()
	if bits == full {
		return -1
	}
	world, wide := 8, 16
	if a.Is6() {
		world, wide = 16, 48
	}
	switch {
	case bits < world:
		return Critical
	case bits < wide:
		return High
	}
	return Medium
}

// wideNetworks returns the networks of list wider than the host, the
// worst severity, and the list without them (loopback when nothing is
// left).
func wideNetworks(nets []netip.Prefix) (wide []netip.Prefix, worst Severity, keep []netip.Prefix) {
	worst = -1
	for _, p := range nets {
		if s := wideness(p); s >= 0 {
			wide = append(wide, p)
			worst = max(worst, s)
			continue
		}
		keep = append(keep, p)
	}
	if len(keep) == 0 {
		keep = []netip.Prefix{loopbackNets[0], loopbackNets[1]}
	}
	return wide, worst, keep
}

func prefixStrings(ps []netip.Prefix, brackets bool) []string {
	var out []string
	for _, p := range ps {
		if brackets && p.Addr().Is6() {
			out = append(out, "["+p.Addr().String()+"]/"+fmt.Sprint(p.Bits()))
			continue
		}
		out = append(out, p.String())
	}
	return out
}

// networkFinding is the finding for trusted networks wider than the host.
func networkFinding(area, subj, key string, wide []netip.Prefix, worst Severity) Finding {
	f := Finding{Check: area + ".mynetworks-wide", Area: area, Severity: worst, Subject: subj,
		Title:    "trusted networks (" + key + ") reach beyond this host: every address in them may relay without AUTH",
		Evidence: []string{key + " includes " + strings.Join(prefixStrings(wide, false), ", ")}}
	if worst == Critical {
		f.Check = area + ".mynetworks-world"
		f.Title = "OPEN RELAY: " + key + " trusts the whole Internet"
	}
	return f
}

func (r *run) lintPostfixNetworks(p *postfixInstance, subj string) {
	nets, others := parseNetworks(p.Main["mynetworks"])
	wide, worst, keep := wideNetworks(nets)
	if len(wide) > 0 {
		f := networkFinding(AreaPostfix, subj, "mynetworks", wide, worst)
		if len(others) > 0 {
			f.Evidence = append(f.Evidence, "also listed (not checked): "+strings.Join(others, " "))
		}
		_, set := p.Set["mynetworks"]
		style := p.Main["mynetworks_style"]
		if !set && style != "host" {
			f.Evidence = append(f.Evidence, "mynetworks is computed from mynetworks_style = "+style)
			r.add(withRemedy(f, postfixSet(p, false, "mynetworks_style=host")))
		} else {
			val := strings.Join(append(prefixStrings(keep, true), others...), " ")
			r.add(withRemedy(f, postfixSet(p, false, "mynetworks="+val)))
		}
	}
}

// lintPostfixAuth checks, for every smtpd service, that AUTH waits for TLS.
func (r *run) lintPostfixAuth(p *postfixInstance, subj string) {
	type target struct {
		svc      string
		services []string
	}
	var targets []*target
	find := func(svc string) *target {
		for _, t := range targets {
			if t.svc == svc {
				return t
			}
		}
		t := &target{svc: svc}
		targets = append(targets, t)
		return t
	}
	for _, s := range p.smtpdServices() {
		k := s.Key()
		if !yes(p.param(k, "smtpd_sasl_auth_enable")) || yes(p.param(k, "smtpd_tls_auth_only")) ||
			yes(p.param(k, "smtpd_tls_wrappermode")) || p.param(k, "smtpd_tls_security_level") == "encrypt" {
			continue
		}
		// Fix where the bad value comes from.
		svc := ""
		if _, ok := p.Overrides[k]["smtpd_tls_auth_only"]; ok {
			svc = k
		}
		t := find(svc)
		t.services = append(t.services, k)
	}
	for _, t := range targets {
		f := Finding{Check: "postfix.tls-auth-only", Area: AreaPostfix, Severity: High, Subject: subj,
			Title:    "smtpd_tls_auth_only = no: SMTP AUTH (and with it PLAIN/LOGIN passwords) is offered before STARTTLS",
			Evidence: []string{"services with SASL on and AUTH allowed without TLS: " + strings.Join(t.services, ", ")}}
		if t.svc == "" {
			r.add(withRemedy(f, postfixSet(p, false, "smtpd_tls_auth_only=yes")))
		} else {
			r.add(withRemedy(f, postfixSet(p, true, t.svc+"/smtpd_tls_auth_only=yes")))
		}
	}
	if yes(p.Main["broken_sasl_auth_clients"]) {
		r.add(withRemedy(Finding{Check: "postfix.broken-sasl-auth-clients", Area: AreaPostfix, Severity: Low, Subject: subj,
			Title:    "broken_sasl_auth_clients = yes: the non-standard AUTH= line for Outlook Express 4 and Microsoft Exchange 5.0 is still advertised",
			Evidence: []string{"broken_sasl_auth_clients = " + p.Main["broken_sasl_auth_clients"]}},
			postfixSet(p, false, "broken_sasl_auth_clients=no")))
	}
}

// lintPostfixBackscatter finds the settings that make Postfix accept mail
// it cannot deliver and bounce it later to a forged sender.
func (r *run) lintPostfixBackscatter(p *postfixInstance, subj string) {
	m := p.Main
	if strings.EqualFold(m["smtpd_reject_unlisted_recipient"], "no") {
		r.add(withRemedy(Finding{Check: "postfix.backscatter-unlisted-recipient", Area: AreaPostfix, Severity: High, Subject: subj,
			Title:    "smtpd_reject_unlisted_recipient = no: mail to unknown users is accepted, then bounced to the (often forged) sender — backscatter",
			Evidence: []string{"smtpd_reject_unlisted_recipient = no"}},
			postfixSet(p, false, "smtpd_reject_unlisted_recipient=yes")))
	}
	if v, set := p.Set["local_recipient_maps"]; set && strings.TrimSpace(v) == "" && strings.TrimSpace(m["mydestination"]) != "" {
		r.add(withRemedy(Finding{Check: "postfix.backscatter-local-recipients", Area: AreaPostfix, Severity: High, Subject: subj,
			Title:    "local_recipient_maps is empty: every local part of the local domains is accepted and unknown ones are bounced later — backscatter",
			Evidence: []string{"local_recipient_maps =", "mydestination = " + m["mydestination"]}},
			postfixSet(p, false, "local_recipient_maps=proxy:unix:passwd.byname $alias_maps")))
	}
	// relay_domains = $mydestination (the default before
	// compatibility_level 2) relays nothing beyond the local domains,
	// which local_recipient_maps covers.
	if set := strings.TrimSpace(p.Set["relay_domains"]); set != "" && set != "$mydestination" && strings.TrimSpace(m["relay_recipient_maps"]) == "" {
		rd := m["relay_domains"]
		r.add(Finding{Check: "postfix.backscatter-relay-recipients", Area: AreaPostfix, Severity: Medium, Subject: subj,
			Title:    "relay_domains without relay_recipient_maps: every address of the relayed domains is accepted; the next hop's rejections become bounces to forged senders",
			Evidence: []string{"relay_domains = " + rd, "relay_recipient_maps ="},
			Fix:      fmt.Sprintf("list the valid recipients: %s -e 'relay_recipient_maps = hash:%s/relay_recipients' && %s %s/relay_recipients", postconfCmd(p.Dir), p.Dir, postmapCmd(p.Dir), p.Dir)})
	}
	if v := strings.TrimSpace(m["luser_relay"]); v != "" {
		r.add(Finding{Check: "postfix.luser-relay", Area: AreaPostfix, Severity: Medium, Subject: subj,
			Title:    "luser_relay catches mail to unknown local users: recipient validation is off",
			Evidence: []string{"luser_relay = " + v}, Fix: fmt.Sprintf("%s -X luser_relay", postconfCmd(p.Dir))})
	}
	if yes(m["soft_bounce"]) {
		r.add(withRemedy(Finding{Check: "postfix.soft-bounce", Area: AreaPostfix, Severity: Medium, Subject: subj,
			Title:    "soft_bounce = yes (a debugging setting): every rejection becomes a deferral and undeliverable mail piles up in the queue",
			Evidence: []string{"soft_bounce = yes"}}, postfixSet(p, false, "soft_bounce=no")))
	}
}

// lintPostfixLists checks the health of the DNS lists Postfix uses.
func (r *run) lintPostfixLists(ctx context.Context, p *postfixInstance, subj string) {
	var ip, dom []string
	add := func(x restriction) {
		if x.Arg == "" {
			return
		}
		name := strings.TrimPrefix(x.Name, "warn_if_reject ")
		switch {
		case name == "reject_rbl_client" || name == "permit_dnswl_client":
			ip = append(ip, x.Arg)
		case strings.HasPrefix(name, "reject_rhsbl_") || name == "permit_rhswl_client":
			dom = append(dom, x.Arg)
		}
	}
	lists := []string{p.Main["smtpd_client_restrictions"], p.Main["smtpd_helo_restrictions"], p.Main["smtpd_sender_restrictions"],
		p.Main["smtpd_relay_restrictions"], p.Main["smtpd_recipient_restrictions"], p.Main["smtpd_data_restrictions"]}
	for _, o := range p.Overrides {
		for k, v := range o {
			if strings.HasSuffix(k, "_restrictions") {
				lists = append(lists, v)
			}
		}
	}
	for _, l := range lists {
		for _, x := range parseRestrictions(l) {
			add(x)
		}
	}
	ip = append(ip, strings.FieldsFunc(p.Main["postscreen_dnsbl_sites"], func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })...)
	r.listHealthFindings(ctx, AreaPostfix, subj, ip, dom)
}

// listHealthFindings checks DNS lists with the health checker of
// internal/dnsbl and reports those that are dead, list everything or
// refuse the resolver.
func (r *run) listHealthFindings(ctx context.Context, area, subj string, ipZones, domZones []string) {
	ipZones, domZones = uniq(ipZones), uniq(domZones)
	if len(ipZones)+len(domZones) == 0 {
		return
	}
	if r.res == nil {
		r.problem(area, "dnsbl-health", fmt.Errorf("%s uses DNS lists but no resolver is available", subj))
		return
	}
	lists, err := dnsbl.Lists(false, ipZones, domZones)
	if err != nil {
		r.problem(area, "dnsbl-health", fmt.Errorf("%s: %w", subj, err))
		return
	}
	rep, err := dnsbl.Lookup(ctx, r.res, lists, nil, true, dnsbl.Options{Timeout: r.o.Timeout, Logger: r.log})
	if err != nil {
		r.problem(area, "dnsbl-health", fmt.Errorf("%s: %w", subj, err))
		return
	}
	for _, h := range rep.Health {
		f := Finding{Area: area, Subject: subj, Evidence: []string{fmt.Sprintf("%s: %s (%s)", h.Zone, h.State, h.Detail)}}
		switch h.State {
		case dnsbl.ListsEverything:
			f.Check, f.Severity = area+".dnsbl-lists-everything", High
			f.Title = "DNS list " + h.Zone + " lists everything (it was shut down or answers for all): every client it is asked about is refused"
			f.Fix = "remove " + h.Zone + " from the configuration at once"
		case dnsbl.Dead:
			f.Check, f.Severity = area+".dnsbl-dead", Medium
			f.Title = "DNS list " + h.Zone + " is dead: it slows every check and protects nothing"
			f.Fix = "remove " + h.Zone + " from the configuration"
		case dnsbl.Refusing:
			f.Check, f.Severity = area+".dnsbl-refusing", Medium
			f.Title = "DNS list " + h.Zone + " refuses this resolver's queries (public resolvers and over-quota users get error codes)"
			f.Fix = "query the list through a local caching resolver (unbound) or a registered data feed, or remove it"
		case dnsbl.Failing, dnsbl.Unknown:
			r.problem(area, "dnsbl-health", fmt.Errorf("%s: DNS list %s: %s %s", subj, h.Zone, h.State, h.Detail))
			continue
		default:
			continue
		}
		r.add(f)
	}
}

func uniq(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
