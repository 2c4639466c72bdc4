// Package logwatch turns mail-server logs into events: sources that follow
// files like `tail -F` (surviving rename and copytruncate rotation and
// remembering their position across restarts), read compressed rotated files,
// the systemd journal and stdin; and parsers for Postfix (smtpd, postscreen),
// Dovecot (login processes and auth) and relayguard's own log.
//
// The parsers are written with strings.Index and friends rather than regular
// expressions: they run once per line over logs of millions of lines, and the
// shapes they look for are fixed strings with an address in brackets.
package logwatch

import (
	"net/netip"
	"strings"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/maillog"
)

// Parser turns raw log lines into events. It is not safe for concurrent
// use: each source owns one (the syslog year inference is per file).
type Parser struct {
	Lines logline.Parser
	// Want (nil: every kind) says which event kinds the caller keeps: the
	// lines that can only give other kinds (Postfix's rejections, its
	// delivery results) are then recognised by their start and not parsed
	// further (watch --replay of a guard that does not count rejections).
	Want func(event.Kind) bool

	wants *wants // from Want, made at the first line
}

// wants says which groups of kinds a Parser's caller keeps; nil: all.
type wants struct {
	rejects, deliveries bool
}

func (w *wants) rejected() bool  { return w == nil || w.rejects }
func (w *wants) delivered() bool { return w == nil || w.deliveries }

// Parse parses one raw line (a syslog line, or a bare relayguard slog line).
func (p *Parser) Parse(raw string) (event.Event, bool) {
	l, ok := p.Lines.Parse(raw)
	if !ok {
		// relayguard's own log written to a file by itself: no syslog header.
		if maillog.IsRecord(raw) {
			return ParseSlog(raw)
		}
		return event.Event{}, false
	}
	if p.Want != nil && p.wants == nil {
		p.wants = &wants{
			rejects:    p.Want(event.RelayDenied) || p.Want(event.DNSBLReject) || p.Want(event.Reject),
			deliveries: p.Want(event.Delivered) || p.Want(event.DeliveryFailed),
		}
	}
	e, ok := parseMessage(l.Program, l.Message, p.wants)
	if !ok {
		return e, false
	}
	if e.Time.IsZero() {
		e.Time = l.Time
	}
	return e, true
}

// ParseMessage parses the message part of a line logged by program (the
// syslog tag without the PID: "postfix/smtpd", "postfix/submission/smtpd",
// "postfix/postscreen", "dovecot", "relayguard").
func ParseMessage(program, msg string) (event.Event, bool) {
	return parseMessage(program, msg, nil)
}

// ParseMessageTo is ParseMessage writing the event into *e: a caller that
// keeps the events of many lines in an array saves the copies of each on
// its way out, and a Postfix smtpd line goes straight to its parser.
func ParseMessageTo(e *event.Event, program, msg string) bool {
	switch {
	case program == "postfix/smtpd":
		return parseSmtpd(e, program, msg, nil)
	case program == "dovecot" || !strings.HasPrefix(program, "postfix") && Dovecot(program):
		// (parseMessage's order: a "postfix…" tag is never Dovecot's)
		return parseDovecotTo(e, program, msg)
	}
	var ok bool
	*e, ok = parseMessage(program, msg, nil)
	return ok
}

// parseMessage is ParseMessage, skipping the lines that can only give
// kinds w does not want.
func parseMessage(program, msg string, w *wants) (event.Event, bool) {
	switch {
	case strings.HasPrefix(program, "postfix"):
		switch {
		case strings.HasSuffix(program, "/smtpd"):
			var e event.Event
			ok := parseSmtpd(&e, program, msg, w)
			return e, ok
		case strings.HasSuffix(program, "/postscreen"):
			return parsePostscreen(msg, w)
		case strings.HasSuffix(program, "/smtp"), strings.HasSuffix(program, "/lmtp"):
			if !w.delivered() {
				return event.Event{}, false
			}
			return parseDelivery(msg)
		}
	case Dovecot(program):
		return parseDovecot(program, msg)
	case program == "relayguard":
		return ParseSlog(msg)
	}
	return event.Event{}, false
}

