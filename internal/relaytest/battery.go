package relaytest

import (
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Form is one relay attempt: the reverse-path and forward-path sent between
// the angle brackets of MAIL FROM:<...> and RCPT TO:<...>, verbatim.
type Form struct {
	Name  string // stable name, e.g. "percent-hack-ip"
	Group string // classic, maps, modern
	From  string
	To    string
	UTF8  bool // needs SMTPUTF8 (RFC 6531)
}

// Target is what the forms are built from.
type Target struct {
	From       string     // outside sender, local@domain
	To         string     // outside recipient, local@domain
	ServerName string     // the server's own name (from the banner unless given)
	IP         netip.Addr // the server's address
}

// ipLiteral renders an address literal (RFC 5321 4.1.3).
func ipLiteral(a netip.Addr) string {
	a = a.WithZone("")
	if a.Is4() {
		return "[" + a.String() + "]"
	}
	return "[IPv6:" + a.String() + "]"
}

// ipv6Literal is the server's IPv6 literal; for an IPv4 server its
// IPv4-mapped form (RFC 4291 2.5.5.2), which a server that canonicalises
// literals carelessly may take for itself.
func ipv6Literal(a netip.Addr) string {
	a = a.WithZone("")
	if a.Is4() {
		return "[IPv6:::ffff:" + a.String() + "]"
	}
	return "[IPv6:" + a.String() + "]"
}

func split(addr string) (local, domain string) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}

// parentDomain is the server name without its first label, when it has at
// least three labels (mx.example.com → example.com); else the name itself
// (also for an address literal, used when the banner names no host).
func parentDomain(s string) string {
	if !strings.HasPrefix(s, "[") && strings.Count(s, ".") >= 2 {
		_, rest, _ := strings.Cut(s, ".")
		return rest
	}
	return s
}

