package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/mtasts"
)

// Internal TLS policies of a target beyond the configured ones.
const (
	policyDANE = "dane" // TLS required, peer authenticated by TLSA records (RFC 7672)
	policySTS  = "sts"  // TLS required, WebPKI-valid certificate for the MX name (RFC 8461 enforce)
)

// tlsRequired reports whether a policy refuses clear text.
func tlsRequired(p string) bool {
	return p == config.TLSEncrypt || p == config.TLSVerify || p == policyDANE || p == policySTS
}

// TLSResult is the outcome of one new SMTP session with a domain that has
// a DANE or MTA-STS policy, for TLS reporting (RFC 8460).
type TLSResult struct {
	Domain     string   // policy domain (the recipient domain)
	Type       string   // "sts" or "tlsa" (RFC 8460 §4.4 policy-type)
	Policy     []string // policy-string: the policy lines or the TLSA records
	MXPatterns []string // mx-host of an STS policy
	MX         string   // receiving-mx-hostname
	IP         string   // receiving-ip
	OK         bool
	// Failure is an RFC 8460 §4.3 result-type, Reason the detail.
	Failure, Reason string
}

// TLSReporter records TLS results (internal/tlsrpt).
type TLSReporter interface {
	Record(TLSResult)
}

// security is what a domain's policies say about one MX host.
type security struct {
	policy  string      // TLS policy for the target
	dane    []*dns.TLSA // usable TLSA records (policyDANE)
	testing *mtasts.Policy
	report  *TLSResult // template of what to record; nil: nothing
}

// stsPolicy returns the MTA-STS policy of domain when MTA-STS is on.
func (s *SMTP) stsPolicy(ctx context.Context, domain string) mtasts.Result {
	if s.STS == nil {
		return mtasts.Result{}
	}
	return s.STS.Get(ctx, domain)
}

// hostSecurity decides how to talk to MX host h of domain, in this order:
// a tls_policies entry for the domain (the operator's word); DANE when
// the MX RRset and the host's TLSA records are DNSSEC-validated (RFC 7672,
// which takes precedence over MTA-STS, RFC 8461 §2); the domain's MTA-STS
// policy; tls_policy. skip is non-nil when the host must not be used:
// not allowed by an enforced MTA-STS policy (RFC 8461 §4.1), or its TLSA
// records could not be looked up (DANE fails closed, RFC 7672 §2.2.1).
func (s *SMTP) hostSecurity(ctx context.Context, domain string, h MXHost, mxSecure bool, port int, sts mtasts.Result) (sec security, skip error) {
	if p, ok := s.TLSPolicies[strings.ToLower(domain)]; ok {
		return security{policy: p}, nil
	}
	if s.DANE && mxSecure {
		recs, secure, err := s.Resolver.TLSA(ctx, h.Name, port)
		if err != nil {
			s.report(TLSResult{Domain: domain, Type: "tlsa", MX: h.Name, Failure: "dnssec-invalid", Reason: err.Error()})
			return security{}, fmt.Errorf("DANE: TLSA lookup for %s failed, not delivering without it: %v", h.Name, err)
		}
		if secure && len(recs) > 0 {
			var strs []string
			for _, r := range recs {
				strs = append(strs, r.String())
			}
			tmpl := &TLSResult{Domain: domain, Type: "tlsa", Policy: strs, MX: h.Name}
			usable := usableTLSA(recs)
			if len(usable) == 0 {
				// RFC 7672 §2.2: TLSA records but none usable: TLS is
				// still mandatory, without authentication.
				return security{policy: config.TLSEncrypt, report: tmpl}, nil
			}
			return security{policy: policyDANE, dane: usable, report: tmpl}, nil
		}
	}
	if p := sts.Policy; p != nil && p.Mode != mtasts.None {
		tmpl := &TLSResult{Domain: domain, Type: "sts", Policy: stsStrings(p), MXPatterns: p.MX, MX: h.Name}
		if p.Mode == mtasts.Enforce {
			if !p.Matches(h.Name) {
				s.report(withFailure(*tmpl, "validation-failure", "MX host not allowed by the MTA-STS policy"))
				return security{}, fmt.Errorf("MTA-STS: %s is not an MX host of %s's policy (%s)", h.Name, domain, strings.Join(p.MX, ", "))
			}
			return security{policy: policySTS, report: tmpl}, nil
		}
		// testing: deliver as usual, report what enforce would refuse.
		if !p.Matches(h.Name) {
			s.report(withFailure(*tmpl, "validation-failure", "MX host not allowed by the MTA-STS policy"))
		}
		return security{policy: s.policyFor(domain), testing: p, report: tmpl}, nil
	}
	return security{policy: s.policyFor(domain)}, nil
}