// bracketAddr returns the address in the first "[...]" of s.
func bracketAddr(s string) (netip.Addr, bool) {
	i := strings.IndexByte(s, '[')
	if i < 0 {
		return netip.Addr{}, false
	}
	j := strings.IndexByte(s[i+1:], ']')
	if j < 0 {
		return netip.Addr{}, false
	}
	a := s[i+1 : i+1+j]
	a = strings.TrimPrefix(a, "IPv6:")
	ip, err := parseAddr(a)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// parseAddr is netip.ParseAddr, with the usual client address, a dotted
// quad, read by hand first: ParseAddr cost ~300 instructions an IPv4
// address (every client of every line the guard and the report read).
func parseAddr(s string) (netip.Addr, error) {
	if a, ok := parseIPv4(s); ok {
		return a, nil
	}
	if a, ok := parseIPv6Full(s); ok {
		return a, nil
	}
	return netip.ParseAddr(s)
}

// parseIPv6Full parses an IPv6 address written in full, eight groups of
// one to four hex digits ("2001:db8:0:0:1:0:0:1"), as netip.ParseAddr
// does; ok is false for any other form ("::", a zone, an IPv4 tail, ...),
// which ParseAddr then reads or refuses. ParseAddr cost ~1,000
// instructions such an address (a tenth of a mixed log's Dovecot lines).
func parseIPv6Full(s string) (netip.Addr, bool) {
	if len(s) < len("0:0:0:0:0:0:0:0") || len(s) > len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") {
		return netip.Addr{}, false
	}
	var b [16]byte
	if len(s) == len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") {
		// Every group of four digits (a generated address's usual
		// form): read without the loop's counting, ~5 instructions a
		// digit where it took ~20. Any byte out of place (a non-digit
		// marks its value above 15, a colon missing its xor) sends s to
		// the loop, which gives the same answer or refuses it.
		var bad uint8
		for g := range 8 {
			p := 5 * g
			q := s[p : p+4]
			h0, h1, h2, h3 := hexValue[q[0]], hexValue[q[1]], hexValue[q[2]], hexValue[q[3]]
			bad |= (h0 | h1 | h2 | h3) &^ 15
			if g < 7 {
				bad |= s[p+4] ^ ':'
			}
			b[2*g], b[2*g+1] = h0<<4|h1, h2<<4|h3
		}
		if bad == 0 {
			return netip.AddrFrom16(b), true
		}
	}
	i := 0
	for g := range 8 {
		if g > 0 {
			if i >= len(s) || s[i] != ':' {
				return netip.Addr{}, false
			}
			i++
		}
		v, d := uint16(0), 0
		for ; d < 4 && i < len(s); d, i = d+1, i+1 {
			x := hexValue[s[i]]
			if x > 15 {
				break
			}
			v = v<<4 | uint16(x)
		}
		if d == 0 {
			return netip.Addr{}, false
		}
		b[2*g], b[2*g+1] = byte(v>>8), byte(v)
	}
	if i != len(s) { // (a fifth digit, a zone, more groups)
		return netip.Addr{}, false
	}
	return netip.AddrFrom16(b), true
}

// hexValue is the value of a hex digit, 255 for any other byte.
var hexValue = func() (t [256]uint8) {
	for i := range t {
		t[i] = 255
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = uint8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c], t[c-'a'+'A'] = uint8(c-'a'+10), uint8(c-'a'+10)
	}
	return t
}()

// parseIPv4 parses "d.d.d.d" as netip.ParseAddr does (1–3 digits, no
// leading zero, at most 255); ok is false for anything else, which
// ParseAddr then reads (or refuses).
func parseIPv4(s string) (netip.Addr, bool) {
	ip, n, ok := logline.DottedQuad(s)
	return ip, ok && n == len(s)
}

// afterFrom returns the address of "from host[addr]" in s.
func afterFrom(s string) (netip.Addr, bool) {
	i := indexSpaced(s, "from ")
	if i < 0 {
		return netip.Addr{}, false
	}
	return bracketAddr(s[i+6:])
}

// indexSpaced is strings.Index(s, " "+word) for a word that does not start
// with a space: the first word preceded by a space. Searching the word
// stops at its rarer first byte; strings.Index stopped at every space of
// the line (a few dozen in a rejection) before it gave up on them.
func indexSpaced(s, word string) int {
	for off := 0; ; {
		i := strings.Index(s[off:], word)
		if i < 0 {
			return -1
		}
		i += off
		if i > 0 && s[i-1] == ' ' {
			return i - 1
		}
		off = i + 1
	}
}

// IndexAngled is strings.Index(s, key) for a key ending in '<' (" to=<"):
// the first '<' the key ends at, '<' being rare in a line where the key's
// first byte is common.
func IndexAngled(s, key string) int {
	n := len(key) - 1 // the key's bytes before its '<'
	for off := 0; ; {
		i := strings.IndexByte(s[off:], '<')
		if i < 0 {
			return -1
		}
		i += off
		if i >= n && s[i-n:i] == key[:n] {
			return i - n
		}
		off = i + 1
	}
}

