package audit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"blitiri.com.ar/go/spf"

	"github.com/relayguard/relayguard/internal/dnsbl"
)

// publicOwn are the own addresses the rest of the Internet sees (private
// ranges have no PTR, no listing and no reputation that matters).
func (r *run) publicOwn() []netip.Addr {
	var out []netip.Addr
	for _, a := range r.own {
		if !a.IsPrivate() {
			out = append(out, a)
		}
	}
	return out
}

// relayguardInUse: the configuration was given, or relayguard serves a
// listener; its hostname, domains and keys are then this host's.
func (r *run) relayguardInUse() bool {
	if r.cfg.Path() != "" {
		return true
	}
	for _, l := range r.listeners {
		if l.Relayguard {
			return true
		}
	}
	return false
}

// heloNames are the names this host's MTAs say in HELO.
func (r *run) heloNames() []string {
	var out []string
	if r.relayguardInUse() {
		out = append(out, r.cfg.Site.Hostname)
	}
	for _, p := range r.postfix {
		h := p.Main["smtp_helo_name"]
		if h == "" || strings.Contains(h, "$myhostname") {
			h = p.Main["myhostname"]
		}
		out = append(out, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	return uniq(out)
}

// localDomains are the domains this host receives mail for: relayguard's
// local_domains and every Postfix instance's mydestination (without the
// host names and localhost).
func (r *run) localDomains() []string {
	var out []string
	if r.relayguardInUse() {
		for _, d := range r.cfg.Site.LocalDomains {
			if d != "localhost" && !strings.HasSuffix(d, ".localhost") && !strings.HasSuffix(d, ".invalid") {
				out = append(out, d)
			}
		}
	}
	for _, p := range r.postfix {
		for _, d := range strings.FieldsFunc(p.Main["mydestination"], func(r rune) bool { return r == ',' || r == ' ' }) {
			d = strings.NewReplacer("$mydomain", p.Main["mydomain"], "$myhostname", p.Main["myhostname"]).Replace(d)
			if strings.Contains(d, "$") || strings.Contains(d, ":") || strings.HasPrefix(d, "localhost") || d == p.Main["myhostname"] {
				continue
			}
			out = append(out, strings.ToLower(d))
		}
	}
	return uniq(out)
}

// auditIdentity checks PTR, HELO, blocklists, the mail-authentication
// records of the local domains and the certificates.
func (r *run) auditIdentity(ctx context.Context) {
	r.auditCerts()
	if r.res == nil {
		return // the resolver problem is recorded
	}
	pub := r.publicOwn()
	if len(pub) == 0 {
		r.note("no public address of this host found: PTR, HELO and blocklist checks skipped (set own_addresses)")
	}
	var wg sync.WaitGroup
	wg.Go(func() { r.checkPTR(ctx, pub) })
	wg.Go(func() { r.checkBlocklists(ctx, pub, r.localDomains()) })
	for _, d := range r.localDomains() {
		wg.Go(func() { r.checkMailAuth(ctx, d, pub) })
	}
	wg.Wait()
}

// dnsFail tells "no such name/record" from a failure to ask.
func dnsFail(err error) bool {
	var de *net.DNSError
	return err != nil && !(errors.As(err, &de) && de.IsNotFound)
}

func (r *run) checkPTR(ctx context.Context, pub []netip.Addr) {
	helos := r.heloNames()
	ptrOf := map[netip.Addr][]string{}
	for _, ip := range pub {
		names, err := r.res.LookupAddr(ctx, ip.String())
		if dnsFail(err) {
			r.problem(AreaIdentity, "ptr", fmt.Errorf("PTR of %s: %w", ip, err))
			continue
		}
		if len(names) == 0 {
			r.add(Finding{Check: "identity.no-ptr", Area: AreaIdentity, Severity: High, Subject: ip.String(),
				Title:    "no reverse DNS (PTR): many receivers refuse or spam-score mail from addresses without one",
				Evidence: []string{"PTR " + ip.String() + ": none"},
				Fix:      fmt.Sprintf("ask whoever holds the address (hosting provider) to set its PTR to %s", firstOr(helos, "the host's name"))})
			continue
		}
		var confirmed []string
		for _, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			fam := "ip4"
			if ip.Is6() {
				fam = "ip6"
			}
			addrs, err := r.res.LookupNetIP(ctx, fam, n)
			if dnsFail(err) {
				r.problem(AreaIdentity, "fcrdns", fmt.Errorf("%s of %s: %w", fam, n, err))
				continue
			}
			if slices.Contains(addrs, ip) {
				confirmed = append(confirmed, n)
			}
		}
		ptrOf[ip] = confirmed
		if len(confirmed) == 0 {
			r.add(Finding{Check: "identity.fcrdns", Area: AreaIdentity, Severity: High, Subject: ip.String(),
				Title:    "the PTR name does not resolve back to the address (no forward-confirmed reverse DNS)",
				Evidence: []string{"PTR " + ip.String() + " → " + strings.Join(names, ", ")},
				Fix:      fmt.Sprintf("publish %s IN %s %s for the PTR name (or change the PTR to a name that has it)", strings.TrimSuffix(names[0], "."), map[bool]string{true: "AAAA", false: "A"}[ip.Is6()], ip)})
		}
	}
	for _, h := range helos {
		addrs, err := r.res.LookupNetIP(ctx, "ip", h)
		if dnsFail(err) {
			r.problem(AreaIdentity, "helo", fmt.Errorf("addresses of HELO name %s: %w", h, err))
			continue
		}
		var mine []netip.Addr
		for _, a := range addrs {
			if slices.Contains(pub, a) {
				mine = append(mine, a)
			}
		}
		if len(pub) > 0 && len(mine) == 0 {
			r.add(Finding{Check: "identity.helo", Area: AreaIdentity, Severity: Medium, Subject: h,
				Title:    "the HELO name does not resolve to this host's address: receivers that check it (reject_unknown_helo_hostname, SPF HELO) refuse or score the mail",
				Evidence: []string{fmt.Sprintf("%s resolves to %v; this host is %v", h, addrs, pub)},
				Fix:      fmt.Sprintf("publish %s IN A %s (or set the MTA's HELO name to the PTR name)", h, firstOf(pub, false))})
			continue
		}
		for _, a := range mine {
			if ptr, ok := ptrOf[a]; ok && len(ptr) > 0 && !slices.Contains(ptr, h) {
				r.add(Finding{Check: "identity.helo-ptr", Area: AreaIdentity, Severity: Low, Subject: h,
					Title:    "the HELO name differs from the PTR name of the address mail leaves from",
					Evidence: []string{fmt.Sprintf("HELO %s; PTR %s → %s", h, a, strings.Join(ptr, ", "))},
					Fix:      fmt.Sprintf("use one name: set the PTR of %s to %s, or the HELO name to %s", a, h, ptr[0])})
			}
		}
	}
}

// checkBlocklists asks the DNS lists (the configured zones and, with
// Catalog, the public catalog) about the own addresses and domains,
// skipping the lists the health checker switches off.
func (r *run) checkBlocklists(ctx context.Context, pub []netip.Addr, domains []string) {
	lists, err := dnsbl.Lists(r.o.Catalog, r.cfg.DNSBL.Zones, r.cfg.DNSBL.DomainZones)
	if err != nil {
		r.problem(AreaIdentity, "blocklists", err)
		return
	}
	var targets []string
	for _, a := range pub {
		targets = append(targets, a.String())
	}
	for _, d := range domains {
		if dnsbl.DomainQueryable(d) {
			targets = append(targets, d)
		}
	}
	if len(lists) == 0 || len(targets) == 0 {
		return
	}
	rep, err := dnsbl.Lookup(ctx, r.res, lists, targets, true, dnsbl.Options{Timeout: r.o.Timeout, Logger: r.log})
	if err != nil {
		r.problem(AreaIdentity, "blocklists", err)
		return
	}
	var skipped []string
	for _, row := range rep.Rows {
		switch {
		case row.Listed && row.Kind == "block":
			r.add(Finding{Check: "identity.blocklisted", Area: AreaIdentity, Severity: High, Subject: row.Target,
				Title:    "listed on " + row.List + ": mail from this host is refused or marked as spam by everyone who uses the list",
				Evidence: []string{fmt.Sprintf("%s on %s: %s %s", row.Target, row.List, strings.Join(row.Answers, ","), row.Meaning)},
				Fix:      "find the cause first (relayguard audit's other findings, relayguard report, egress watch), stop it, then request removal at the list's lookup page for " + row.Target})
		case row.Result == dnsbl.Skipped.String():
			if !slices.Contains(skipped, row.List) {
				skipped = append(skipped, row.List)
			}
		case row.Result == dnsbl.TempError.String() || row.Result == dnsbl.ListError.String():
			r.problem(AreaIdentity, "blocklists", fmt.Errorf("%s on %s: %s %s", row.Target, row.List, row.Result, row.Meaning))
		}
	}
	if len(skipped) > 0 {
		r.note("DNS lists skipped as unhealthy: %s", strings.Join(skipped, ", "))
	}
}

// checkMailAuth checks SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489)
// and MTA-STS (RFC 8461) records of one local domain.
func (r *run) checkMailAuth(ctx context.Context, domain string, pub []netip.Addr) {
	txt := func(name string) ([]string, bool) {
		t, err := r.res.LookupTXT(ctx, name)
		if dnsFail(err) {
			r.problem(AreaIdentity, "dns", fmt.Errorf("TXT %s: %w", name, err))
			return nil, false
		}
		return t, true
	}
	if t, ok := txt(domain); ok {
		recs := prefixed(t, "v=spf1")
		switch {
		case len(recs) == 0:
			r.add(Finding{Check: "identity.no-spf", Area: AreaIdentity, Severity: Medium, Subject: domain,
				Title: "no SPF record: anyone can forge mail from this domain, and receivers trust its mail less",
				Fix:   fmt.Sprintf("publish %s TXT \"v=spf1 %s -all\"", domain, spfMechs(pub))})
		case len(recs) > 1:
			r.add(Finding{Check: "identity.spf-multiple", Area: AreaIdentity, Severity: High, Subject: domain,
				Title: "more than one SPF record: SPF is a permanent error for every receiver (RFC 7208 4.5)", Evidence: recs,
				Fix: "merge them into one TXT record"})
		default:
			helo := firstOr(r.heloNames(), domain)
			for _, ip := range pub {
				res, err := spf.CheckHostWithSender(ip.AsSlice(), helo, "postmaster@"+domain, spf.WithResolver(r.res), spf.WithContext(ctx))
				switch res {
				case spf.Pass:
				case spf.TempError:
					r.problem(AreaIdentity, "spf", fmt.Errorf("SPF of %s for %s: %v", domain, ip, err))
				default:
					sev := High
					if res == spf.Neutral || res == spf.None {
						sev = Low
					}
					r.add(Finding{Check: "identity.spf-not-authorized", Area: AreaIdentity, Severity: sev, Subject: domain,
						Title:    fmt.Sprintf("SPF does not authorize this host's address %s: mail it sends for %s is %s", ip, domain, res),
						Evidence: []string{recs[0], fmt.Sprintf("check_host(%s, %s) = %s %v", ip, domain, res, errOrEmpty(err))},
						Fix:      fmt.Sprintf("add %s to the SPF record of %s", spfMechs([]netip.Addr{ip}), domain)})
				}
			}
		}
	}
	if t, ok := txt("_dmarc." + domain); ok {
		recs := prefixed(t, "v=DMARC1")
		switch {
		case len(recs) == 0:
			r.add(Finding{Check: "identity.no-dmarc", Area: AreaIdentity, Severity: Medium, Subject: domain,
				Title: "no DMARC record: receivers have no policy for mail that forges this domain",
				Fix:   fmt.Sprintf("publish _dmarc.%s TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@%s\"", domain, domain)})
		case strings.Contains(strings.ReplaceAll(strings.ToLower(recs[0]), " ", ""), "p=none"):
			r.add(Finding{Check: "identity.dmarc-none", Area: AreaIdentity, Severity: Low, Subject: domain,
				Title: "DMARC policy p=none: forged mail from this domain is delivered as usual", Evidence: recs,
				Fix: "once the reports show your own mail aligned, move to p=quarantine, then p=reject"})
		}
	}
	r.checkDKIM(ctx, domain)
	if t, ok := txt("_mta-sts." + domain); ok && len(prefixed(t, "v=STSv1")) == 0 {
		r.add(Finding{Check: "identity.no-mta-sts", Area: AreaIdentity, Severity: Low, Subject: domain,
			Title: "no MTA-STS record: senders may deliver to this domain without TLS or to a forged MX (RFC 8461)",
			Fix:   fmt.Sprintf("publish _mta-sts.%s TXT \"v=STSv1; id=1\" and https://mta-sts.%s/.well-known/mta-sts.txt (see docs/msgauth.md)", domain, domain)})
	}
}

func prefixed(txts []string, prefix string) []string {
	var out []string
	for _, t := range txts {
		if len(t) >= len(prefix) && strings.EqualFold(t[:len(prefix)], prefix) && (len(t) == len(prefix) || t[len(prefix)] == ' ' || t[len(prefix)] == ';') {
			out = append(out, t)
		}
	}
	return out
}

func spfMechs(pub []netip.Addr) string {
	var m []string
	for _, a := range pub {
		if a.Is4() {
			m = append(m, "ip4:"+a.String())
		} else {
			m = append(m, "ip6:"+a.String())
		}
	}
	if len(m) == 0 {
		return "mx"
	}
	return strings.Join(m, " ")
}

func firstOr(ss []string, def string) string {
	if len(ss) > 0 {
		return ss[0]
	}
	return def
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}
