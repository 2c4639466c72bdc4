package report

import (
	"encoding/binary"
	"math/bits"
	"strings"
	"unsafe"
)

// Hand-written equivalents of the regular expressions pflogsumm applies to
// every rejection line. Go's regexp engine spent half of the report's time
// on them; these scan each string once or twice. Each function names the
// expression it implements (with Perl's leftmost, greedy/lazy semantics);
// TestFastMatchersAgree and FuzzFastMatchers check them against the
// expressions themselves (the re* variables in reject.go).

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigitByte(s[i]) {
			return false
		}
	}
	return true
}

// rejHead: ^.* \b(?:reject(?:_warning)?|hold|discard): (\S+) from (\S+?): (.*)$
// applied, as pflogsumm does, to the line after the timestamp and host
// ("postfix/smtpd[1]: " + s): the message is taken as preceded by a space,
// so that "reject: CONNECT from ..." at its very start matches too. The
// greedy ".*" makes the last keyword occurrence that fits win.
//
// The candidates (a keyword preceded by a space or the start and followed
// by ": ") are found forward through the colons, and each that fits
// replaces the one before. After one that fits, "KEYWORD: TYPE from
// FROM: " is passed over to FROM's ": ": TYPE and FROM hold no space, so a
// later candidate can start only at TYPE (it would make TYPE "KEYWORD2:"
// and FROM start with "from ", which then holds no ": " before its space:
// it cannot fit along with this one) or at FROM, when FROM is a keyword
// (then its ": " is read again as a candidate's). A client's colons (an
// IPv6 address) are not visited, and no list of candidates is kept (the
// line is read once whatever their number).
func rejHead(s string) (typ, from, rmdr string, ok bool) {
	k := 0
	if len(s) >= len("NOQUEUE: ") && s[:len("NOQUEUE: ")] == "NOQUEUE: " {
		k = len("NOQUEUE: ") // (its colon follows no keyword: a search and its tests less on most rejections)
	}
	for {
		p := strings.IndexByte(s[k:], ':')
		if p < 0 {
			return typ, from, rmdr, ok
		}
		p += k
		k = p + 1
		if p+1 == len(s) || s[p+1] != ' ' {
			continue
		}
		if c := s[max(p-1, 0)]; (c != 't' && c != 'd' && c != 'g') || !keywordBefore(s, p) { // (the keywords' last bytes: most ": " follow none)
			continue
		}
		if t, f, r, fits := rejHeadRest(s[p+2:]); fits {
			typ, from, rmdr, ok = t, f, r, true
			if k = len(s) - len(r); keywordBefore(s, k-2) {
				k -= 2 // FROM's ": ", a candidate's
			}
		}
	}
}

// keywordBefore reports whether s[:p] ends in one of rejHead's keywords
// preceded by a space or the start of s. The keywords are compared as
// constants (a load or two each, not a call), chosen by their last byte:
// most colons follow none of 't', 'd', 'g'.
func keywordBefore(s string, p int) bool {
	if p < 4 {
		return false
	}
	i := p
	switch s[p-1] {
	case 't':
		if p >= 6 && s[p-6:p] == "reject" {
			i = p - 6
		}
	case 'd':
		if s[p-4:p] == "hold" {
			i = p - 4
		} else if p >= 7 && s[p-7:p] == "discard" {
			i = p - 7
		}
	case 'g':
		if p >= 14 && s[p-14:p] == "reject_warning" {
			i = p - 14
		}
	}
	return i < p && (i == 0 || s[i-1] == ' ')
}

// rejHeadRest matches "(\S+) from (\S+?): (.*)$" at the start of r.
func rejHeadRest(r string) (typ, from, rmdr string, ok bool) {
	j := 0
	for j < len(r) && !isSpace(r[j]) {
		j++
	}
	if j == 0 || !strings.HasPrefix(r[j:], " from ") {
		return "", "", "", false
	}
	t := r[:j]
	r = r[j+len(" from "):]
	// (\S+?): — the first ": " reached through non-space bytes, after at
	// least one. The bytes between the colons and the bytes below '!'
	// (every space is one) are passed eight at a time.
	for j := 0; ; j++ {
		j = colonOrLow(r, j)
		if j == len(r) || isSpace(r[j]) {
			return "", "", "", false
		}
		if j >= 1 && r[j] == ':' && j+1 < len(r) && r[j+1] == ' ' {
			return t, r[:j], r[j+2:], true
		}
	}
}

