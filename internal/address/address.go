// Package address parses SMTP paths (RFC 5321 §4.1.2, with the UTF-8
// extensions of RFC 6531 §3.3) and gives the canonical form that the relay
// decision is made on.
//
// The parser is deliberately strict about what may route mail and lax about
// what may not:
//   - source routes (@a,@b:user@dom, RFC 5321 §4.1.1.3 and appendix C) are
//     parsed and discarded; they are never used for routing;
//   - "%", "!" and any "@" but the last one are characters of the local part
//     (no percent hack, no bang paths, no user@remote@local routing);
//   - quoted local parts are unquoted before any decision;
//   - domains are compared in their canonical form: IDNA A-labels, lower
//     case, no trailing dot;
//   - IP literals are kept as netip.Addr so the caller can decide whether
//     they are its own.
//
// It is hand-written because the standard library's net/mail implements
// RFC 5322 header syntax, not RFC 5321 paths (no source routes, no null
// path, different quoting and length rules).
package address

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// RFC 5321 §4.5.3.1 size limits.
const (
	MaxLocalPart = 64
	MaxDomain    = 255
	MaxPath      = 256
)

// Error is a path syntax error. Code/Enhanced are the reply to send.
type Error struct {
	Input    string
	Reason   string
	Enhanced string // "5.1.3" bad syntax, "5.6.7" non-ASCII without SMTPUTF8
}

func (e *Error) Error() string { return fmt.Sprintf("address %q: %s", e.Input, e.Reason) }

// Path is a parsed reverse-path or forward-path.
type Path struct {
	Null       bool       // the null reverse-path <>
	Postmaster bool       // the bare <Postmaster> forward-path (RFC 5321 §4.1.1.3)
	Local      string     // local part, unquoted
	Domain     string     // canonical domain (A-labels, lower case, no trailing dot); "" for literals
	Literal    netip.Addr // valid when the domain is an address literal
	Route      []string   // discarded source route, for logging only
	UTF8       bool       // the path contains non-ASCII characters
}

// IsLiteral reports whether the domain part is an address literal.
func (p Path) IsLiteral() bool { return p.Literal.IsValid() }

// DomainString is the domain as written in the canonical address: the
// domain, or the literal in brackets.
func (p Path) DomainString() string {
	if p.Literal.IsValid() {
		if p.Literal.Is4() {
			return "[" + p.Literal.String() + "]"
		}
		return "[IPv6:" + p.Literal.String() + "]"
	}
	return p.Domain
}

// String is the canonical mailbox without angle brackets: "" for the null
// path, "postmaster" for bare postmaster, else local@domain with the local
// part re-quoted if it is not a dot-string.
func (p Path) String() string {
	switch {
	case p.Null:
		return ""
	case p.Postmaster && p.Domain == "" && !p.Literal.IsValid():
		return "postmaster"
	}
	return QuoteLocal(p.Local) + "@" + p.DomainString()
}

