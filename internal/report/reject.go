package report

import (
	"regexp"
	"strings"
)

// The helpers in this file reproduce how pflogsumm 1.1.5 condenses
// addresses, client names and rejection texts, so that the tables group the
// same lines under the same keys. The regular expressions below are
// re-expressions of pflogsumm's documented behaviour (read from the Debian
// package's script), written for Go's RE2; they run only on the less frequent
// lines (rejections, new clients).

var (
	reDomIPv4   = regexp.MustCompile(`^([^\[]*)\[((?:\d{1,3}\.){3}\d{1,3})\]`)
	reDomSlash  = regexp.MustCompile(`(?i)^([^/]*)/([0-9a-f.:]+)`)
	reDomOther  = regexp.MustCompile(`^([^\[\(/]*)[\[\(/]([^\]\)]+)[\]\)]:?\d*$`)
	reDomShort  = regexp.MustCompile(`^(.*)\.([^.]+)\.([^.]{3}|[^.]{2,3}\.[^.]{2})$`)
	rePipelin   = regexp.MustCompile(`^.*?\d{3} (Improper use of SMTP command pipelining);.*$`)
	reSizeLim   = regexp.MustCompile(`^.*?\d{3} (Message size exceeds fixed limit);.*$`)
	reSrvConf   = regexp.MustCompile(`^.*?\d{3} (Server configuration (?:error|problem));.*$`)
	reFromSrc   = regexp.MustCompile(`^.+? from (\S+?):.*$`)
	reSMTPConn1 = regexp.MustCompile(`(?:^|.* )connect to (\S+?): ([^;]+); address \S+ port.*$`)
	reSMTPConn2 = regexp.MustCompile(`(?:^|.* )connect to ([^\[]+)\[\S+?\]: (.+?) \(port \d+\)$`)
)

// gimmeDomain turns a client "name[addr]" into the name's registrable part
// ("mail.example.com[192.0.2.1]" → "example.com"), or the address when the
// name is "unknown". It returns "" for a string it cannot split, as
// pflogsumm does (such a client is then not counted as a sending domain).
func gimmeDomain(s string) string {
	if ip, ok := unknownClient(s); ok {
		return ip
	}
	if d, ok := namedClient(s); ok {
		return d
	}
	return gimmeDomainRE(s)
}

// namedClient is gimmeDomain of "NAME[a.b.c.d]" and "NAME[ADDR]" (an IPv6
// address) with an ASCII NAME, the usual shapes of a named client, by hand:
// reDomIPv4 (or, when that fails on a string without "/", "(" or ")",
// reDomOther, which then takes everything up to the first "]" ending the
// string), then reDomShort on the name (the expressions cost microseconds
// each, and a botnet's log names tens of thousands of clients). ok is false
// for any other shape.
func namedClient(s string) (string, bool) {
	b := strings.IndexByte(s, '[')
	if b < 0 {
		return "", false
	}
	name, rest := s[:b], s[b+1:]
	ip, ok := bracketIPv4(rest)
	if !ok {
		k := strings.IndexByte(rest, ']')
		if k < 1 || k != len(rest)-1 || strings.ContainsAny(s, "/()") {
			return "", false
		}
		ip = rest[:k]
	}
	if name == "" || name == "unknown" {
		return ip, true
	}
	for j := 0; j < len(name); j++ {
		if name[j] >= 0x80 || name[j] == '\n' { // (the expression counts characters; "." stops at newlines)
			return "", false
		}
	}
	// ^(.*)\.([^.]+)\.([^.]{3}|[^.]{2,3}\.[^.]{2})$: the last label has 3
	// characters, or 2 after one of 2 or 3; a non-empty label and a dot
	// before them.
	labelBefore := func(s string) (string, string, bool) { // s's last label, what precedes its dot
		k := strings.LastIndexByte(s, '.')
		if k < 0 {
			return "", "", false
		}
		return s[k+1:], s[:k], true
	}
	last, r, ok := labelBefore(name)
	if !ok {
		return name, true
	}
	tail := last
	switch len(last) {
	case 3:
	case 2:
		mid, r2, ok := labelBefore(r)
		if !ok || len(mid) < 2 || len(mid) > 3 {
			return name, true
		}
		tail, r = mid+"."+last, r2
	default:
		return name, true
	}
	g2, _, ok := labelBefore(r)
	if !ok || g2 == "" {
		return name, true
	}
	return strings.ToLower(g2 + "." + tail), true
}

// bracketIPv4 matches reDomIPv4's "(\d{1,3}\.){3}\d{1,3}\]" at the start
// of s and returns the address.
func bracketIPv4(s string) (string, bool) {
	i := 0
	for part := range 4 {
		d := 0
		for i < len(s) && d < 3 && isDigitByte(s[i]) {
			i++
			d++
		}
		sep := byte('.')
		if part == 3 {
			sep = ']'
		}
		if d == 0 || i >= len(s) || s[i] != sep {
			return "", false
		}
		i++
	}
	return s[:i-1], true
}