// colonOrLow is the index of the first byte of s from p on that is ':' or
// below '!', or len(s), read eight bytes at a time (a client's
// "name[address]" is ~25 bytes).
func colonOrLow(s string, p int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	base := unsafe.Pointer(unsafe.StringData(s)) // (read as in indexEither)
	for ; p+8 <= len(s); p += 8 {
		w := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(base, p))[:]) // (s is not written: a read of 8 of its bytes, p+8 <= len(s))
		x := w ^ lo*':'
		// The zero bytes of x and the bytes of w below 0x21 get their high
		// bit: the lowest mark is a true one (a false mark lies only above
		// a true one of its kind).
		if m := ((x-lo)&^x | (w-lo*0x21)&^w) & hi; m != 0 {
			return p + bits.TrailingZeros64(m)>>3
		}
	}
	for p < len(s) && s[p] != ':' && s[p] > ' ' {
		p++
	}
	return p
}

// isSpace is Perl's and RE2's \s: [\t\n\f\r ].
func isSpace(c byte) bool {
	return c <= ' ' && (c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r') // (one comparison for most bytes)
}

// rejAngle: s/^(\d{3} <).*?(>:)/$1$2/
func rejAngle(s string) string {
	if len(s) < 5 || s[4] != '<' || s[3] != ' ' || !isDigits(s[:3]) { // (most replies: "NNN N.N.N ")
		return s
	}
	if k := strings.Index(s[5:], ">:"); k >= 0 {
		return s[:5] + s[5+k:]
	}
	return s
}

// rejProto: s/^(?:\d{3} \d\.\d\.\d )(Protocol error);.*$/$1/
func rejProto(s string) string {
	if len(s) >= 10+len("Protocol error;") && s[10] == 'P' && isDigits(s[:3]) && s[3] == ' ' && isDigitByte(s[4]) && s[5] == '.' &&
		isDigitByte(s[6]) && s[7] == '.' && isDigitByte(s[8]) && s[9] == ' ' &&
		strings.HasPrefix(s[10:], "Protocol error;") {
		return "Protocol error"
	}
	return s
}

// runNot returns the end of the run of bytes from p that are not in set
// (one or two bytes).
func runNot(s string, p int, set string) int { return indexEither(s, p, set[0], set[len(set)-1]) }

// indexEither is the index of the first byte of s from p on that is a or
// b, or len(s) (p when p > len(s)), read eight bytes at a time: a loop of
// two comparisons a byte through a rejection's reason (rejReason, runNot)
// was the costliest step of condensing it.
func indexEither(s string, p int, a, b byte) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	// Each word is read at an offset from the string's start, with the
	// patterns made once: a slice of the string and the patterns made at
	// every word were 38 instructions a word (a reason's ~13 words, 400
	// instructions a rejection).
	base := unsafe.Pointer(unsafe.StringData(s))
	la, lb := lo*uint64(a), lo*uint64(b)
	for ; p+8 <= len(s); p += 8 {
		w := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(base, p))[:]) // (s is not written: a read of 8 of its bytes, p+8 <= len(s))
		x, y := w^la, w^lb
		// The zero bytes of x or y get their high bit: the lowest mark is
		// the first match (a false mark lies only above a true one).
		if m := ((x-lo)&^x | (y-lo)&^y) & hi; m != 0 {
			return p + bits.TrailingZeros64(m)>>3
		}
	}
	for p < len(s) && s[p] != a && s[p] != b {
		p++
	}
	return p
}

// rejReason: s/^(?:.*?[:;] )(?:\[[^\]]+\] )?([^;,]+)[;,].*$/$1/
func rejReason(s string) string {
	for i := indexEither(s, 0, ':', ';'); i+1 < len(s); i = indexEither(s, i+1, ':', ';') {
		if s[i+1] != ' ' {
			continue
		}
		p := i + 2
		if p < len(s) && s[p] == '[' {
			if q := strings.IndexByte(s[p+1:], ']'); q > 0 && p+1+q+1 < len(s) && s[p+1+q+1] == ' ' {
				g := p + 1 + q + 2
				if e := runNot(s, g, ";,"); e > g && e < len(s) {
					return s[g:e]
				}
			}
		}
		if e := runNot(s, p, ";,"); e > p && e < len(s) {
			return s[p:e]
		}
	}
	return s
}

// rejAddr: s/^((?:Sender|Recipient) address rejected: [^:]+):.*$/$1/
func rejAddr(s string) string {
	var pre string
	switch {
	case len(s) == 0:
		return s
	case s[0] == 'S': // (the first byte chooses the prefix: one comparison, not a loop over both)
		pre = "Sender address rejected: "
	case s[0] == 'R':
		pre = "Recipient address rejected: "
	default:
		return s
	}
	if len(s) >= len(pre) && s[:len(pre)] == pre {
		if k := strings.IndexByte(s[len(pre):], ':'); k > 0 {
			return s[:len(pre)+k]
		}
	}
	return s
}