// QuoteLocal returns the local part as a dot-string when it is one, and as a
// quoted-string otherwise (RFC 5321 §4.1.2).
func QuoteLocal(local string) string {
	if isDotString(local) {
		return local
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range local {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// Options control parsing.
type Options struct {
	SMTPUTF8 bool // the transaction declared SMTPUTF8 (RFC 6531 §3.4)
}

func errf(in, enh, format string, a ...any) error {
	return &Error{Input: in, Reason: fmt.Sprintf(format, a...), Enhanced: enh}
}

// SplitArg splits the argument of MAIL FROM: / RCPT TO: into the bracketed
// path and the ESMTP parameters, honouring quotes inside the path. A space
// between the colon and "<" is tolerated, as Postfix does.
func SplitArg(arg string) (path, params string, err error) {
	s := strings.TrimLeft(arg, " ")
	if !strings.HasPrefix(s, "<") {
		return "", "", errf(arg, "5.5.2", "path must be enclosed in <>")
	}
	inQuote := false
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '>':
			rest := s[i+1:]
			if rest != "" && rest[0] != ' ' {
				return "", "", errf(arg, "5.5.2", "junk after path")
			}
			return s[:i+1], strings.TrimSpace(rest), nil
		}
	}
	return "", "", errf(arg, "5.5.2", "path is missing its closing >")
}

// ParseReverse parses a reverse-path ("<>" or a Path), the argument of MAIL.
func ParseReverse(path string, o Options) (Path, error) {
	if path == "<>" {
		return Path{Null: true}, nil
	}
	return parsePath(path, o, false)
}

// ParseForward parses a forward-path, the argument of RCPT.
func ParseForward(path string, o Options) (Path, error) {
	return parsePath(path, o, true)
}

func parsePath(in string, o Options, forward bool) (Path, error) {
	var p Path
	if len(in) > MaxPath+2 {
		return p, errf(in, "5.1.3", "path longer than %d octets", MaxPath)
	}
	if len(in) < 2 || in[0] != '<' || in[len(in)-1] != '>' {
		return p, errf(in, "5.1.3", "path must be enclosed in <>")
	}
	s := in[1 : len(in)-1]
	if s == "" {
		return p, errf(in, "5.1.3", "empty path")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return p, errf(in, "5.1.3", "control character in path")
		}
	}
	if !utf8.ValidString(s) {
		return p, errf(in, "5.1.3", "path is not valid UTF-8")
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			p.UTF8 = true
			break
		}
	}
	if p.UTF8 && !o.SMTPUTF8 {
		// RFC 6531 §3.7.4.? — non-ASCII addresses need SMTPUTF8.
		return p, errf(in, "5.6.7", "non-ASCII address without SMTPUTF8")
	}
	// A-d-l: "@dom,@dom:" — RFC 5321 §4.1.1.3: MUST accept, SHOULD ignore.
	if s[0] == '@' {
		colon := routeEnd(s)
		if colon < 0 {
			return p, errf(in, "5.1.3", "source route without ':'")
		}
		for _, hop := range strings.Split(s[:colon], ",") {
			hop = strings.TrimSpace(hop)
			if len(hop) < 2 || hop[0] != '@' {
				return p, errf(in, "5.1.3", "bad source route hop %q", hop)
			}
			if _, _, err := parseDomain(hop[1:], in); err != nil {
				return p, err
			}
			p.Route = append(p.Route, hop[1:])
		}
		s = s[colon+1:]
		if s == "" {
			return p, errf(in, "5.1.3", "source route without mailbox")
		}
	}
	local, domain, err := splitMailbox(s, in)
	if err != nil {
		return p, err
	}
	if domain == "" {
		if forward && len(p.Route) == 0 && strings.EqualFold(local, "postmaster") {
			p.Postmaster = true
			p.Local = "postmaster"
			return p, nil
		}
		return p, errf(in, "5.1.3", "address has no domain")
	}
	p.Local = local
	if len(p.Local) > MaxLocalPart*4 { // lenient: RFC 5321 §4.5.3.1.1 is 64, UTF-8 may need more
		return p, errf(in, "5.1.3", "local part longer than %d octets", MaxLocalPart*4)
	}
	dom, lit, err := parseDomain(domain, in)
	if err != nil {
		return p, err
	}
	p.Domain, p.Literal = dom, lit
	if strings.EqualFold(p.Local, "postmaster") && forward {
		p.Postmaster = true
	}
	return p, nil
}

// routeEnd finds the ':' that ends an A-d-l, skipping colons inside
// address literals such as @[IPv6:2001:db8::1].
func routeEnd(s string) int {
	inLit := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			inLit = true
		case ']':
			inLit = false
		case ':':
			if !inLit {
				return i
			}
		}
	}
	return -1
}