func smtpService(program string) string {
	if program == "postfix/smtpd" {
		return "smtp"
	}
	// postfix/submission/smtpd, postfix/smtps/smtpd: the master.cf service name.
	if i := strings.IndexByte(program, '/'); i >= 0 {
		if j := strings.LastIndexByte(program, '/'); j > i {
			return program[i+1 : j]
		}
	}
	return "smtp"
}

// parseSmtpd parses Postfix smtpd(8) messages into *e.
func parseSmtpd(e *event.Event, program, msg string, w *wants) bool {
	*e = event.Event{Source: "postfix", Service: smtpService(program)}
	var ok bool
	switch {
	case strings.HasPrefix(msg, "warning: "):
		rest := msg[len("warning: "):]
		// warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6
		// warning: unknown[192.0.2.1]:54279: SASL LOGIN … (smtpd_client_port_logging = yes)
		if i := saslAt(rest); i > 0 {
			tail := rest[i+len(": SASL "):]
			sp := strings.IndexByte(tail, ' ')
			if sp <= 0 || !strings.HasPrefix(tail[sp:], " authentication failed") {
				return false
			}
			d := trimSpace(strings.TrimPrefix(tail[sp+len(" authentication failed"):], ":"))
			// The server failed, not the client (the auth daemon died, or
			// Postfix and the SASL server disagree on mechanisms): a user
			// whose password was right must not be counted as guessing.
			// fail2ban's postfix filter excludes both in mode=auth.
			if strings.HasPrefix(d, "Connection lost to authentication server") || strings.HasPrefix(d, "Invalid authentication mechanism") {
				return false
			}
			e.Kind = event.AuthFailure
			e.Mechanism = tail[:sp]
			if j := strings.Index(d, ", sasl_username="); j >= 0 {
				e.User = d[j+len(", sasl_username="):]
				d = d[:j]
			}
			e.Detail = d
			e.IP, ok = bracketAddr(rest[:i])
			return ok
		}
		// warning: non-SMTP command from unknown[192.0.2.1]: GET / HTTP/1.1
		if strings.HasPrefix(rest, "non-SMTP command from ") {
			e.Kind, e.Rule = event.ProtocolAbuse, "non_smtp_command"
			e.IP, ok = bracketAddr(rest)
			if j := strings.Index(rest, "]: "); j >= 0 {
				e.Detail = rest[j+3:]
			}
			return ok
		}
		return false
	case strings.HasPrefix(msg, "lost connection after AUTH from "):
		e.Kind = event.LostAfterAuth
		// (afterFrom(msg): the first " from " is the prefix's own)
		e.IP, ok = bracketAddr(msg[len("lost connection after AUTH from "):])
		return ok
	case strings.HasPrefix(msg, "improper command pipelining after "):
		e.Kind, e.Rule = event.ProtocolAbuse, "pipelining"
		e.IP, ok = afterFrom(msg)
		return ok
	case strings.HasPrefix(msg, "too many errors after "):
		// smtpd_hard_error_limit reached (enumeration, broken bots)
		e.Kind, e.Rule = event.ProtocolAbuse, "too_many_errors"
		e.IP, ok = afterFrom(msg)
		return ok
	}
	// The rest start with a queue ID (or NOQUEUE) of at most 16 bytes and
	// ": ": one short look says which, where three searches of the whole
	// line for ": reject: ", ": milter-reject: " and ": client=" cost a
	// quarter of the parse on lines that are none of them.
	qid, rest, ok := splitQueueID(msg)
	if !ok {
		return false
	}
	switch {
	case strings.HasPrefix(rest, "reject: "):
		// "NOQUEUE: reject: RCPT from h[a]: ..." or "4XyZ1: reject: ..."
		if !w.rejected() {
			return false
		}
		return parseReject(e, rest[len("reject: "):])
	case strings.HasPrefix(rest, "milter-reject: "):
		if !w.rejected() {
			return false
		}
		return parseReject(e, rest[len("milter-reject: "):])
	case strings.HasPrefix(rest, "client="):
		// "4XyZ1: client=h[a], sasl_method=PLAIN, sasl_username=bob"
		rest = rest[len("client="):]
		j := strings.Index(rest, ", sasl_method=")
		if j < 0 {
			return false
		}
		e.Kind = event.AuthSuccess
		e.QueueID = qid
		e.IP, ok = bracketAddr(rest[:j])
		rest = rest[j+len(", sasl_method="):]
		if k := strings.Index(rest, ", sasl_username="); k >= 0 {
			e.Mechanism = rest[:k]
			e.User = rest[k+len(", sasl_username="):]
			if c := strings.IndexByte(e.User, ','); c >= 0 {
				e.User = e.User[:c]
			}
		} else {
			e.Mechanism = rest
		}
		return ok
	}
	return false
}

