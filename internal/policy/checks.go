package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/dnsbl"
)

func reject(code int, enh, format string, a ...any) Verdict {
	return Verdict{Action: Reject, Code: code, Enhanced: enh, Text: fmt.Sprintf(format, a...)}
}

func deferIfPermit(code int, enh, format string, a ...any) Verdict {
	return Verdict{Action: Defer, Code: code, Enhanced: enh, Text: fmt.Sprintf(format, a...), IfPermit: true}
}

var dunno = Verdict{Action: Dunno}

// isTempDNS reports whether err is a DNS failure that is not a definite
// negative answer: such failures are 4xx, never a pass.
func isTempDNS(err error) bool {
	var ne *net.DNSError
	if errors.As(err, &ne) {
		return !ne.IsNotFound
	}
	return err != nil
}

// eval runs one check. Checks with nothing to look at (no sender at the
// CONNECT stage, null sender, no client address) have no opinion.
func (e *Engine) eval(ctx context.Context, r *rule, req *Request) Verdict {
	ip := req.ClientAddress.Unmap()
	switch r.name {
	case "permit", "ok":
		return Verdict{Action: Permit}
	case "dunno":
		return dunno
	case "reject":
		return reject(554, "5.7.1", "Access denied")
	case "defer":
		return Verdict{Action: Defer, Code: 450, Enhanced: "4.7.1", Text: "Try again later"}
	case "permit_mynetworks":
		if ip.IsValid() && e.site.Trusted(ip) {
			return Verdict{Action: Permit}
		}
		return dunno
	case "permit_sasl_authenticated":
		if req.SASLUsername != "" {
			return Verdict{Action: Permit}
		}
		return dunno
	case "reject_unauth_destination":
		return e.unauthDestination(req)
	case "reject_rbl_client":
		if !ip.IsValid() {
			return dunno
		}
		return e.rbl(ctx, r.zone, ip, "", "Client host", "["+ip.String()+"]")
	case "reject_rhsbl_sender":
		// Address literals, bare IP addresses and names that are no DNS
		// names are not asked: they cannot be listed, and a domain list
		// answers an error code for them (see dnsbl.DomainQueryable).
		d := domainOf(req.Sender)
		if !dnsbl.DomainQueryable(d) {
			return dunno
		}
		return e.rbl(ctx, r.zone, netip.Addr{}, d, "Sender address", "<"+req.Sender+">")
	case "reject_rhsbl_helo":
		h := strings.TrimSuffix(req.Helo, ".")
		if !dnsbl.DomainQueryable(h) {
			return dunno
		}
		return e.rbl(ctx, r.zone, netip.Addr{}, h, "Helo command", "<"+req.Helo+">")
	case "reject_rhsbl_client":
		n := req.ClientName
		if n == "" || n == "unknown" || !dnsbl.DomainQueryable(n) {
			return dunno
		}
		return e.rbl(ctx, r.zone, netip.Addr{}, n, "Client host", n)
	case "reject_unknown_reverse_client_hostname":
		return e.unknownClient(ctx, req, false)
	case "reject_unknown_client_hostname":
		return e.unknownClient(ctx, req, true)
	case "reject_unknown_sender_domain":
		return e.unknownSenderDomain(ctx, req)
	case "reject_non_fqdn_helo":
		h := req.Helo
		if h == "" || strings.HasPrefix(h, "[") {
			return dunno
		}
		if !strings.Contains(strings.Trim(h, "."), ".") {
			return reject(504, "5.5.2", "<%s>: Helo command rejected: need fully-qualified hostname", h)
		}
		return dunno
	case "reject_invalid_helo_hostname":
		if req.Helo == "" {
			return dunno
		}
		if !validHelo(req.Helo) {
			return reject(501, "5.5.2", "<%s>: Helo command rejected: Invalid name", printable(req.Helo))
		}
		return dunno
	case "reject_non_fqdn_sender":
		if req.Sender == "" {
			return dunno
		}
		d := domainOf(req.Sender)
		if d == "" || (!strings.HasPrefix(d, "[") && !strings.Contains(strings.Trim(d, "."), ".")) {
			return reject(504, "5.5.2", "<%s>: Sender address rejected: need fully-qualified address", printable(req.Sender))
		}
		return dunno
	case "check_spf":
		return e.spf(ctx, req)
	case "check_dmarc":
		return e.dmarc(ctx, req)
	case "check_client_access":
		if !ip.IsValid() {
			return dunno
		}
		return r.tbl.lookup(ip)
	case "dnsbl_score":
		return e.dnsblScore(ctx, req)
	}
	return dunno
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}