// unknownClient is gimmeDomain of "unknown[ADDR]", most of a botnet's
// clients: every expression of gimmeDomainRE gives ADDR when it has no
// bracket, parenthesis or slash.
func unknownClient(s string) (string, bool) {
	ip, ok := strings.CutPrefix(s, "unknown[")
	if !ok || len(ip) < 2 || ip[len(ip)-1] != ']' {
		return "", false
	}
	ip = ip[:len(ip)-1]
	for i := 0; i < len(ip); i++ {
		switch ip[i] {
		case '[', ']', '(', ')', '/':
			return "", false
		}
	}
	return ip, true
}

// gimmeDomainRE is gimmeDomain by pflogsumm's expressions alone.
func gimmeDomainRE(s string) string {
	var domain, ip string
	if m := reDomIPv4.FindStringSubmatch(s); m != nil {
		domain, ip = m[1], m[2]
	} else if m := reDomSlash.FindStringSubmatch(s); m != nil {
		domain, ip = m[1], m[2]
	} else if m := reDomOther.FindStringSubmatch(s); m != nil {
		domain, ip = m[1], m[2]
	}
	if domain == "" || domain == "unknown" {
		return ip
	}
	if m := reDomShort.FindStringSubmatch(domain); m != nil {
		return strings.ToLower(m[2] + "." + m[3])
	}
	return domain
}

// normalizeHost is pflogsumm's secondary sort key: for a dotted quad the
// four octets as bytes (numeric order), otherwise the lower-cased labels of
// the host or address in reverse order, concatenated (empty labels add
// nothing, as Perl's split and join).
func normalizeHost(s string) string { return string(appendNormalizedHost(nil, s)) }

// appendNormalizedHost appends normalizeHost(s) to dst: the sorting of
// tables with hundreds of thousands of rows writes every row's key into
// one buffer instead of allocating each.
//
// The key is read once: where it ends (the first blank), which classes of
// bytes it has and where its separators are, from which its labels are
// then copied out from the last (a second loop back over the key for the
// separators was a third of the cost: a botnet's log has 380,000 keys to
// rank, 121 M instructions in the serial summary). A key with bytes above
// 0x7f, or with more separators than are kept, is read by
// normalizedHostBytes.
func appendNormalizedHost(dst []byte, s string) []byte {
	var seps [16]int32
	n := 0         // the separators seen (those past len(seps) are not kept)
	var seen uint8 // the classes of the bytes before the end
	for i := 0; i < len(s); i++ {
		c := hostClass[s[i]]
		if c == 0 { // (most bytes)
			continue
		}
		if c&hostEnd != 0 {
			s = s[:i]
			break
		}
		if c&hostSep != 0 {
			if n < len(seps) {
				seps[n] = int32(i)
			}
			n++
		}
		seen |= c
	}
	if oct, ok := dottedQuad(s); ok {
		return append(dst, oct[:]...)
	}
	if seen&hostNonASCII != 0 || n > len(seps) {
		return normalizedHostBytes(dst, s, seen&hostNonASCII != 0)
	}
	start, end := len(dst), len(s)
	for k := n - 1; k >= 0; k-- {
		dst = append(dst, s[seps[k]+1:end]...)
		end = int(seps[k])
	}
	dst = append(dst, s[:end]...)
	if seen&hostUpper != 0 {
		for i := start; i < len(dst); i++ {
			if c := dst[i]; 'A' <= c && c <= 'Z' {
				dst[i] = c + 'a' - 'A'
			}
		}
	}
	return dst
}

// normalizedHostBytes is appendNormalizedHost of s, cut at its end
// already and not a dotted quad, byte by byte (nonASCII: s has a byte
// above 0x7f).
func normalizedHostBytes(dst []byte, s string, nonASCII bool) []byte {
	if nonASCII {
		s = strings.ToLower(s)
	}
	start, end := len(dst), len(s)
	for i := len(s) - 1; i >= 0; i-- {
		if hostClass[s[i]]&hostSep != 0 {
			dst = append(dst, s[i+1:end]...)
			end = i
		}
	}
	dst = append(dst, s[:end]...)
	if !nonASCII {
		for i := start; i < len(dst); i++ {
			if c := dst[i]; 'A' <= c && c <= 'Z' {
				dst[i] = c + 'a' - 'A'
			}
		}
	}
	return dst
}

// hostClass sorts bytes for appendNormalizedHost: one table lookup per
// byte where three or four comparisons were (it runs over every key of
// the big tables when they are ranked).
var hostClass = func() (t [256]uint8) {
	for _, c := range " \t\n" {
		t[c] = hostEnd
	}
	t['.'], t['@'] = hostSep, hostSep
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = hostUpper
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = hostNonASCII
	}
	return t
}()

const (
	hostEnd      = 1 << iota // ' ', '\t', '\n': the key ends before it
	hostSep                  // '.', '@': between labels
	hostUpper                // 'A'-'Z'
	hostNonASCII             // ≥ 0x80
)

