package msgauth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"github.com/relayguard/relayguard/internal/address"
)

// Results of the checks, as RFC 8601 §2.7 names them.
const (
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	Neutral   = "neutral"
	None      = "none"
	TempError = "temperror"
	PermError = "permerror"
	Policy    = "policy"
)

// SPF is the SPF result of the session (RFC 7208), computed by the caller
// (the policy engine's check) from the client address, HELO and MAIL FROM.
type SPF struct {
	Result   string // pass, fail, softfail, neutral, none, temperror, permerror
	MailFrom string // MAIL FROM address, "" for the null sender
	Helo     string
	Reason   string
}

// Domain is the SPF-authenticated identifier's domain for DMARC: the MAIL
// FROM domain, or the HELO name for the null sender (RFC 7489 §3.1.2,
// RFC 7208 §2.4).
func (s SPF) Domain() string {
	if at := strings.LastIndexByte(s.MailFrom, '@'); at >= 0 {
		return strings.ToLower(s.MailFrom[at+1:])
	}
	return strings.ToLower(strings.TrimSuffix(s.Helo, "."))
}

// DKIM is the outcome of one DKIM-Signature field.
type DKIM struct {
	Result    string // pass, fail, neutral, temperror, permerror
	Domain    string // d=
	Selector  string // s=
	Algorithm string // a=
	B         string // the first 8 characters of b= (RFC 6008), to tell signatures apart
	Reason    string
}

// DMARC is the DMARC result for the author domain (RFC 7489).
type DMARC struct {
	Result string // pass, fail, none, temperror, permerror
	Domain string // author domain (header.from)
	// Policy is the published policy that applies to the author domain
	// (p=, or sp= for a subdomain of the record's domain): none,
	// quarantine, reject; "" without a record.
	Policy string
	// Disposition is what the policy asks of this message: Policy on a
	// failure, stepped down for messages sampled out by pct= (RFC 7489
	// §6.6.4); "none" otherwise.
	Disposition string
	Reason      string
}

// Results are the verdicts for one message.
type Results struct {
	SPF   SPF
	DKIM  []DKIM
	DMARC DMARC
}

// maxSignatures bounds the signatures verified per message (each costs a
// DNS query and a public-key operation).
const maxSignatures = 5

// Verify verifies the DKIM signatures of the message read from r (header
// and body, CRLF) and evaluates DMARC for its author domain with spf.
// DNS failures come back as temperror results, never as a verdict. The
// error is for a message that cannot be read.
func Verify(ctx context.Context, lookup LookupTXT, r io.Reader, spf SPF) (Results, error) {
	res := Results{SPF: spf}
	br := bufio.NewReaderSize(r, 4096)
	raw, fields, err := readHeader(br)
	if err != nil {
		return res, fmt.Errorf("reading message header: %w", err)
	}
	txt := strictLookup(ctx, lookup)
	var sigs []map[string]string
	for _, f := range fields {
		if strings.EqualFold(f.name, "DKIM-Signature") {
			tags, _ := parseTags(f.value())
			sigs = append(sigs, tags)
		}
	}
	if len(sigs) > 0 {
		vs, err := dkim.VerifyWithOptions(io.MultiReader(bytesReader(raw), br), &dkim.VerifyOptions{
			LookupTXT: txt, MaxVerifications: maxSignatures,
		})
		if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
			return res, fmt.Errorf("reading message: %w", err)
		}
		for i, v := range vs {
			d := DKIM{Domain: strings.ToLower(v.Domain), Result: Pass}
			if i < len(sigs) {
				d.Selector, d.Algorithm = sigs[i]["s"], sigs[i]["a"]
				if d.Domain == "" {
					d.Domain = strings.ToLower(sigs[i]["d"])
				}
				if b := strings.Join(strings.Fields(sigs[i]["b"]), ""); len(b) >= 8 {
					d.B = b[:8]
				}
			}
			switch {
			case v.Err == nil:
			case dkim.IsTempFail(v.Err):
				d.Result, d.Reason = TempError, v.Err.Error()
			case dkim.IsPermFail(v.Err):
				d.Result, d.Reason = PermError, v.Err.Error()
			default:
				d.Result, d.Reason = Fail, v.Err.Error()
			}
			res.DKIM = append(res.DKIM, d)
		}
	}
	res.DMARC = evaluate(txt, fields, spf, res.DKIM)
	return res, nil
}

func bytesReader(b []byte) io.Reader { return strings.NewReader(string(b)) }