// nextHopDANE applies DANE to a host reached by name rather than through
// a domain's MX records — the smarthost, a transport's smtp:host:port (RFC
// 7672 §2.2.2, "non-MX destinations"): when its address records are
// DNSSEC-validated (secure), TLSA records at _PORT._tcp of the name its
// CNAME chain ends at (cname), else of host itself, make TLS mandatory
// and authenticate the peer as for an MX host, and the reference names
// for DANE-TA are both names (§3.2.2). Without secure address records or
// secure TLSA records, policy is returned unchanged. A TLSA lookup that
// fails is an error: DANE fails closed (§2.2). Records that are all
// unusable (PKIX-TA/EE) still make TLS mandatory.
func (s *SMTP) nextHopDANE(ctx context.Context, host, cname string, port int, secure bool, policy string) (t target, err error) {
	t = target{name: host, policy: policy}
	if !s.DANE || !secure {
		return t, nil
	}
	bases := []string{host}
	if cname != "" && !strings.EqualFold(cname, host) {
		bases = []string{cname, host}
	}
	for _, base := range bases {
		recs, ok, err := s.Resolver.TLSA(ctx, base, port)
		if err != nil {
			return t, fmt.Errorf("DANE: TLSA lookup for %s failed, not delivering without it: %v", base, err)
		}
		if !ok || len(recs) == 0 {
			continue
		}
		usable := usableTLSA(recs)
		if len(usable) == 0 {
			if !tlsRequired(policy) {
				t.policy = config.TLSEncrypt
			}
			return t, nil
		}
		t.name, t.policy, t.dane, t.refNames = base, policyDANE, usable, bases
		return t, nil
	}
	return t, nil
}

func stsStrings(p *mtasts.Policy) []string {
	out := []string{"version: STSv1", "mode: " + p.Mode}
	for _, m := range p.MX {
		out = append(out, "mx: "+m)
	}
	return append(out, fmt.Sprintf("max_age: %d", int(p.MaxAge.Seconds())))
}

func withFailure(r TLSResult, kind, reason string) TLSResult {
	r.Failure, r.Reason = kind, reason
	return r
}

func (s *SMTP) report(r TLSResult) {
	if s.Reporter != nil {
		s.Reporter.Record(r)
	}
}

// usableTLSA keeps the records an SMTP client may use (RFC 7672 §3.1):
// DANE-TA(2) and DANE-EE(3), selectors 0 and 1, matching types 0, 1, 2.
// PKIX-TA(0) and PKIX-EE(1) are not for SMTP.
func usableTLSA(recs []*dns.TLSA) []*dns.TLSA {
	var out []*dns.TLSA
	for _, r := range recs {
		if (r.Usage == 2 || r.Usage == 3) && r.Selector <= 1 && r.MatchingType <= 2 {
			out = append(out, r)
		}
	}
	return out
}

// errDANE is a certificate chain that no TLSA record authenticates.
var errDANE = errors.New("no TLSA record matches the certificate chain")