// splitMailbox splits at the last "@" outside quotes and unquotes the local
// part. Unquoted local parts may contain any atext, dots, and "@" — every
// "@" but the last is a character of the local part, never a route.
func splitMailbox(s, in string) (local, domain string, err error) {
	at := -1
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '@':
			at = i
		}
	}
	if inQuote {
		return "", "", errf(in, "5.1.3", "unterminated quoted string")
	}
	lp := s
	if at >= 0 {
		lp, domain = s[:at], s[at+1:]
		if domain == "" {
			return "", "", errf(in, "5.1.3", "empty domain")
		}
	}
	if lp == "" {
		return "", "", errf(in, "5.1.3", "empty local part")
	}
	local, err = unquoteLocal(lp, in)
	return local, domain, err
}

// unquoteLocal turns a local part that is a sequence of dot-string and
// quoted-string pieces into its value: `"T@D"` → `T@D`, `"a b"` → `a b`,
// `"x".y` → `x.y` (mixed quoting is accepted and flattened).
func unquoteLocal(lp, in string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(lp); i++ {
		c := lp[i]
		switch {
		case c == '"':
			i++
			for ; i < len(lp) && lp[i] != '"'; i++ {
				if lp[i] == '\\' {
					i++
					if i >= len(lp) {
						return "", errf(in, "5.1.3", "dangling backslash in quoted local part")
					}
				}
				b.WriteByte(lp[i])
			}
		case c == '\\':
			return "", errf(in, "5.1.3", "backslash outside quotes in local part")
		case c == ' ' || c == ',' || c == ':' || c == ';' || c == '<' || c == '>' || c == '(' || c == ')' || c == '[' || c == ']':
			return "", errf(in, "5.1.3", "character %q not allowed in unquoted local part", c)
		default:
			b.WriteByte(c)
		}
	}
	v := b.String()
	if v == "" {
		return "", errf(in, "5.1.3", "empty local part")
	}
	return v, nil
}

var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// parseDomain returns the canonical domain or the literal address.
func parseDomain(d, in string) (string, netip.Addr, error) {
	if strings.HasPrefix(d, "[") {
		if !strings.HasSuffix(d, "]") {
			return "", netip.Addr{}, errf(in, "5.1.3", "unterminated address literal")
		}
		lit := d[1 : len(d)-1]
		var addr netip.Addr
		var err error
		if len(lit) > 5 && strings.EqualFold(lit[:5], "IPv6:") {
			addr, err = netip.ParseAddr(lit[5:])
			if err == nil && !addr.Is6() {
				err = errors.New("not an IPv6 address")
			}
		} else {
			addr, err = netip.ParseAddr(lit)
			if err == nil && !addr.Is4() {
				err = errors.New("IPv6 literal needs the IPv6: tag (RFC 5321 §4.1.3)")
			}
		}
		if err != nil {
			return "", netip.Addr{}, errf(in, "5.1.3", "bad address literal %q: %v", d, err)
		}
		if addr.Zone() != "" {
			return "", netip.Addr{}, errf(in, "5.1.3", "address literal with zone %q", d)
		}
		return "", addr.Unmap(), nil
	}
	canon, err := CanonicalDomain(d)
	if err != nil {
		return "", netip.Addr{}, errf(in, "5.1.3", "%v", err)
	}
	return canon, netip.Addr{}, nil
}

// CanonicalDomain returns d in the form domains are compared in: IDNA
// A-labels (RFC 5891), lower case, without a trailing dot. It rejects
// domains that are not host names.
func CanonicalDomain(d string) (string, error) {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", errors.New("empty domain")
	}
	a, err := idnaProfile.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("bad domain %q: %v", d, err)
	}
	// IDNA mapping turns U+3002 and other full stops into "."; trim the
	// root dot again after it.
	a = strings.TrimSuffix(strings.ToLower(a), ".")
	if len(a) > MaxDomain {
		return "", fmt.Errorf("domain %q longer than %d octets", d, MaxDomain)
	}
	for label := range strings.SplitSeq(a, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("bad domain %q: empty or overlong label", d)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("bad domain %q: character %q", d, c)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("bad domain %q: label starts or ends with '-'", d)
		}
	}
	return a, nil
}

// atext per RFC 5322 §3.2.3, plus UTF-8 (RFC 6531 §3.3).
func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80 ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}