// strictLookup adapts lookup for go-msgauth, which reads any error that
// is not a temporary net.Error as "no such record": only a definite
// negative answer (IsNotFound) may say that, every other failure is made
// temporary, so that a DNS outage is never read as a missing key or policy.
func strictLookup(ctx context.Context, lookup LookupTXT) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		txts, err := lookup(ctx, name)
		if err == nil {
			return txts, nil
		}
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, &net.DNSError{Err: de.Err, Name: name, IsNotFound: true}
		}
		return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
	}
}

// OrgDomain is the organizational domain of d (RFC 7489 §3.2): one label
// below its public suffix.
func OrgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

func aligned(a, b, mode string) bool {
	if mode == string(dmarc.AlignmentStrict) {
		return a == b
	}
	return OrgDomain(a) == OrgDomain(b)
}

// evaluate applies DMARC (RFC 7489 §6.6) to the author domains of the
// message. With several author domains (one From: field holding addresses
// of several domains) each is evaluated and the strictest outcome kept.
func evaluate(txt func(string) ([]string, error), fields []field, spf SPF, sigs []DKIM) DMARC {
	domains, err := authorDomains(fields)
	if err != nil {
		// No author domain to look up a policy for (RFC 7489 §6.6.1).
		return DMARC{Result: None, Reason: err.Error(), Disposition: "none"}
	}
	var out DMARC
	for i, d := range domains {
		r := evaluateDomain(txt, d, spf, sigs)
		if i == 0 || worse(r, out) {
			out = r
		}
	}
	return out
}

// worse orders outcomes: a failure with a stricter disposition first.
func worse(a, b DMARC) bool {
	rank := map[string]int{"reject": 3, "quarantine": 2, "none": 1, "": 0}
	res := map[string]int{Fail: 4, TempError: 3, PermError: 2, Pass: 1, None: 0}
	if res[a.Result] != res[b.Result] {
		return res[a.Result] > res[b.Result]
	}
	return rank[a.Disposition] > rank[b.Disposition]
}

func evaluateDomain(txt func(string) ([]string, error), from string, spf SPF, sigs []DKIM) DMARC {
	out := DMARC{Domain: from, Disposition: "none"}
	rec, recDomain, err := discover(txt, from)
	switch {
	case err != nil:
		out.Result, out.Reason = TempError, err.Error()
		return out
	case rec == nil:
		out.Result = None
		return out
	}
	out.Policy = string(rec.Policy)
	if recDomain != from && rec.SubdomainPolicy != "" {
		out.Policy = string(rec.SubdomainPolicy)
	}
	adkim, aspf := string(rec.DKIMAlignment), string(rec.SPFAlignment)
	temp := false
	for _, s := range sigs {
		if s.Result == Pass && aligned(s.Domain, from, adkim) {
			out.Result = Pass
			return out
		}
		temp = temp || s.Result == TempError && aligned(s.Domain, from, adkim)
	}
	if d := spf.Domain(); d != "" && aligned(d, from, aspf) {
		if spf.Result == Pass {
			out.Result = Pass
			return out
		}
		temp = temp || spf.Result == TempError
	}
	if temp {
		// An aligned identifier could not be checked: no verdict yet.
		out.Result, out.Reason = TempError, "an aligned SPF or DKIM check failed temporarily"
		return out
	}
	out.Result = Fail
	out.Disposition = out.Policy
	if rec.Percent != nil && *rec.Percent < 100 && rand.IntN(100) >= *rec.Percent {
		// RFC 7489 §6.6.4: a message sampled out gets the next policy down.
		switch out.Disposition {
		case dmarc.PolicyReject:
			out.Disposition = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			out.Disposition = string(dmarc.PolicyNone)
		}
		out.Reason = fmt.Sprintf("sampled out (pct=%d)", *rec.Percent)
	}
	return out
}

// discover finds the DMARC record for the author domain (RFC 7489
// §6.6.3): at _dmarc.FROM, else at _dmarc.ORG for its organizational
// domain. It returns the record and the domain it was found at; nil
// without a usable record. The selection of records is done here rather
// than by dmarc.Lookup because a name with two DMARC records has none (RFC
// 7489 §6.6.3 step 5), where dmarc.Lookup takes the first.
func discover(txt func(string) ([]string, error), from string) (*dmarc.Record, string, error) {
	for _, d := range []string{from, OrgDomain(from)} {
		txts, err := txt("_dmarc." + d)
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			txts, err = nil, nil
		}
		if err != nil {
			return nil, "", err
		}
		var recs []string
		for _, t := range txts {
			if strings.HasPrefix(strings.TrimSpace(t), "v=DMARC1") {
				recs = append(recs, t)
			}
		}
		if len(recs) == 1 {
			rec, err := dmarc.Parse(recs[0])
			if err == nil && rec.Policy != "" {
				return rec, d, nil
			}
		}
		if d == OrgDomain(from) {
			break
		}
	}
	return nil, "", nil
}

