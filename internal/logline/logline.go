// Package logline parses one syslog line into its timestamp, host, program,
// PID and message. It understands the three shapes mail logs come in:
//
//   - traditional BSD syslog (RFC 3164 section 4.1.2): "Jan  2 15:04:05 host prog[pid]: msg",
//     optionally preceded by "<PRI>"; the year is not in the line and is inferred;
//   - a leading RFC 3339 timestamp (rsyslog's high-precision format, journalctl
//     -o short-iso and short-iso-precise), with or without a colon in the offset
//     and with or without fractional seconds: "2026-11-23T10:00:00.123456+01:00 host prog[pid]: msg";
//   - RFC 5424 section 6: "<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG".
//
// The parser is written by hand rather than with time.Parse or regular
// expressions because it runs once per line over logs of millions of lines: it
// does not allocate (every string in Line is a substring of the input) apart
// from the first time it meets a new numeric UTC offset.
package logline

import (
	"encoding/binary"
	"math/bits"
	"strings"
	"time"
	"unsafe"
)

// Line is one parsed syslog line. Strings are substrings of the parsed input.
type Line struct {
	Time    time.Time
	Host    string
	Program string // e.g. "postfix/smtpd", "dovecot", "kernel", "relayguard"; "" if the line has no tag
	PID     int    // 0 if absent or not numeric
	Message string
}

// futureSlack is how far past Now a traditional timestamp may lie before it
// is taken to belong to the previous year (clocks differ; logs are read a
// little after they are written, never days before).
const futureSlack = 7 * 24 * time.Hour

// Parser parses lines and keeps the state needed to infer the year of
// traditional syslog timestamps. Use one Parser per input file read in
// order; it is not safe for concurrent use.
//
// Year inference: if Year is 0 when the first traditional line is seen, the
// year is Now's year, or the year before if that would put the line more than
// a week after Now. Afterwards Year is the current year of the file and rolls
// forward when the month jumps back by more than half a year (a file that
// spans New Year: Dec → Jan). A line whose month is more than half a year
// after the previous line's (Jan, then a stray Dec) is put in the year
// before, without changing the state. A caller may preset Year.
type Parser struct {
	Year int
	Loc  *time.Location   // zone of traditional timestamps; nil means time.Local
	Now  func() time.Time // nil means time.Now

	lastMonth time.Month
	zoneOff   int // cached FixedZone for the last numeric offset seen
	zone      *time.Location

	// The start of the last traditional timestamp's hour: a log's lines
	// share their hour, and time.Date's zone lookup is the costliest step.
	hourKey  int // year*1000000 + month*10000 + day*100 + hour; 0: none
	hourLoc  *time.Location
	hourBase time.Time

	// The last traditional timestamp parsed and the state it left: a
	// log's lines come several to a second (ten on a botnet's log), and
	// the same 15 bytes read again in the state they left give the same
	// time and leave that state (see parseBSD).
	ts tsCache
}

// tsCache is one parsed "Mmm dd hh:mm:ss": its bytes (as two overlapping
// little-endian words), the state after it, and its time.
type tsCache struct {
	w0, w1 uint64
	year   int
	month  time.Month // lastMonth after it; 0: no entry
	loc    *time.Location
	t      time.Time
}

// Parse parses one line (without its trailing newline; a trailing "\r" or
// "\n" is ignored). It reports false if the line does not start with a
// timestamp in one of the supported shapes or lacks a host. A line whose tag
// cannot be parsed (e.g. "-- MARK --") is returned with Program "" and the
// rest of the line as Message.
func (p *Parser) Parse(line string) (Line, bool) {
	var l Line
	ok := p.ParseTo(&l, line)
	return l, ok
}

