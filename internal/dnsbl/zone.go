// Package dnsbl queries DNS block and allow lists (RFC 5782): client-IP lists
// with reversed-octet and reversed-nibble names, and domain lists for sender
// and HELO names. Zones are written in Postfix postscreen's syntax
// zone[=filter][*weight], answers are cached for their TTL within a floor
// and a ceiling, answers outside a list's reply range are errors of that list
// (never listings), and every zone's health is checked with the RFC 5782 §5
// test points plus probes that no honest list answers.
package dnsbl

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
)

// Zone is one configured list (parsed with zonespec.Parse).
type Zone = zonespec.Zone

// IPQuery is the name to ask for ip in zone: the reversed octets of an IPv4
// address (RFC 5782 §2.1) or the 32 reversed nibbles of an IPv6 address
// (§2.4), followed by the zone. IPv4-mapped IPv6 addresses are asked as IPv4.
func IPQuery(ip netip.Addr, zone string) string {
	ip = ip.Unmap()
	if ip.Is4() {
		var b strings.Builder
		o := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(o[i])))
			b.WriteByte('.')
		}
		b.WriteString(zone)
		return b.String()
	}
	return nibbleQuery(ip, zone)
}

// nibbleQuery is the reversed-nibble name of any address as 128 bits
// (RFC 5782 §2.4), even for IPv4-mapped ones: the IPv6 test point
// ::FFFF:7F00:2 of §5 is asked this way.
func nibbleQuery(ip netip.Addr, zone string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	o := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[o[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[o[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString(zone)
	return b.String()
}

// DomainQuery is the name to ask for a domain in a domain list (RFC 5782
// §2.3): the domain itself prepended to the zone.
func DomainQuery(domain, zone string) string {
	return strings.ToLower(strings.TrimSuffix(domain, ".")) + "." + zone
}

// DomainQueryable reports whether d (a sender domain or HELO name, as the
// client gave it) may be asked in a domain list: a host name with at least
// two labels (RFC 5782 §2.3) whose query name stays a valid DNS name. An
// IP address is not a domain: domain lists refuse such queries with an
// error code (Spamhaus DBL answers 127.0.1.255, "IP queries prohibited"),
// and a client must not be able to turn a list's health to refusing just
// by saying "HELO 192.0.2.1".
func DomainQueryable(d string) bool {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	if d == "" || len(d) > 200 || !strings.Contains(d, ".") || !zonespec.HostChars(strings.ToLower(d)) {
		return false
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return false
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	// RFC 3696 §2: a top-level domain is never all-numeric, so
	// "192.0.2.300" is a mistyped address, not a name.
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// Classify is the one rule for what a list's answer means, used by the
// policy checks, the health checks and `relayguard dnsbl check` alike: no
// address is Clean; an answer with any address that no list gives as a
// listing (AnswerError) is a ListError — an error of that list, never a
// listing and never clean (Status.Unanswered); otherwise the answer is
// Listed if one of its addresses passes the zone's filter, else Clean. One
// such answer never switches a zone off: it has the zone's health checked
// (Checker.confirmListError), and only that check may find the list
// refusing everyone.
func Classify(z *Zone, answers []netip.Addr) (Status, string) {
	st := Clean
	for _, a := range answers {
		if why := AnswerError(a); why != "" {
			return ListError, why
		}
		if z == nil || z.Match(a) {
			st = Listed
		}
	}
	return st, ""
}

// AnswerError says why an answer is an error of the list rather than a
// listing, or "" if it is a valid answer: a refusal code (refusalCode) or
// an address no list gives (invalidAnswer).
func AnswerError(a netip.Addr) string {
	if why := refusalCode(a); why != "" {
		return "error code " + a.String() + " (" + why + ")"
	}
	return invalidAnswer(a)
}

// refusalCode says what a list's error code means, or "" if a is none.
// Lists signal that they refuse to answer with codes such as Spamhaus's
// 127.255.255.252/254/255 (typo in the query, query through a public
// resolver, over quota), Spamhaus DBL's 127.0.1.255 and dnswl.org's
// 127.0.0.255.
func refusalCode(a netip.Addr) string {
	a = a.Unmap()
	if !a.Is4() || !netip.MustParsePrefix("127.0.0.0/8").Contains(a) {
		return ""
	}
	b := a.As4()
	switch {
	case b[1] == 255 && b[2] == 255:
		return "refused: public resolver, over quota or bad query"
	case b[3] == 255:
		return "refused: public resolver or over quota"
	}
	return ""
}

// invalidAnswer says why a is no listing any list gives, or "": RFC 5782
// §2.3 keeps listings in 127.0.0.0/8 and reserves 127.0.0.1. A list whose
// domain expired and was parked answers the parking server's address.
func invalidAnswer(a netip.Addr) string {
	a = a.Unmap()
	if !a.Is4() || !netip.MustParsePrefix("127.0.0.0/8").Contains(a) {
		return "answer " + a.String() + " outside 127.0.0.0/8"
	}
	if a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
		return "answer 127.0.0.1 (RFC 5782 §2.3: not a valid listing)"
	}
	return ""
}