// dottedQuad parses "d.d.d.d" with 1–3 digits each. Octets above 255 are
// kept modulo 256 only for ordering; pflogsumm compares them as characters.
func dottedQuad(s string) ([4]byte, bool) {
	var oct [4]byte
	n, digits, v := 0, 0, 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if digits == 0 || n > 3 {
				return oct, false
			}
			oct[n] = byte(v)
			n++
			digits, v = 0, 0
			continue
		}
		if s[i] < '0' || s[i] > '9' || digits == 3 {
			return oct, false
		}
		v = v*10 + int(s[i]-'0')
		digits++
	}
	return oct, n == 4
}

// stringTrimmer cuts s to max characters, the last three being "...".
func stringTrimmer(s string, max int, verbose bool) string {
	if !verbose && len(s) > max {
		return s[:max-3] + "..."
	}
	return s
}

// saidStringTrimmer shortens a remote server's reply: first by dropping
// everything up to the last " said: ", then leading "xxx: " prefixes, and
// finally by cutting with "...".
func saidStringTrimmer(s string, max int) string {
	for len(s) > max {
		var ok bool
		if s, ok = saidHead(s); ok {
			continue
		}
		if s, ok = colonHead(s); ok {
			continue
		}
		return s[:max-3] + "..."
	}
	return s
}

// rejectKey is how one smtpd reject/reject_warning/hold/discard line is
// filed: by SMTP stage (RCPT, MAIL, CONNECT, ...), condensed reason, and
// the sender, recipient or client it concerns.
type rejectKey struct{ typ, reason, data string }

// procReject condenses a rejection line the way pflogsumm's
// proc_smtpd_reject does. dom is gimmeDomain (possibly cached).
//
// The recipient and the sender are read from the line only for the rows
// that show them (a rejected sender or recipient, or --rej-add-from): most
// rejections of an attack are filed under their client (relay access,
// DNSBL), and the search for "to=<" and "from=<" was ~400 instructions
// of a rejection's ~2,400.
func procReject(line string, verbose, ignoreCase, addFrom bool, dom func(string) string) rejectKey {
	typ, from, rmdr, _ := rejHead(line)
	reas := rmdr
	if !verbose {
		switch typ {
		case "RCPT", "DATA", "CONNECT":
			reas = rejBlock(rejAddr(rejReason(rejProto(rejAngle(reas)))))
		case "MAIL":
			reas = rejMail(reas)
		default:
			reas = rejOther(reas)
		}
	}
	switch {
	case strings.HasPrefix(reas, "Sender address rejected:"):
		return rejectKey{typ, reas, rejSender(rmdr, ignoreCase)}
	case strings.HasPrefix(reas, "Recipient address rejected:") || strings.HasPrefix(reas, "User unknown ") || reas == "User unknown":
		to, sender := rejRecipient(rmdr, ignoreCase), ""
		data := to
		if addFrom {
			if sender = rejSender(rmdr, ignoreCase); sender == "" {
				sender = dom(from)
			}
			data += "  (" + sender + ")"
		}
		return rejectKey{typ, reas, data}
	case strings.IndexByte(reas, ';') < 0:
		// (each of the three below needs a ';': one search of a short
		// reason where the three were ~280 instructions a rejection)
	case strings.Contains(reas, "Improper use of SMTP command pipelining;") && rePipelin.MatchString(reas):
		reas = rePipelin.ReplaceAllString(reas, "$1")
		src := ""
		if m := reFromSrc.FindStringSubmatch(line); m != nil {
			src = m[1]
		}
		return rejectKey{typ, reas, src}
	case strings.Contains(reas, "Message size exceeds fixed limit;") && reSizeLim.MatchString(reas):
		reas = reSizeLim.ReplaceAllString(reas, "$1")
	case strings.Contains(reas, "Server configuration ") && reSrvConf.MatchString(reas):
		reas = "(Local) " + reSrvConf.ReplaceAllString(reas, "$1")
	}
	data := dom(from)
	if addFrom {
		data += "  (" + rejSender(rmdr, ignoreCase) + ")"
	}
	return rejectKey{typ, reas, data}
}

// rejRecipient is pflogsumm's recipient of a rejection's remainder rmdr:
// reRejTo1, else reRejTo2, else reRejTo3, else "<>".
func rejRecipient(rmdr string, ignoreCase bool) string {
	to, ok, _, _ := toAndFrom(rmdr)
	if !ok {
		if to, ok = rejToUnknown(rmdr); !ok {
			if to, ok = rejToLoose(rmdr); !ok {
				to = "<>"
			}
		}
	}
	if ignoreCase {
		to = strings.ToLower(to)
	}
	return to
}

// rejSender is pflogsumm's sender of a rejection's remainder rmdr:
// reRejFrom, else "<>".
func rejSender(rmdr string, ignoreCase bool) string {
	_, _, sender, ok := toAndFrom(rmdr)
	if !ok {
		sender = "<>"
	}
	if ignoreCase {
		sender = strings.ToLower(sender)
	}
	return sender
}