// verifyDANE authenticates a peer's chain with TLSA records (RFC 7672
// §3.1, RFC 7671): a DANE-EE(3) record matches the end-entity certificate
// (no name or expiry check); a DANE-TA(2) record matches a certificate of
// the chain, which then is the trust anchor that the end-entity
// certificate must chain to, valid for one of the reference names (the
// MX name; for a smarthost the TLSA base domain and the name configured,
// RFC 7672 §3.2.2). miekg/dns compares
// a record with a certificate (selector and matching type).
func verifyDANE(chain []*x509.Certificate, recs []*dns.TLSA, names []string) error {
	if len(chain) == 0 {
		return errDANE
	}
	for _, r := range recs {
		if r.Usage == 3 && r.Verify(chain[0]) == nil {
			return nil
		}
	}
	for _, r := range recs {
		if r.Usage != 2 {
			continue
		}
		for i, ta := range chain {
			if r.Verify(ta) != nil {
				continue
			}
			roots := x509.NewCertPool()
			roots.AddCert(ta)
			inter := x509.NewCertPool()
			for _, c := range chain[1:i] {
				inter.AddCert(c)
			}
			for _, host := range names {
				if i == 0 {
					// The trust anchor is the server certificate itself.
					if chain[0].VerifyHostname(host) == nil {
						return nil
					}
					continue
				}
				if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}); err == nil {
					return nil
				}
			}
		}
	}
	return errDANE
}

// tlsConfig is the TLS client configuration for a target and a policy.
func (s *SMTP) tlsConfig(t target, policy string, onVerify func(error)) *tls.Config {
	cfg := &tls.Config{ServerName: t.name, RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12}
	switch {
	case policy == policyDANE:
		cfg.InsecureSkipVerify = true // replaced by the TLSA check
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			names := t.refNames
			if len(names) == 0 {
				names = []string{t.name}
			}
			err := verifyDANE(cs.PeerCertificates, t.dane, names)
			onVerify(err)
			return err
		}
	case policy == config.TLSVerify || policy == policySTS:
		cfg.VerifyConnection = func(tls.ConnectionState) error { onVerify(nil); return nil }
	case t.testing != nil:
		// MTA-STS testing (RFC 8461 §5): verify as enforce would, report,
		// deliver anyway.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			onVerify(verifyWebPKI(cs.PeerCertificates, t.name, s.RootCAs))
			return nil
		}
	default:
		// may and encrypt: encryption without authentication (RFC 7435).
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

func verifyWebPKI(chain []*x509.Certificate, host string, roots *x509.CertPool) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host})
	return err
}

// failureType maps a session error to an RFC 8460 §4.3 result-type, ""
// for failures that are not about TLS (connection refused, timeouts).
func failureType(err error, policy string) string {
	var hn x509.HostnameError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.Is(err, errNoStartTLS):
		return "starttls-not-supported"
	case errors.Is(err, errDANE):
		return "validation-failure"
	case errors.As(err, &hn):
		return "certificate-host-mismatch"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "certificate-expired"
	case errors.As(err, &ua), errors.As(err, &ci):
		return "certificate-not-trusted"
	}
	var te *TLSError
	if errors.As(err, &te) {
		return "validation-failure"
	}
	return ""
}

// errNoStartTLS is a peer that does not offer STARTTLS when TLS is
// required.
var errNoStartTLS = errors.New("the peer does not offer STARTTLS")

// reportSession records the TLS outcome of a new session with a host
// under a DANE or MTA-STS policy (RFC 8460): success when TLS was
// negotiated and the peer authenticated as the policy asks, the kind of
// failure otherwise; failures that are not about TLS are not counted.
func (s *SMTP) reportSession(t target, c *client, err error) {
	r := *t.report
	r.IP, _, _ = net.SplitHostPort(t.addr)
	switch {
	case err != nil:
		if r.Failure = failureType(err, t.policy); r.Failure == "" {
			return
		}
		r.Reason = err.Error()
	case !c.tls:
		r.Failure, r.Reason = "starttls-not-supported", "session without TLS"
	case c.verifyErr != nil:
		r.Failure, r.Reason = failureType(&TLSError{Err: c.verifyErr}, t.policy), c.verifyErr.Error()
	default:
		r.OK = true
	}
	if !r.OK {
		s.Log.Warn("deliver: TLS policy failure", "domain", r.Domain, "policy", r.Type, "mx", r.MX, "ip", r.IP,
			"result", r.Failure, "reason", r.Reason, "testing", t.testing != nil)
	}
	s.report(r)
}