// printable keeps a client-supplied string safe for a reply line.
func printable(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// unauthDestination is Postfix's reject_unauth_destination: the recipient
// domain must be local or a relay domain. Routing syntax in the local part
// (percent hack, bang paths, a quoted "@") would route elsewhere, so it is
// refused whatever the domain.
func (e *Engine) unauthDestination(req *Request) Verdict {
	if req.Recipient == "" {
		return dunno
	}
	i := strings.LastIndexByte(req.Recipient, '@')
	if i < 0 {
		// A bare local part such as "postmaster" (RFC 5321 §4.5.1).
		if strings.ContainsAny(req.Recipient, "%!") {
			return e.relayDenied(req)
		}
		return dunno
	}
	local, d := req.Recipient[:i], req.Recipient[i+1:]
	if strings.ContainsAny(local, "%!@") {
		return e.relayDenied(req)
	}
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		lit := strings.TrimPrefix(strings.ToLower(d[1:len(d)-1]), "ipv6:")
		if a, err := netip.ParseAddr(lit); err == nil && e.site.AllowIPLiterals && e.site.IsOwn(a) {
			return dunno
		}
		return e.relayDenied(req)
	}
	// The front door's recipient domain may be a U-label (SMTPUTF8) or end
	// in a dot; the site's domains are canonical (A-labels).
	d, err := address.CanonicalDomain(d)
	if err != nil {
		return e.relayDenied(req)
	}
	if e.site.IsLocal(d) || e.site.IsRelay(d) {
		return dunno
	}
	return e.relayDenied(req)
}

func (e *Engine) relayDenied(req *Request) Verdict {
	return reject(554, "5.7.1", "<%s>: Relay access denied", printable(req.Recipient))
}

// rbl asks one zone about the client address ip or, if ip is not valid,
// about domain. A list that could not say (dnsbl.Status.Unanswered) is a
// temporary failure, never a pass.
func (e *Engine) rbl(ctx context.Context, z *dnsbl.Zone, ip netip.Addr, domain, what, who string) Verdict {
	if e.bl == nil {
		return dunno
	}
	var res dnsbl.Result
	if ip.IsValid() {
		res = e.bl.QueryIP(ctx, z, ip)
	} else {
		res = e.bl.QueryDomain(ctx, z, domain)
	}
	switch {
	case res.Status == dnsbl.Listed:
		return reject(554, "5.7.1", "Service unavailable; %s %s blocked using %s", what, printable(who), z.Name)
	case res.Status.Unanswered():
		return deferIfPermit(451, "4.4.3", "%s %s: temporary failure looking up %s", what, printable(who), z.Name)
	}
	return dunno
}

// unknownClient implements reject_unknown_reverse_client_hostname (no PTR
// name) and, with confirm, reject_unknown_client_hostname (no PTR name whose
// A/AAAA records include the client: forward-confirmed reverse DNS).
// Names given by Postfix are trusted; "unknown" is looked up again so that a
// temporary failure is a 450, never a rejection.
func (e *Engine) unknownClient(ctx context.Context, req *Request, confirm bool) Verdict {
	ip := req.ClientAddress.Unmap()
	if !ip.IsValid() {
		return dunno
	}
	given := req.ReverseName
	if confirm {
		given = req.ClientName
	}
	if given != "" && given != "unknown" {
		return dunno
	}
	names, err := e.res.LookupAddr(ctx, ip.String())
	if isTempDNS(err) {
		return Verdict{Action: Defer, Code: 450, Enhanced: "4.7.25", Text: fmt.Sprintf("Client host rejected: cannot find your reverse hostname, [%s] (temporary DNS failure)", ip)}
	}
	if len(names) == 0 {
		return reject(550, "5.7.25", "Client host rejected: cannot find your reverse hostname, [%s]", ip)
	}
	if !confirm {
		return dunno
	}
	temp := false
	for _, n := range names[:min(len(names), 5)] {
		addrs, err := e.forward(ctx, n, ip)
		if isTempDNS(err) {
			temp = true
			continue
		}
		for _, a := range addrs {
			if a == ip {
				return dunno
			}
		}
	}
	if temp {
		return Verdict{Action: Defer, Code: 450, Enhanced: "4.7.25", Text: fmt.Sprintf("Client host rejected: cannot find your hostname, [%s] (temporary DNS failure)", ip)}
	}
	return reject(550, "5.7.25", "Client host rejected: cannot find your hostname, [%s]", ip)
}

// netIPResolver is net.Resolver's per-family lookup; *dnsutil.Resolver has it.
type netIPResolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// forward returns the addresses of name in ip's family. Only that family
// can confirm ip, so only its failure is a temporary failure: with both
// families asked together, an AAAA SERVFAIL hidden behind an A answer
// would turn an IPv6 client's DNS trouble into a 550.
func (e *Engine) forward(ctx context.Context, name string, ip netip.Addr) ([]netip.Addr, error) {
	if r, ok := e.res.(netIPResolver); ok {
		network := "ip6"
		if ip.Is4() {
			network = "ip4"
		}
		addrs, err := r.LookupNetIP(ctx, network, name)
		for i, a := range addrs {
			addrs[i] = a.Unmap()
		}
		return addrs, err
	}
	ips, err := e.res.LookupIPAddr(ctx, name)
	var out []netip.Addr
	for _, a := range ips {
		if x, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, x.Unmap())
		}
	}
	return out, err
}