// authorDomains returns the distinct domains of the addresses in the
// From: fields. A message should have one From: field (RFC 5322 §3.6);
// one with several is judged by all their domains (RFC 7489 §6.6.1), so
// that a second From: cannot slip a forged domain past the check. A From:
// field that does not parse as an address list is judged by every domain
// written after an '@' in it: a mail reader may well show
// "CEO <ceo@bank.example>>" as from bank.example, and a field that merely
// fails to parse must not take the message out of DMARC's reach.
func authorDomains(fields []field) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(d string) {
		if c, err := address.CanonicalDomain(d); err == nil {
			d = c
		} else {
			d = strings.TrimSuffix(strings.ToLower(d), ".")
		}
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, f := range fields {
		if !strings.EqualFold(f.name, "From") {
			continue
		}
		list, err := addrParser.ParseList(f.value())
		if err != nil {
			for _, m := range atDomain().FindAllStringSubmatch(f.value(), -1) {
				add(m[1])
			}
			continue
		}
		for _, a := range list {
			if at := strings.LastIndexByte(a.Address, '@'); at >= 0 {
				add(a.Address[at+1:])
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no From field with an address in a domain", ErrNoAuthor)
	}
	return out, nil
}

// atDomain finds a domain after an '@' in an unparseable From: field.
// (Compiled on first use, as every package-level expression of a package
// `relayguard report` does not use: their compiling was part of every
// command's start.)
var atDomain = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`@\[?([\p{L}\p{N}._-]+)`) })

// Header renders the results as one Authentication-Results field (RFC
// 8601) for authserv-id id, each result on its own folded line, ending
// in CRLF. The syntax of each result comes from go-msgauth's authres.
func (r Results) Header(id string) string {
	var parts []authres.Result
	if r.SPF.Result != "" {
		parts = append(parts, &authres.SPFResult{Value: authres.ResultValue(r.SPF.Result), Reason: r.SPF.Reason,
			From: r.SPF.MailFrom, Helo: heloIfNull(r.SPF)})
	}
	if len(r.DKIM) == 0 {
		parts = append(parts, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, d := range r.DKIM {
		parts = append(parts, &authres.GenericResult{Method: "dkim", Value: authres.ResultValue(d.Result), Params: map[string]string{
			"reason": d.Reason, "header.d": d.Domain, "header.s": d.Selector, "header.a": d.Algorithm, "header.b": d.B,
		}})
	}
	parts = append(parts, &authres.GenericResult{Method: "dmarc", Value: authres.ResultValue(r.DMARC.Result), Params: map[string]string{
		"reason": r.DMARC.Reason, "header.from": r.DMARC.Domain, "policy.dmarc": r.DMARC.Policy,
	}})
	var b strings.Builder
	b.WriteString("Authentication-Results: " + id)
	for _, p := range parts {
		s := authres.Format(id, []authres.Result{p})
		b.WriteString(";\r\n\t" + strings.TrimSpace(strings.TrimPrefix(s, id+"; ")))
	}
	b.WriteString("\r\n")
	return b.String()
}

func heloIfNull(s SPF) string {
	if s.MailFrom == "" {
		return s.Helo
	}
	return ""
}

// AuthservID returns the authserv-id of an Authentication-Results field
// value (RFC 8601 §2.2), lower-cased and without a trailing dot, or "" if
// it has none. The authserv-id is a value (RFC 2045: a token or a
// quoted-string) that may have comments and folding white space around it
// (RFC 5322 §3.2.2 CFWS): `"mx.example.com"`, `(x) mx.example.com` and
// `mx.example.com(x)` all claim mx.example.com to a reader downstream.
// It is read here rather than with go-msgauth's authres.Parse, which reads
// none of these three forms (a forged field in one of them would pass the
// filter as someone else's).
func AuthservID(value string) string {
	v := strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(value)
	v = skipCFWS(v)
	var id string
	if strings.HasPrefix(v, "\"") {
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			c := v[i]
			if c == '\\' && i+1 < len(v) {
				i++
				b.WriteByte(v[i])
				continue
			}
			if c == '"' {
				break
			}
			b.WriteByte(c)
		}
		id = strings.TrimSpace(b.String())
	} else {
		end := strings.IndexAny(v, " \t;()\"")
		if end < 0 {
			end = len(v)
		}
		id = v[:end]
	}
	return strings.TrimSuffix(strings.ToLower(id), ".")
}

// skipCFWS skips white space and (nested) comments at the start of s
// (RFC 5322 §3.2.2).
func skipCFWS(s string) string {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0, c == ' ', c == '\t':
		default:
			return s[i:]
		}
	}
	return ""
}