// rejBlock: s/(client|Client host|Sender address) .+? blocked/blocked/
//
// The first " blocked" of s is found once: where a word's ".+?" starts
// at or before it, it is the one the match ends at (the usual reason,
// "Client host [ADDR] blocked using LIST", needs no second search). The
// words are chosen by their first byte.
func rejBlock(s string) string {
	b := indexBlocked(s)
	if b < 0 {
		return s
	}
	for i := 0; i < len(s); i++ {
		var w string
		switch s[i] {
		case 'c':
			w = "client "
		case 'C':
			w = "Client host "
		case 'S':
			w = "Sender address "
		default:
			continue
		}
		if len(s)-i < len(w) || s[i:i+len(w)] != w {
			continue
		}
		p := i + len(w) + 1 // ".+?" takes at least one byte
		if p > len(s) {
			continue
		}
		k := b - p // the first " blocked" from p on, relative to p
		if b < p {
			if k = indexBlocked(s[p:]); k < 0 {
				continue
			}
		}
		if i == 0 { // ("Client host [ADDR] blocked using ...": the rest of s from "blocked" on, not a copy)
			return s[p+k+1:]
		}
		return s[:i] + "blocked" + s[p+k+len(" blocked"):]
	}
	return s
}

// indexBlocked is strings.Index(s, " blocked"), found at its 'b': a
// search for a string finds the candidates by its first byte, and a
// space is at every word of a rejection's reason.
func indexBlocked(s string) int {
	for off := 1; off < len(s); {
		i := strings.Index(s[off:], "blocked")
		if i < 0 {
			return -1
		}
		if i += off; s[i-1] == ' ' {
			return i - 1
		}
		off = i + 1
	}
	return -1
}

// rejMail: s/^\d{3} (?:<.+>: )?([^;:]+)[;:]?.*$/$1/
func rejMail(s string) string {
	if len(s) < 4 || !isDigits(s[:3]) || s[3] != ' ' {
		return s
	}
	r := s[4:]
	if len(r) > 0 && r[0] == '<' {
		for k := strings.LastIndex(r, ">: "); k >= 2; k = strings.LastIndex(r[:k], ">: ") {
			p := k + 3
			if e := runNot(r, p, ";:"); e > p {
				return r[p:e]
			}
		}
	}
	if e := runNot(r, 0, ";:"); e > 0 {
		return r[:e]
	}
	return s
}

// rejOther: s/^(?:.*[:;] )?([^,]+).*$/$1/
func rejOther(s string) string {
	for i := len(s) - 2; i >= 0; i-- {
		if (s[i] == ':' || s[i] == ';') && s[i+1] == ' ' {
			if e := runNot(s, i+2, ","); e > i+2 {
				return s[i+2 : e]
			}
		}
	}
	if e := runNot(s, 0, ","); e > 0 {
		return s[:e]
	}
	return s
}

// toAndFrom is the first "to=<([^>]+)>" and the first "from=<([^>]+)>"
// of s (reRejTo1 and reRejFrom), found in one pass over its '<': a line
// has a few '<' and many of the prefixes' first bytes ('t', 'f'), at
// each of which strings.Index stopped, and a search for each prefix read
// the same '<' twice. Where a prefix's '<' has no '>' after it, neither
// has any later '<': both prefixes not found by then are not found.
func toAndFrom(s string) (to string, toOK bool, from string, fromOK bool) {
	for off := 0; ; {
		i := strings.IndexByte(s[off:], '<')
		if i < 0 {
			return to, toOK, from, fromOK
		}
		e := off + i // the '<'
		off = e + 1
		// (the prefixes compared as constants: a load or two each)
		isTo := !toOK && e >= 3 && s[e-3:e] == "to="
		if !isTo && (fromOK || e < 5 || s[e-5:e] != "from=") {
			continue
		}
		k := strings.IndexByte(s[off:], '>')
		if k < 0 {
			return to, toOK, from, fromOK
		}
		if k == 0 {
			continue
		}
		if isTo {
			to, toOK = s[off:off+k], true
		} else {
			from, fromOK = s[off:off+k], true
		}
		if toOK && fromOK {
			return to, toOK, from, fromOK
		}
	}
}