// ParseTo is Parse writing the line into *l, every field of which it
// overwrites (with the zero Line when it reports false): a reader that
// keeps many lines in an array saves the copy of each (80 bytes) on its
// way out.
func (p *Parser) ParseTo(l *Line, line string) bool {
	if p.parseUsual(l, line) {
		return true
	}
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	if len(line) > 0 && line[0] == '<' {
		// "<PRI>" prefix: RFC 5424 if followed by a version digit and a
		// space, otherwise an RFC 3164 line as sent on the wire.
		i := 1
		for i < len(line) && i <= 4 && isDigit(line[i]) {
			i++
		}
		if i == 1 || i >= len(line) || line[i] != '>' {
			*l = Line{}
			return false
		}
		rest := line[i+1:]
		if len(rest) >= 2 && isDigit(rest[0]) && rest[1] == ' ' {
			var ok bool
			*l, ok = p.parse5424(rest[2:])
			return ok
		}
		line = rest
	}
	var t time.Time
	var rest string
	var ok bool
	switch {
	case len(line) >= 5 && isDigit(line[0]) && line[4] == '-':
		t, rest, ok = p.parse3339(line)
	case len(line) > 25 && line[0] == '@':
		t, rest, ok = parseTAI64N(line)
	default:
		t, rest, ok = p.parseBSD(line)
	}
	if !ok || len(rest) == 0 || rest[0] != ' ' {
		*l = Line{}
		return false
	}
	rest = rest[1:]
	// Host: one word. A first word ending in ':' is a tag without a host,
	// as in Dovecot's own log file (log_path: "Dec  6 02:04:12 auth: Info: …",
	// "auth-worker(22401): …") and daemontools' multilog.
	sp := spaceIndex(rest)
	if sp <= 0 {
		*l = Line{}
		return false
	}
	if rest[sp-1] == ':' {
		prog, pid, msg := parseTag(rest)
		if prog == "" { // "auth-worker(22401): …": the tag as it stands
			prog, msg = rest[:sp-1], rest[sp+1:]
		}
		*l = Line{Time: t, Program: prog, PID: pid, Message: msg}
		return true
	}
	tag := rest[sp+1:]
	// The usual tag, "prog[pid]: " with a PID of up to seven digits: the
	// digits and ']' found in one word, their value read from it (see
	// pidValue); any other tag is read by tagFrom.
	i := progEnd(tag)
	if i > 0 && i+12 <= len(tag) && tag[i] == '[' {
		const lo, hi = 0x0101010101010101, 0x8080808080808080
		x := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(unsafe.Pointer(unsafe.StringData(tag)), i+1))[:]) ^ lo*'0' // (tag is not written: a read of 8 of its bytes, i+12 <= len(tag); digits are now 0 to 9)
		// The high bit of each byte that is no digit (≥ 10 after the xor;
		// no carry crosses bytes, their high bits cleared first).
		if nd := ((x&^hi + lo*0x76) | x) & hi; nd != 0 {
			k := bits.TrailingZeros64(nd) >> 3 // the digits before it
			if j := i + 1 + k; tag[j] == ']' && tag[j+1] == ':' {
				pid := 0
				if k > 0 {
					pid = pidValue(x, k)
				}
				j += 2
				if tag[j] == ' ' {
					j++
				}
				// (field by field: a Line built and then copied was written
				// twice, and through the collector's bulk barrier while it
				// marks)
				l.Time = t
				l.Host = rest[:sp]
				l.Program = tag[:i]
				l.PID = pid
				l.Message = tag[j:]
				return true
			}
		}
	}
	if i > 0 && i < len(tag) && tag[i] == ':' {
		// A tag without a PID ("dovecot: "): what tagFrom reads, the
		// Line written field by field (a third of mixed's non-Postfix
		// lines; the call and the copy cost ~80 instructions a line).
		j := i + 1
		if j < len(tag) && tag[j] == ' ' {
			j++
		}
		l.Time = t
		l.Host = rest[:sp]
		l.Program = tag[:i]
		l.PID = 0
		l.Message = tag[j:]
		return true
	}
	prog, pid, msg := tagFrom(tag, i)
	*l = Line{Time: t, Host: rest[:sp], Program: prog, PID: pid, Message: msg}
	return true
}

// parseUsual is ParseTo of the usual line, read in one pass without the
// calls and the bounds-checked cuts of the general path: "Mmm dd hh:mm:ss"
// the same as the last traditional timestamp's (parseBSD's cache: a log's
// lines come several to a second), a host of up to seven bytes, and
// "prog[pid]: " or "prog: " with a program name of up to seven bytes or
// "postfix/" and up to seven more. It reports false, having written and
// changed nothing, for any other line: ParseTo then reads it in full.
// (The general path cost ~330 instructions for such a line, a third of
// the report's reading goroutine.)
func (p *Parser) parseUsual(l *Line, line string) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	n := len(line)
	if n < 32 || line[n-1] == '\n' || line[n-1] == '\r' {
		return false
	}
	// Bytes, words and cuts of line read without bounds checks: every
	// index below is checked against n before its read.
	s := unsafe.Pointer(unsafe.StringData(line))
	word := func(i int) uint64 { return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(s, i))[:]) }
	at := func(i int) byte { return *(*byte)(unsafe.Add(s, i)) }
	cut := func(i, j int) string { return unsafe.String((*byte)(unsafe.Add(s, i)), j-i) }
	c := &p.ts
	if word(0) != c.w0 || word(7) != c.w1 || c.month == 0 || c.month != p.lastMonth || c.year != p.Year || c.loc != p.Loc || at(15) != ' ' {
		return false
	}
	// The host: its space in the first word after the timestamp's.
	hw := word(16) ^ lo*' '
	m := (hw - lo) &^ hw & hi
	if m == 0 {
		return false
	}
	sp := 16 + bits.TrailingZeros64(m)>>3
	if sp == 16 || at(sp-1) == ':' { // (no host, or a tag without one)
		return false
	}
	// The program name: its end ('[', ':' or ' ') in its first word, or
	// in the second after "postfix/".
	t := sp + 1
	if t+16 > n {
		return false
	}
	e := t
	w := word(t)
	if w == postfixWord {
		e += 8
		w = word(e)
	}
	if m = tagEndIn(w); m == 0 {
		return false
	}
	e += bits.TrailingZeros64(m) >> 3
	if e == t || e+12 > n {
		return false
	}
	pid, j := 0, e+1
	switch at(e) {
	case '[':
		// As ParseTo's: the digits and the ']' found in one word.
		x := word(e+1) ^ lo*'0'
		nd := ((x&^hi + lo*0x76) | x) & hi
		if nd == 0 {
			return false
		}
		k := bits.TrailingZeros64(nd) >> 3
		if j += k; at(j) != ']' || at(j+1) != ':' {
			return false
		}
		if k > 0 {
			pid = pidValue(x, k)
		}
		j += 2
	case ':':
	default:
		return false
	}
	if at(j) == ' ' {
		j++
	}
	l.Time = c.t
	l.Host = cut(16, sp)
	l.Program = cut(t, e)
	l.PID = pid
	l.Message = cut(j, n)
	return true
}