// saslAt is the index of the first ": SASL " of s when a ']' comes before
// it (the client's "name[address]"), else -1. An occurrence cannot hold
// the first ']', so one before it lies wholly in the client's part: for
// the usual line, "unknown[192.0.2.1]: SASL LOGIN ...", the search is a
// look right after the first ']' and one for a ':' before it (a search of
// the line stopped at each ':' of an IPv6 address).
func saslAt(s string) int {
	j := strings.IndexByte(s, ']')
	if j < 0 {
		return -1
	}
	if strings.HasPrefix(s[j+1:], ": SASL ") && (strings.IndexByte(s[:j], ':') < 0 || !strings.Contains(s[:j], ": SASL ")) {
		return j + 1
	}
	if i := strings.Index(s, ": SASL "); i > j {
		return i
	}
	return -1
}

// trimSpace is strings.TrimSpace, with its usual case here, one space
// before a word of ASCII ("failed: UGFzc3dvcmQ6"), told at a look.
func trimSpace(s string) string {
	if n := len(s); n >= 2 && s[0] == ' ' && s[1] > ' ' && s[1] < 0x80 && s[n-1] > ' ' && s[n-1] < 0x80 {
		return s[1:]
	}
	return strings.TrimSpace(s)
}

// splitQueueID splits "QID: rest" at the start of msg (a queue ID or
// NOQUEUE: at most 16 bytes, no colon).
func splitQueueID(msg string) (qid, rest string, ok bool) {
	i := strings.IndexByte(msg[:min(len(msg), 17)], ':')
	if i <= 0 || !strings.HasPrefix(msg[i:], ": ") {
		return "", "", false
	}
	return msg[:i], msg[i+2:], true
}

// parseReject parses the part after "reject: " of a Postfix reject line:
// "RCPT from h[a]: 554 5.7.1 <r>: Relay access denied; from=<s> to=<r> ...".
func parseReject(e *event.Event, s string) bool {
	// s starts with the stage, a word, nearly always followed by " from ":
	// then that is the first " from " (afterFrom's), and the markers below
	// cannot start before it (neither starts inside " from ", nor within a
	// word and across its space; " blocked using " may start at its last
	// space). Each search then starts past the stage.
	sp := strings.IndexByte(s, ' ')
	var ip netip.Addr
	var ok bool
	from := 0 // where the markers may start
	if sp > 0 && strings.HasPrefix(s[sp:], " from ") {
		ip, ok = bracketAddr(s[sp+len(" from "):])
		from = sp + len(" from") // (its last space)
	} else {
		ip, ok = afterFrom(s)
	}
	if !ok {
		return false
	}
	e.IP = ip
	// (each marker searched once, and " to=<" only after the reply text)
	if r := strings.Index(s[from:], "Relay access denied"); r >= 0 {
		r += from
		e.Kind, e.Rule = event.RelayDenied, "reject_unauth_destination"
		if i := IndexAngled(s[r:], " to=<"); i >= 0 {
			to := s[r+i+5:]
			if j := strings.IndexByte(to, '>'); j >= 0 {
				e.Detail = to[:j]
			}
		}
		return true
	}
	if i := indexSpaced(s[from:], "blocked using "); i >= 0 {
		zone := s[from+i+len(" blocked using "):]
		for j := 0; j < len(zone); j++ { // (strings.IndexAny(zone, ";, "), without making its set)
			if c := zone[j]; c == ';' || c == ',' || c == ' ' {
				zone = zone[:j]
				break
			}
		}
		e.Kind, e.Rule, e.Detail = event.DNSBLReject, "reject_rbl_client", zone
		return true
	}
	stage := s
	if sp > 0 {
		stage = s[:sp]
	}
	e.Kind, e.Rule = event.Reject, lowerStage(stage)
	if i := strings.Index(s, "]: "); i >= 0 {
		d := s[i+3:]
		if j := strings.Index(d, "; from="); j >= 0 {
			d = d[:j]
		}
		e.Detail = d
	}
	return true
}