// Battery builds the forms for one target. The order and names are stable;
// only the random subdomain changes from run to run.
//
// T is the outside recipient's local part, D its domain, F/FD the outside
// sender, S the server name, IP the server's address literal.
func Battery(t Target) []Form {
	T, D := split(t.To)
	F, FD := split(t.From)
	if FD == "" {
		FD = D
	}
	S := t.ServerName
	IP := ipLiteral(t.IP)
	IP6 := ipv6Literal(t.IP)
	out := T + "@" + D
	atIP := F + "@" + IP

	// A UTF-8 subdomain of the outside domain and its A-label (RFC 5890).
	uD := "relaytest-ü." + D
	aD, err := idna.Lookup.ToASCII(uD)
	if err != nil {
		aD = "xn--relaytest--9db." + D
	}

	forms := []Form{
		// The 16 address forms of the widely used relay scanners.
		{Name: "null-sender", Group: "classic", From: "", To: out},
		{Name: "outside-sender", Group: "classic", From: F + "@" + FD, To: out},
		{Name: "sender-server-name", Group: "classic", From: F + "@" + S, To: out},
		{Name: "sender-ip-literal", Group: "classic", From: atIP, To: out},
		{Name: "percent-hack-ip", Group: "classic", From: atIP, To: T + "%" + D + "@" + IP},
		{Name: "percent-hack-name", Group: "classic", From: atIP, To: T + "%" + D + "@" + S},
		{Name: "quoted-address", Group: "classic", From: atIP, To: `"` + out + `"`},
		{Name: "quoted-percent", Group: "classic", From: atIP, To: `"` + T + "%" + D + `"`},
		{Name: "double-at-ip", Group: "classic", From: atIP, To: out + "@" + IP},
		{Name: "quoted-at-ip", Group: "classic", From: atIP, To: `"` + out + `"@` + IP},
		{Name: "double-at-name", Group: "classic", From: atIP, To: out + "@" + S},
		{Name: "source-route-ip", Group: "classic", From: atIP, To: "@" + IP + ":" + out},
		{Name: "source-route-name", Group: "classic", From: atIP, To: "@" + S + ":" + out},
		{Name: "bang-path", Group: "classic", From: atIP, To: D + "!" + T},
		{Name: "bang-path-ip", Group: "classic", From: atIP, To: D + "!" + T + "@" + IP},
		{Name: "bang-path-name", Group: "classic", From: atIP, To: D + "!" + T + "@" + S},

		// The MAPS relay tester and OpenVAS forms.
		{Name: "sender-localhost", Group: "maps", From: F + "@localhost", To: out},
		{Name: "sender-no-domain", Group: "maps", From: F, To: out},
		{Name: "sender-postmaster", Group: "maps", From: "postmaster@" + S, To: out},
		{Name: "sender-postmaster-bare", Group: "maps", From: "postmaster", To: out},
		{Name: "random-subdomain", Group: "maps", From: F + "@" + FD, To: T + "@" + randomLabel(10) + "." + D},
		{Name: "vendor-sender", Group: "maps", From: "relayguard-relaytest@" + FD, To: out},
		{Name: "vendor-sender-server", Group: "maps", From: "relayguard-relaytest@" + S, To: out},

		// What older batteries never tried.
		{Name: "sender-ipv6-literal", Group: "modern", From: F + "@" + IP6, To: out},
		{Name: "percent-hack-ipv6", Group: "modern", From: atIP, To: T + "%" + D + "@" + IP6},
		{Name: "double-at-ipv6", Group: "modern", From: atIP, To: out + "@" + IP6},
		{Name: "source-route-ipv6", Group: "modern", From: atIP, To: "@" + IP6 + ":" + out},
		{Name: "uppercase-domain", Group: "modern", From: F + "@" + FD, To: T + "@" + strings.ToUpper(D)},
		{Name: "percent-hack-uppercase-name", Group: "modern", From: atIP, To: T + "%" + D + "@" + strings.ToUpper(S)},
		{Name: "trailing-dot-domain", Group: "modern", From: F + "@" + FD, To: out + "."},
		{Name: "percent-hack-trailing-dot", Group: "modern", From: atIP, To: T + "%" + D + "@" + S + "."},
		{Name: "double-at-trailing-dot", Group: "modern", From: atIP, To: out + "@" + S + "."},
		{Name: "utf8-domain", Group: "modern", From: F + "@" + FD, To: T + "@" + uD, UTF8: true},
		{Name: "punycode-domain", Group: "modern", From: F + "@" + FD, To: T + "@" + aD},
		{Name: "utf8-local-part", Group: "modern", From: F + "@" + FD, To: T + "-ü@" + D, UTF8: true},
		{Name: "percent-hack-utf8", Group: "modern", From: atIP, To: T + "%" + uD + "@" + S, UTF8: true},
		{Name: "quoted-local-part", Group: "modern", From: atIP, To: `"` + T + `"@` + D},
		{Name: "quoted-percent-name", Group: "modern", From: atIP, To: `"` + T + "%" + D + `"@` + S},
		{Name: "quoted-at-name", Group: "modern", From: atIP, To: `"` + out + `"@` + S},
		{Name: "half-quoted-percent", Group: "modern", From: atIP, To: `"` + T + `"%` + D + "@" + S},
		{Name: "quoted-bang-path", Group: "modern", From: atIP, To: `"` + D + "!" + T + `"@` + S},
		{Name: "quoted-domain", Group: "modern", From: atIP, To: T + `@"` + D + `"`},
		{Name: "percent-hack-localhost", Group: "modern", From: atIP, To: T + "%" + D + "@localhost"},
		{Name: "double-at-localhost", Group: "modern", From: atIP, To: out + "@localhost"},
		{Name: "source-route-localhost", Group: "modern", From: atIP, To: "@localhost:" + out},
		{Name: "sender-loopback-literal", Group: "modern", From: F + "@[127.0.0.1]", To: out},
		{Name: "sender-server-domain", Group: "modern", From: F + "@" + parentDomain(S), To: out},
		{Name: "sender-server-name-uppercase", Group: "modern", From: F + "@" + strings.ToUpper(S), To: out},
	}
	return forms
}