// parseTAI64N parses daemontools' "@" + 24 hex digits label: a TAI64
// second count (2^62 + seconds since 1970, leap seconds ignored as
// multilog's readers do) and nanoseconds.
func parseTAI64N(s string) (time.Time, string, bool) {
	var v [2]uint64
	for i := 0; i < 24; i++ {
		c := s[1+i]
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		default:
			return time.Time{}, "", false
		}
		if i < 16 {
			v[0] = v[0]<<4 | d
		} else {
			v[1] = v[1]<<4 | d
		}
	}
	if v[0] < 1<<62 || v[1] >= 1e9 {
		return time.Time{}, "", false
	}
	return time.Unix(int64(v[0]-1<<62), int64(v[1])), s[25:], true
}

// Timestamp parses the timestamp at the start of s (traditional syslog or
// RFC 3339, as Parse) and returns the rest of s; for lines that carry a
// timestamp but not the host and tag Parse needs (kernel lines copied from
// dmesg -T, some exporters).
func (p *Parser) Timestamp(s string) (time.Time, string, bool) {
	if len(s) >= 5 && isDigit(s[0]) && s[4] == '-' {
		return p.parse3339(s)
	}
	return p.parseBSD(s)
}

// spaceIndex is strings.IndexByte(s, ' ') for s whose first space is
// mostly in its first eight bytes (a host name): one word's test before
// the search.
func spaceIndex(s string) int {
	if len(s) >= 8 {
		const lo, hi = 0x0101010101010101, 0x8080808080808080
		w := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Pointer(unsafe.StringData(s)))[:]) ^ lo*' ' // (s is not written: a read of 8 of its bytes)
		if m := (w - lo) &^ w & hi; m != 0 {
			return bits.TrailingZeros64(m) >> 3 // (false marks lie only above a true one)
		}
	}
	return strings.IndexByte(s, ' ')
}

// parseTag splits "prog[pid]: msg" (RFC 3164 section 4.1.3). The program
// name is a run of characters other than space, '[' and ':'.
func parseTag(s string) (prog string, pid int, msg string) { return tagFrom(s, progEnd(s)) }

// progEnd is the index of the first '[', ':' or ' ' in s, or len(s).
func progEnd(s string) int {
	i := 0
	base := unsafe.Pointer(unsafe.StringData(s))
	if len(s) >= 16 && binary.LittleEndian.Uint64((*[8]byte)(base)[:]) == postfixWord {
		i = 8 // (most lines: "postfix/" has no end byte)
	}
	for ; i+8 <= len(s); i += 8 { // eight bytes at a time (the program names are "postfix/smtpd" and the like)
		w := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(base, i))[:]) // (s is not written: a read of 8 of its bytes, i+8 <= len(s); no unsafe.Slice: its wrap check was 4 instructions a word)
		if m := tagEndIn(w); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for i < len(s) && !tagEnd[s[i]] {
		i++
	}
	return i
}

// postfixWord is "postfix/" read as a little-endian word.
var postfixWord = binary.LittleEndian.Uint64([]byte("postfix/"))