// rejToUnknown: \d{3} <([^>]+)>: User unknown
func rejToUnknown(s string) (string, bool) {
	for i := 3; i+2 <= len(s); i++ {
		if s[i] != ' ' || s[i+1] != '<' || !isDigits(s[i-3:i]) {
			continue
		}
		p := i + 2
		if k := strings.IndexByte(s[p:], '>'); k > 0 && strings.HasPrefix(s[p+k:], ">: User unknown ") {
			return s[p : p+k], true
		}
	}
	return "", false
}

// rejToLoose: to=<(.*?)(?:[, ]|$)
func rejToLoose(s string) (string, bool) {
	i := strings.Index(s, "to=<")
	if i < 0 {
		return "", false
	}
	r := s[i+4:]
	return r[:runNot(r, 0, ", ")], true
}

// saidHead: s/^.* said: //
func saidHead(s string) (string, bool) {
	if i := strings.LastIndex(s, " said: "); i >= 0 {
		return s[i+len(" said: "):], true
	}
	return s, false
}

// colonHead: s/^.*?: *//
func colonHead(s string) (string, bool) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return s, false
	}
	s = s[i+1:]
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	return s, true
}

// cleanTail: s/( from \S+?)?; from=<.*$// (the leftmost match wins: an
// earlier " from HOST" in front of "; from=<" is removed with it).
func cleanTail(s string) string {
	j := strings.Index(s, "; from=<")
	if j < 0 {
		return s
	}
	for off := 0; ; {
		i := strings.Index(s[off:], " from ")
		if i < 0 || off+i >= j {
			return s[:j]
		}
		i += off
		r := i + len(" from ")
		e := r
		for e < len(s) && !isSpace(s[e]) {
			e++
		}
		// The non-space run must end in ";" right before " from=<".
		if e-1 > r && s[e-1] == ';' && strings.HasPrefix(s[e-1:], "; from=<") {
			return s[:i]
		}
		off = i + 1
	}
}

// cleanupVerdict is pflogsumm's reading of a cleanup header or body
// check's verdict,
//
//	.*?\b((?:milter-)?reject|warning|hold|discard): (header|body|END-OF-MESSAGE) (.*)$
//
// by hand: the expression tried its keywords at every byte of the line
// and backtracked, ~30,000 instructions on each such line (3,315 lines of
// the mail shape, 3.5 % of its report). The lazy ".*?" makes the first
// keyword that fits win; a keyword ends at its ": " and holds no colon,
// so the candidates are met in their order through the line's colons.
// The text is the rest of the line ("." does not match a newline: a
// match lies wholly after the last one).
func cleanupVerdict(s string) (verdict, part, text string, ok bool) {
	for k := 0; ; {
		j := strings.IndexByte(s[k:], ':')
		if j < 0 {
			return "", "", "", false
		}
		c := k + j
		k = c + 1
		r := s[k:] // ": " PART " " TEXT, r from the space
		if len(r) < len(" body ") || r[0] != ' ' {
			continue
		}
		switch r[1] { // (most colons are followed by none of the parts)
		case 'h':
			part = "header"
		case 'b':
			part = "body"
		case 'E':
			part = "END-OF-MESSAGE"
		default:
			continue
		}
		if len(r) < len(part)+2 || r[1:1+len(part)] != part || r[1+len(part)] != ' ' {
			continue
		}
		if verdict = cleanupKeyword(s, c); verdict == "" {
			continue
		}
		text = r[len(part)+2:]
		if strings.IndexByte(text, '\n') >= 0 {
			return cleanupVerdict(s[strings.LastIndexByte(s, '\n')+1:])
		}
		return verdict, part, text, true
	}
}

// cleanupKeyword is the keyword of cleanupVerdict that ends at s[c] and
// starts at a word boundary (\b: the byte before is not [0-9A-Za-z_]; a
// byte above 0x7f belongs to a rune that is not a word character), or "".
// "milter-reject" is tried before "reject": it starts earlier.
func cleanupKeyword(s string, c int) string {
	at := func(w string) bool {
		i := c - len(w)
		return i >= 0 && s[i:c] == w && (i == 0 || !isWordByte(s[i-1]))
	}
	switch s[max(c-1, 0)] {
	case 't':
		if at("milter-reject") {
			return "milter-reject"
		}
		if at("reject") {
			return "reject"
		}
	case 'g':
		if at("warning") {
			return "warning"
		}
	case 'd':
		if at("hold") {
			return "hold"
		}
		if at("discard") {
			return "discard"
		}
	}
	return ""
}

// isWordByte is RE2's ASCII \w: [0-9A-Za-z_].
func isWordByte(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_'
}
