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
	"strconv"
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
	if program == "postfix/smtpd" {
		return parseSmtpd(e, program, msg, nil)
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
	return netip.ParseAddr(s)
}

// parseIPv4 parses "d.d.d.d" as netip.ParseAddr does (1–3 digits, no
// leading zero, at most 255); ok is false for anything else, which
// ParseAddr then reads (or refuses).
func parseIPv4(s string) (netip.Addr, bool) {
	ip, n, ok := dottedQuad(s)
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

// indexAngled is strings.Index(s, key) for a key ending in '<' (" to=<"):
// the first '<' the key ends at, '<' being rare in a line where the key's
// first byte is common.
func indexAngled(s, key string) int {
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
		if i := strings.Index(rest, ": SASL "); i > 0 && strings.IndexByte(rest[:i], ']') >= 0 {
			tail := rest[i+len(": SASL "):]
			sp := strings.IndexByte(tail, ' ')
			if sp <= 0 || !strings.HasPrefix(tail[sp:], " authentication failed") {
				return false
			}
			d := strings.TrimSpace(strings.TrimPrefix(tail[sp+len(" authentication failed"):], ":"))
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
		e.IP, ok = afterFrom(msg)
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
	ip, ok := afterFrom(s)
	if !ok {
		return false
	}
	e.IP = ip
	// (each marker searched once, and " to=<" only after the reply text)
	if r := strings.Index(s, "Relay access denied"); r >= 0 {
		e.Kind, e.Rule = event.RelayDenied, "reject_unauth_destination"
		if i := indexAngled(s[r:], " to=<"); i >= 0 {
			to := s[r+i+5:]
			if j := strings.IndexByte(to, '>'); j >= 0 {
				e.Detail = to[:j]
			}
		}
		return true
	}
	if i := indexSpaced(s, "blocked using "); i >= 0 {
		zone := s[i+len(" blocked using "):]
		if j := strings.IndexAny(zone, ";, "); j >= 0 {
			zone = zone[:j]
		}
		e.Kind, e.Rule, e.Detail = event.DNSBLReject, "reject_rbl_client", zone
		return true
	}
	stage := s
	if sp := strings.IndexByte(s, ' '); sp > 0 {
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

// parseDovecot parses Dovecot's login processes and auth process:
//
//	imap-login: Disconnected (auth failed, 3 attempts in 12 secs): user=<bob>, method=PLAIN, rip=192.0.2.1, lip=...
//	pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<bob>, ..., rip=...
//	submission-login: Disconnected: Connection closed (auth failed, 2 attempts in 4 secs): ...
//	auth: passwd-file(bob,192.0.2.1,<sess>): unknown user
//	auth-worker(123): pam(bob,192.0.2.1,<sess>): pam_authenticate() failed: Authentication failure (Password mismatch?)
//	imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.1, lip=..., mpid=1, TLS
//
// program is "dovecot" (the message then starts with the process name) or
// the process name itself when Dovecot logs with per-process tags.
func parseDovecot(program, msg string) (event.Event, bool) {
	e := event.Event{Source: "dovecot"}
	proc := program
	if program == "dovecot" || strings.HasPrefix(program, "dovecot/") || program == "dovecot-auth" || dovecotProc(program) {
		proc = strings.TrimPrefix(program, "dovecot/")
		if program == "dovecot-auth" {
			proc = "auth"
		}
		// "dovecot: auth-worker(5787): …", "imap-login: …": the process
		// names, then the message.
		for range 2 {
			i := strings.Index(msg, ": ")
			if i <= 0 || !dovecotProc(msg[:i]) {
				break
			}
			proc, msg = msg[:i], msg[i+2:]
		}
	}
	msg = dovecotLevel(msg)
	// Dovecot 2.3 auth workers: "conn unix:auth-worker (uid=143): auth-worker<13247>: sql(…): …"
	if strings.HasPrefix(msg, "conn ") {
		if i := strings.Index(msg, ">: "); i >= 0 {
			msg = msg[i+3:]
		}
	}
	var ok bool
	switch {
	case strings.HasPrefix(msg, "pam_unix(dovecot:auth): authentication failure;"):
		// PAM's own line: "… tty=dovecot ruser=U rhost=IP [user=U]"
		e.Kind, e.Rule, e.Detail = event.AuthFailure, "pam_unix", "password mismatch"
		rh := strings.LastIndex(msg, " rhost=")
		if rh < 0 {
			return e, false
		}
		e.IP, ok = dovecotAddr(strings.TrimSpace(msg[rh+7:]))
		e.User = field(msg, " ruser=", ' ')
		if u := field(msg, " user=", ' '); u != "" && rh < strings.LastIndex(msg, " user=") {
			e.User = u
		}
		return e, ok
	case strings.HasSuffix(proc, "-login"):
		e.Service = strings.TrimSuffix(proc, "-login")
		// The user name is the client's: Dovecot logs whatever it sent
		// (spaces, "rip=…" and "session=<…>" included, even when
		// auth_username_chars refused it). Only what comes before
		// "user=<" and after the last " rip=" is Dovecot's own, so the
		// address, the session and the verdict are read there; reading
		// the first "rip=" let any client have another address counted
		// (and banned) for its failures.
		head, user, mid, tail := dovecotLoginFields(msg)
		if tail == "" {
			return e, false
		}
		e.IP, ok = dovecotAddr(tail)
		if !ok {
			return e, false
		}
		e.User = user
		e.Mechanism = field(mid, "method=", ',')
		e.Session = field(tail, "session=<", '>')
		msg = head
		if strings.HasPrefix(msg, "Login: ") {
			if e.Service == "submission" {
				e.Kind = event.AuthSuccess
			} else {
				e.Kind = event.LoginSuccess
			}
			return e, true
		}
		switch i := strings.Index(msg, "(auth failed, "); {
		case i >= 0:
			e.Kind = event.AuthFailure
			n := msg[i+len("(auth failed, "):]
			if j := strings.IndexByte(n, ')'); j >= 0 {
				e.Detail = n[:j]
			}
			// "3 attempts in 18 secs": the summary of the session's failures.
			if k := strings.IndexByte(e.Detail, ' '); k > 0 {
				if v, err := strconv.Atoi(e.Detail[:k]); err == nil && v > 1 {
					e.Attempts = v
				}
			}
			return e, true
		case strings.Contains(msg, "(tried to use disabled plaintext auth)") || strings.Contains(msg, "(tried to use disallowed plaintext auth)") ||
			strings.Contains(msg, "(proxy dest auth failed)"):
			// Credentials sent in clear where they are refused, or refused
			// by the proxied backend: fail2ban counts both.
			e.Kind = event.AuthFailure
			e.Detail = field(msg, "(", ')')
			return e, true
		}
		return e, false
	case proc == "auth" || strings.HasPrefix(proc, "auth-worker") || strings.HasPrefix(proc, "auth("):
		// driver(user,ip[,<session>]): unknown user | Password mismatch | pam_authenticate() failed
		open := strings.IndexByte(msg, '(')
		// The verdict follows the last "): " — the user name before it
		// may hold "): " too where auth_username_chars allows it — unless
		// auth_verbose_passwords wrote the client's password after the
		// verdict; the name cannot hold "): " with the default
		// auth_username_chars, so the first is Dovecot's then.
		cl := lastIndex(msg, "): ")
		if strings.Contains(msg, " (given password: ") {
			cl = strings.Index(msg, "): ")
		}
		if open <= 0 || cl < open {
			return e, false
		}
		what := msg[cl+3:]
		switch {
		case strings.HasPrefix(what, "unknown user"):
			e.Detail = "unknown user"
		case strings.HasPrefix(what, "Password mismatch") || strings.HasPrefix(what, "invalid credentials") || strings.HasPrefix(what, "Invalid credentials"):
			e.Detail = "password mismatch"
		case strings.HasPrefix(what, "pam_authenticate() failed"):
			e.Detail = "password mismatch"
			if strings.Contains(what, "User not known") {
				e.Detail = "unknown user"
			}
		default:
			return e, false
		}
		e.Rule = msg[:open] // passdb driver
		// driver(user,ip[,<session>]): the user name is the client's and
		// may hold commas where auth_username_chars allows them, so the
		// fields Dovecot adds are read from the right.
		// The fields are found by their commas from the right (no
		// slice of them per line): with three or more, a last one that
		// is "" or "<S>" is the session; then the address; the rest,
		// commas and all, is the user.
		args := msg[open+1 : cl]
		last := strings.LastIndexByte(args, ',')
		if last < 0 {
			return e, false
		}
		if prev := strings.LastIndexByte(args[:last], ','); prev >= 0 {
			if s := args[last+1:]; s == "" || strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
				e.Session = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">") // "" or "<S>"
				args, last = args[:last], prev
			}
		}
		e.User = args[:last]
		e.IP, ok = dovecotAddr(args[last+1:])
		e.Kind = event.AuthFailure
		return e, ok
	}
	return e, false
}

// Dovecot reports whether a syslog tag is Dovecot's ("dovecot",
// "dovecot/imap-login") or one of its processes' ("imap-login", "auth",
// "auth-worker(5787)": Dovecot's own log_path file, per-process tags).
func Dovecot(program string) bool {
	return strings.HasPrefix(program, "dovecot") || dovecotProc(program)
}

// dovecotProc reports whether s names a Dovecot process as it prefixes
// its messages: "dovecot", "imap-login", "auth", "auth-worker(5787)",
// "auth(default)".
func dovecotProc(s string) bool {
	return s == "dovecot" || s == "auth" || strings.HasSuffix(s, "-login") ||
		strings.HasPrefix(s, "auth-worker") || strings.HasPrefix(s, "auth(")
}

// dovecotLevel strips the log level Dovecot's own log file writes after
// the process name ("Info: ", "Warning: "…).
func dovecotLevel(msg string) string {
	if msg == "" || !strings.ContainsRune("IWEDFP", rune(msg[0])) {
		return msg
	}
	for _, l := range [...]string{"Info: ", "Warning: ", "Error: ", "Debug: ", "Fatal: ", "Panic: "} {
		if strings.HasPrefix(msg, l) {
			return msg[len(l):]
		}
	}
	return msg
}

// dovecotLoginFields splits a login process's message
// ("Disconnected (auth failed, 1 attempts in 2 secs): user=<U>, method=M,
// rip=IP, lip=IP, session=<S>") into Dovecot's text before "user=<", the
// user name U (the client's: anything may be in it), the fields between
// it and rip ("method=M"), and the fields from the last " rip=" on,
// without "rip=" (its address first). tail is "" when there is no rip.
func dovecotLoginFields(msg string) (head, user, mid, tail string) {
	r := lastIndex(msg, " rip=")
	if r < 0 {
		return msg, "", "", ""
	}
	head, tail = msg[:r], msg[r+len(" rip="):]
	u := strings.Index(head, "user=<")
	if u < 0 {
		return head, "", head, tail
	}
	user = head[u+len("user=<"):]
	head = head[:u]
	if j := strings.LastIndexByte(user, '>'); j >= 0 {
		user, mid = user[:j], user[j+1:]
	}
	return head, user, mid, tail
}

// dovecotAddr parses the address at the start of s (up to ',' or ' ').
func dovecotAddr(s string) (netip.Addr, bool) {
	if ip, n, ok := dottedQuad(s); ok && (n == len(s) || s[n] == ',' || s[n] == ' ' || s[n] == ')') {
		return ip, true
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ',' || c == ' ' || c == ')' {
			s = s[:i]
			break
		}
	}
	ip, err := parseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// dottedQuad reads the IPv4 address at the start of s in the form
// netip.ParseAddr accepts (four decimal fields of 0-255 without leading
// zeros) and returns the same Addr and the index after it; ok is false
// when s does not start so, and the caller has netip.ParseAddr read it (a
// Dovecot line's address is read on every failed login of a botnet, and
// netip's parser costs several times this one).
func dottedQuad(s string) (ip netip.Addr, n int, ok bool) {
	var b [4]byte
	i := 0
	for f := range 4 {
		if f > 0 {
			if i >= len(s) || s[i] != '.' {
				return ip, 0, false
			}
			i++
		}
		if i >= len(s) || s[i]-'0' > 9 {
			return ip, 0, false
		}
		v := int(s[i] - '0')
		i++
		if v != 0 { // (a field with a leading zero is one digit)
			for k := 0; k < 2 && i < len(s) && s[i]-'0' <= 9; k++ {
				v = v*10 + int(s[i]-'0')
				i++
			}
		}
		if v > 255 {
			return ip, 0, false
		}
		b[f] = byte(v)
	}
	if i < len(s) && (s[i]-'0' <= 9 || s[i] == '.') { // a longer field, or more of them
		return ip, 0, false
	}
	return netip.AddrFrom4(b), i, true
}

// lastIndex is strings.LastIndex for the short separators of Dovecot's
// lines, by a backward scan for their first and last bytes
// (strings.LastIndex hashes every byte it passes; strings.Index from the
// first occurrence on costs more on these short lines).
func lastIndex(s, sep string) int {
	c, z := sep[0], sep[len(sep)-1]
	for i := len(s) - len(sep); i >= 0; i-- {
		if s[i] == c && s[i+len(sep)-1] == z && s[i:i+len(sep)] == sep {
			return i
		}
	}
	return -1
}

// field returns the text after key up to the byte end (or the end of s).
func field(s, key string, end byte) string {
	i := strings.Index(s, key)
	if i < 0 {
		return ""
	}
	s = s[i+len(key):]
	if j := strings.IndexByte(s, end); j >= 0 {
		return s[:j]
	}
	return s
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