// tagFrom is parseTag of s whose program name ends at i (progEnd).
func tagFrom(s string, i int) (prog string, pid int, msg string) {
	if i == 0 || i >= len(s) || s[i] == ' ' {
		return "", 0, s
	}
	prog = s[:i]
	j := i
	if s[j] == '[' {
		// The PID: atoi's value of what lies between the brackets (0 if
		// that is empty, longer than 9 digits or not all digits), read in
		// the pass that finds the ']'.
		k, n := j+1, 0
		for k < len(s) && s[k]-'0' <= 9 {
			n = n*10 + int(s[k]-'0')
			k++
		}
		if k < len(s) && s[k] == ']' {
			if k-(j+1) <= 9 {
				pid = n
			}
		} else {
			e := strings.IndexByte(s[k:], ']')
			if e < 0 {
				return "", 0, s
			}
			k += e
		}
		j = k + 1
	}
	if j >= len(s) || s[j] != ':' {
		return "", 0, s
	}
	j++
	if j < len(s) && s[j] == ' ' {
		j++
	}
	return prog, pid, s[j:]
}

// pidValue is the value of the k (1 to 7) digits at the start of x, eight
// bytes of digit values (0 to 9) little-endian.
func pidValue(x uint64, k int) int {
	// The k digits at the top of the word (leading zero bytes below), then
	// the eight added up in pairs, quads and the whole (the first byte is
	// the most significant digit).
	d := x << (64 - 8*k)
	d = (d * (1 + 10<<8)) >> 8
	d = ((d & 0x00ff00ff00ff00ff) * (1 + 100<<16)) >> 16
	d = ((d & 0x0000ffff0000ffff) * (1 + 10000<<32)) >> 32
	return int(d)
}

// tagEndIn marks the bytes of w (eight, little-endian) that end a tag's
// program name ('[', ':' or ' ') with their high bit: the lowest mark is
// the first such byte (the zero-byte test of each xor; its false marks
// lie only above a true one).
func tagEndIn(w uint64) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	a, b, c := w^(lo*'['), w^(lo*':'), w^(lo*' ')
	return ((a-lo)&^a | (b-lo)&^b | (c-lo)&^c) & hi
}

// tagEnd marks the bytes that end a tag's program name: a table lookup
// per byte instead of three comparisons (parseTag runs once per line).
var tagEnd = [256]bool{'[': true, ':': true, ' ': true}

// parse5424 parses what follows "<PRI>1 " (RFC 5424 section 6).
func (p *Parser) parse5424(s string) (Line, bool) {
	var l Line
	var ok bool
	var rest string
	if len(s) >= 1 && s[0] == '-' {
		rest = s[1:] // NILVALUE timestamp: Time stays zero
	} else if l.Time, rest, ok = p.parse3339(s); !ok {
		return Line{}, false
	}
	var fields [4]string // HOSTNAME APP-NAME PROCID MSGID
	for f := range fields {
		if len(rest) == 0 || rest[0] != ' ' {
			return Line{}, false
		}
		rest = rest[1:]
		sp := strings.IndexByte(rest, ' ')
		if sp < 0 {
			sp = len(rest)
		}
		if sp == 0 {
			return Line{}, false
		}
		fields[f] = rest[:sp]
		rest = rest[sp:]
	}
	if len(rest) == 0 || rest[0] != ' ' {
		return Line{}, false
	}
	rest = rest[1:]
	// STRUCTURED-DATA: "-" or one or more "[...]" elements, in which '"',
	// '\' and ']' may be escaped with a backslash (section 6.3.5).
	if len(rest) > 0 && rest[0] == '-' {
		rest = rest[1:]
	} else if len(rest) > 0 && rest[0] == '[' {
		for len(rest) > 0 && rest[0] == '[' {
			i, inQuote := 1, false
			for ; i < len(rest); i++ {
				c := rest[i]
				if c == '\\' {
					i++
					continue
				}
				if c == '"' {
					inQuote = !inQuote
				} else if c == ']' && !inQuote {
					break
				}
			}
			if i >= len(rest) {
				return Line{}, false
			}
			rest = rest[i+1:]
		}
	} else {
		return Line{}, false
	}
	if len(rest) > 0 {
		if rest[0] != ' ' {
			return Line{}, false
		}
		rest = rest[1:]
	}
	// MSG may begin with a UTF-8 byte order mark (section 6.4).
	if len(rest) >= 3 && rest[0] == 0xEF && rest[1] == 0xBB && rest[2] == 0xBF {
		rest = rest[3:]
	}
	l.Host = nilValue(fields[0])
	l.Program = nilValue(fields[1])
	l.PID = atoi(fields[2])
	l.Message = rest
	return l, true
}

func nilValue(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// atoi parses a non-negative decimal number; anything else gives 0.
func atoi(s string) int {
	if len(s) == 0 || len(s) > 9 {
		return 0
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0
		}
		n = n*10 + int(s[i]-'0')
	}
	return n
}