// lowerStage lower-cases an SMTP stage name, without an allocation for
// Postfix's usual ones.
func lowerStage(s string) string {
	switch s {
	case "RCPT":
		return "rcpt"
	case "MAIL":
		return "mail"
	case "CONNECT":
		return "connect"
	case "DATA":
		return "data"
	case "END-OF-MESSAGE":
		return "end-of-message"
	case "EHLO":
		return "ehlo"
	case "HELO":
		return "helo"
	case "VRFY":
		return "vrfy"
	}
	return strings.ToLower(s)
}

// parsePostscreen parses Postfix postscreen(8) messages.
func parsePostscreen(msg string, w *wants) (event.Event, bool) {
	e := event.Event{Source: "postfix", Service: "smtp"}
	var ok bool
	switch {
	case strings.HasPrefix(msg, "PREGREET "):
		// PREGREET 11 after 0.21 from [192.0.2.1]:51234: EHLO x\r\n
		e.Kind, e.Rule = event.ProtocolAbuse, "pregreet"
		e.IP, ok = afterFrom(msg)
		return e, ok
	case strings.HasPrefix(msg, "DNSBL rank "):
		// DNSBL rank 3 for [192.0.2.1]:51234
		e.Kind, e.Rule = event.DNSBLReject, "postscreen_dnsbl"
		if i := strings.Index(msg, " for "); i >= 0 {
			e.Detail = msg[len("DNSBL "):i]
			e.IP, ok = bracketAddr(msg[i:])
		}
		return e, ok
	case strings.HasPrefix(msg, "COMMAND TIME LIMIT from ") || strings.HasPrefix(msg, "COMMAND COUNT LIMIT from ") ||
		strings.HasPrefix(msg, "COMMAND LENGTH LIMIT from "):
		e.Kind = event.ProtocolAbuse
		e.Rule = strings.ToLower(strings.ReplaceAll(msg[:strings.Index(msg, " from ")], " ", "_"))
		e.IP, ok = afterFrom(msg)
		return e, ok
	case strings.HasPrefix(msg, "HANGUP after ") || strings.HasPrefix(msg, "COMMAND PIPELINING from ") ||
		strings.HasPrefix(msg, "NON-SMTP COMMAND from ") || strings.HasPrefix(msg, "BARE NEWLINE from "):
		e.Kind = event.ProtocolAbuse
		e.Rule = strings.ToLower(strings.ReplaceAll(msg[:strings.Index(msg, " from ")], " ", "_"))
		if strings.HasPrefix(msg, "HANGUP") {
			return e, false // a hangup alone is not abuse
		}
		e.IP, ok = afterFrom(msg)
		return e, ok
	}
	if _, rest, ok := splitQueueID(msg); ok && strings.HasPrefix(rest, "reject: ") && w.rejected() {
		ok := parseReject(&e, rest[len("reject: "):])
		return e, ok
	}
	return e, false
}

// ParseSlog parses one of relayguard's own records (slog text or JSON, as
// written through internal/maillog) into the guard event it stands for.
func ParseSlog(s string) (event.Event, bool) {
	r, ok := maillog.Parse(s)
	if !ok {
		return event.Event{}, false
	}
	return r.Event()
}

// parseDelivery parses a Postfix delivery agent's result for one
// recipient, "QUEUEID: to=<r>, relay=h[a]:25, ..., status=sent (...)" or
// "status=bounced (host h[a] said: 550 5.1.1 ...)", into delivered or
// delivery_failed with the queue id (which the accounts tie to the login
// that sent it) and the recipient. Deferrals are neither.
func parseDelivery(msg string) (event.Event, bool) {
	e := event.Event{Source: "postfix", Service: "smtp"}
	i := strings.Index(msg, ": to=<")
	if i <= 0 || i > 32 {
		return e, false
	}
	rest := msg[i+len(": to=<"):]
	j := strings.IndexByte(rest, '>')
	if j < 0 {
		return e, false
	}
	e.QueueID, e.Detail = msg[:i], rest[:j]
	k := strings.Index(rest, ", status=")
	if k < 0 {
		return e, false
	}
	switch status := rest[k+len(", status="):]; {
	case strings.HasPrefix(status, "sent "):
		e.Kind = event.Delivered
	case strings.HasPrefix(status, "bounced "):
		e.Kind = event.DeliveryFailed
	default:
		return e, false
	}
	return e, true
}