// unknownSenderDomain is reject_unknown_sender_domain: the sender domain
// needs an MX or an A/AAAA record (RFC 5321 §5.1), and a null MX (RFC 7505
// §4.2) says it sends no mail.
func (e *Engine) unknownSenderDomain(ctx context.Context, req *Request) Verdict {
	d := domainOf(req.Sender)
	if d == "" || strings.HasPrefix(d, "[") {
		return dunno
	}
	mxs, err := e.res.LookupMX(ctx, d)
	if isTempDNS(err) {
		return deferIfPermit(450, "4.1.8", "<%s>: Sender address rejected: Domain not found (temporary DNS failure)", printable(req.Sender))
	}
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		return reject(550, "5.7.27", "<%s>: Sender address rejected: Domain %s has null MX (RFC 7505)", printable(req.Sender), d)
	}
	if len(mxs) > 0 {
		return dunno
	}
	addrs, err := e.res.LookupIPAddr(ctx, d)
	if isTempDNS(err) {
		return deferIfPermit(450, "4.1.8", "<%s>: Sender address rejected: Domain not found (temporary DNS failure)", printable(req.Sender))
	}
	if len(addrs) == 0 {
		return reject(550, "5.1.8", "<%s>: Sender address rejected: Domain not found", printable(req.Sender))
	}
	return dunno
}

// validHelo checks the HELO argument's syntax: an address literal that
// parses (RFC 5321 §4.1.3) or a host name of letters, digits, hyphens and
// underscores (seen in the wild) with labels of 1..63 octets.
func validHelo(h string) bool {
	if len(h) > 255 {
		return false
	}
	if strings.HasPrefix(h, "[") {
		if !strings.HasSuffix(h, "]") {
			return false
		}
		lit := h[1 : len(h)-1]
		if v6, ok := strings.CutPrefix(strings.ToLower(lit), "ipv6:"); ok {
			a, err := netip.ParseAddr(v6)
			return err == nil && a.Is6()
		}
		a, err := netip.ParseAddr(lit)
		return err == nil && a.Is4()
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false // a bare address must be a literal in brackets
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

// scoreBufs holds dnsblScore's results arrays, reused from one check to
// the next (a check with warm caches allocates nothing else).
var scoreBufs = sync.Pool{New: func() any { return new([]dnsbl.Result) }}

// dnsblScore is postscreen's weighted sum over [dnsbl] zones for the
// client address, the sender domain and the HELO name. An unreachable list
// defers only if its weight could have changed the outcome.
func (e *Engine) dnsblScore(ctx context.Context, req *Request) Verdict {
	if e.bl == nil || len(e.bl.Zones())+len(e.bl.DomainZones()) == 0 {
		return dunno
	}
	ip := req.ClientAddress.Unmap()
	var domains []string
	if d := domainOf(req.Sender); d != "" && !strings.HasPrefix(d, "[") {
		domains = append(domains, d)
	}
	if h := req.Helo; h != "" && !strings.HasPrefix(h, "[") {
		domains = append(domains, h)
	}
	buf := scoreBufs.Get().(*[]dnsbl.Result)
	s := e.bl.CheckInto(ctx, *buf, ip, domains...)
	defer func() {
		*buf = s.Results[:0]
		clear(s.Results)
		scoreBufs.Put(buf)
	}()
	th, allow := e.blc.RejectThreshold, e.blc.AllowThreshold
	up, down := 0, 0
	var failed []string
	seen := map[string]bool{}
	for _, r := range s.Unanswered() {
		if seen[r.Zone.Name] {
			continue
		}
		seen[r.Zone.Name] = true
		failed = append(failed, r.Zone.Name)
		if r.Zone.Weight > 0 {
			up += r.Zone.Weight
		} else {
			down += r.Zone.Weight
		}
	}
	// A list that could not be asked is neither clean nor listed: if its
	// weight could change the outcome, the answer is a 451. That holds
	// both ways: a failed allowlist (negative weight) might have kept a
	// client under the reject threshold.
	if s.Score >= th && s.Score+down >= th {
		return reject(554, "5.7.1", "Service unavailable; client [%s] has DNSBL score %d (%s)", ip, s.Score, s)
	}
	if s.Score+up >= th {
		return deferIfPermit(451, "4.4.3", "client [%s]: temporary failure looking up DNS lists %s", ip, strings.Join(failed, ","))
	}
	if allow < 0 && s.Score <= allow && s.Score+up <= allow {
		return Verdict{Action: Permit, Text: fmt.Sprintf("DNSBL score %d (%s)", s.Score, s)}
	}
	if s.Score != 0 {
		return Verdict{Action: Dunno, Prepend: fmt.Sprintf("X-Relayguard-DNSBL: score=%d (%s)", s.Score, s)}
	}
	return dunno
}
