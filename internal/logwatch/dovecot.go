package logwatch

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"unsafe"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
)

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
	var e event.Event
	ok := parseDovecotTo(&e, program, msg)
	return e, ok
}

// parseDovecotTo is parseDovecot writing the event into *e (every field:
// a reused event is overwritten whole).
func parseDovecotTo(e *event.Event, program, msg string) bool {
	*e = event.Event{Source: "dovecot"}
	if program == "dovecot" { // (the usual lines, read with fewer searches)
		if len(msg) > len("auth: ") && msg[:len("auth: ")] == "auth: " {
			if ok, done := dovecotPassdb(e, msg[len("auth: "):]); done {
				return ok
			}
		} else if proc, rest, ok := dovecotLoginHead(msg); ok {
			return loginLine(e, proc, rest)
		}
	}
	proc := program
	colon := -2 // where msg's first ": " is (-1: nowhere; -2: not known)
	if program == "dovecot" || strings.HasPrefix(program, "dovecot/") || program == "dovecot-auth" || dovecotProc(program) {
		proc = strings.TrimPrefix(program, "dovecot/")
		if program == "dovecot-auth" {
			proc = "auth"
		}
		// "dovecot: auth-worker(5787): …", "imap-login: …": the process
		// names, then the message.
		for range 2 {
			i, c := procEnd(msg)
			if i < 0 {
				colon = c
				break
			}
			proc, msg = msg[:i], msg[i+2:]
		}
	}
	if m := dovecotLevel(msg); len(m) != len(msg) {
		msg, colon = m, -2
	}
	// Dovecot 2.3 auth workers: "conn unix:auth-worker (uid=143): auth-worker<13247>: sql(…): …"
	if strings.HasPrefix(msg, "conn ") {
		if i := strings.Index(msg, ">: "); i >= 0 {
			msg, colon = msg[i+3:], -2
		}
	}
	ok := false
	switch {
	case strings.HasPrefix(msg, "pam_unix(") && strings.HasPrefix(msg, "pam_unix(dovecot:auth): authentication failure;"):
		// PAM's own line: "… tty=dovecot ruser=U rhost=IP [user=U]"
		e.Kind, e.Rule, e.Detail = event.AuthFailure, "pam_unix", "password mismatch"
		rh := strings.LastIndex(msg, " rhost=")
		if rh < 0 {
			return false
		}
		e.IP, ok = dovecotAddr(strings.TrimSpace(msg[rh+7:]))
		e.User = field(msg, " ruser=", ' ')
		if u := field(msg, " user=", ' '); u != "" && rh < strings.LastIndex(msg, " user=") {
			e.User = u
		}
		return ok
	case strings.HasSuffix(proc, "-login"):
		return loginLine(e, proc, msg)
	case proc == "auth" || strings.HasPrefix(proc, "auth-worker") || strings.HasPrefix(proc, "auth("):
		// driver(user,ip[,<session>]): unknown user | Password mismatch | pam_authenticate() failed
		open := strings.IndexByte(msg, '(')
		// The verdict follows the last "): " — the user name before it
		// may hold "): " too where auth_username_chars allows it — unless
		// auth_verbose_passwords wrote the client's password after the
		// verdict; the name cannot hold "): " with the default
		// auth_username_chars, so the first is Dovecot's then.
		var cl int
		if colon > 0 && msg[colon-1] == ')' && strings.IndexByte(msg[colon+2:], ':') < 0 {
			// msg's only ": " (no ':' after its first): its only "): ",
			// the first and the last
			cl = colon - 1
		} else {
			cl = lastIndexBy(msg, "): ", 0)
			if indexBy(msg, " (given password: ", 1) >= 0 {
				cl = indexBy(msg, "): ", 0)
			}
		}
		if open <= 0 || cl < open {
			return false
		}
		return passdbFailure(e, msg, open, cl)
	}
	return false
}

// loginLine reads the message msg of login process proc ("imap-login"),
// its process name and level taken off.
func loginLine(e *event.Event, proc, msg string) bool {
	e.Service = strings.TrimSuffix(proc, "-login")
	// The user name is the client's: Dovecot logs whatever it sent
	// (spaces, "rip=…" and "session=<…>" included, even when
	// auth_username_chars refused it). Only what comes before
	// "user=<" and after the last " rip=" is Dovecot's own, so the
	// address, the session and the verdict are read there; reading
	// the first "rip=" let any client have another address counted
	// (and banned) for its failures.
	head, user, mid, tail, usual := loginFieldsUsual(msg)
	if !usual {
		head, user, mid, tail = dovecotLoginFields(msg)
	}
	var ok bool
	if tail == "" {
		return false
	}
	e.IP, ok = dovecotAddr(tail)
	if !ok {
		return false
	}
	e.User = user
	if usual { // (mid is ", method=M,": M, without loginMethod's search for its ',')
		e.Mechanism = mid[len(", method=") : len(mid)-1]
	} else {
		e.Mechanism = loginMethod(mid)
	}
	e.Session = field(tail, "session=<", '>')
	msg = head
	if strings.HasPrefix(msg, "Login: ") {
		if e.Service == "submission" {
			e.Kind = event.AuthSuccess
		} else {
			e.Kind = event.LoginSuccess
		}
		return true
	}
	switch i := authFailedAt(msg); {
	case i >= 0:
		e.Kind = event.AuthFailure
		n := msg[i+len("(auth failed, "):]
		// "3 attempts in 18 secs": the summary of the session's failures.
		if d := leadingDigits(n); d > 0 && d < len(n) && n[d] == ' ' {
			// (the usual "N attempts …)": the first ' ' of the detail
			// is the one after the digits, and N is Atoi's value of
			// them; read in the pass that found them)
			if j := strings.IndexByte(n[d:], ')'); j >= 0 {
				e.Detail = n[:d+j]
				if v := digitsValue(n[:d]); v > 1 {
					e.Attempts = min(v, MaxAttempts)
				}
			}
			return true
		}
		if j := strings.IndexByte(n, ')'); j >= 0 {
			e.Detail = n[:j]
		}
		if k := strings.IndexByte(e.Detail, ' '); k > 0 {
			// (a count too large for an int is ErrRange with the largest
			// int: the most attempts, as the text says)
			if v, err := strconv.Atoi(e.Detail[:k]); (err == nil || errors.Is(err, strconv.ErrRange)) && v > 1 {
				e.Attempts = min(v, MaxAttempts)
			}
		}
		return true
	case strings.Contains(msg, "(tried to use disabled plaintext auth)") || strings.Contains(msg, "(tried to use disallowed plaintext auth)") ||
		strings.Contains(msg, "(proxy dest auth failed)"):
		// Credentials sent in clear where they are refused, or refused
		// by the proxied backend: fail2ban counts both.
		e.Kind = event.AuthFailure
		e.Detail = field(msg, "(", ')')
		return true
	}
	return false
}

// dovecotLoginHead splits a login process's line under syslog's "dovecot"
// tag ("imap-login: Login: …", "pop3-login: Disconnected (auth failed, …):
// …") into the process and the message after it as parseDovecotTo's
// general code does, when msg's first ':' is that of the ": " after a
// name ending in "-login" and the message names no other process, has no
// level and is neither "conn …" nor pam_unix's line (those are checked:
// ok false, and the general code reads the line). The general code's
// search for the first ": " is one for the first ':' then, none on a
// login ("Login: ", whose ": " is the first).
func dovecotLoginHead(msg string) (proc, rest string, ok bool) {
	c := strings.IndexByte(msg, ':')
	if c < len("x-login") || c+2 > len(msg) || msg[c+1] != ' ' || msg[c-len("-login"):c] != "-login" {
		return "", "", false
	}
	proc, rest = msg[:c], msg[c+2:]
	if len(rest) >= len("Login: ") && rest[:len("Login: ")] == "Login: " {
		return proc, rest, true
	}
	// The first ": " of rest does not end another process's name. (A
	// name is one only when it starts with 'a' or 'd' or ends in 'n':
	// "auth…", "dovecot", "…-login"; and rest is "conn …" or pam_unix's
	// only when it starts with 'c' or 'p': a login's message, "Disconnected
	// (auth failed, …)", is not compared with them.)
	if j := strings.IndexByte(rest, ':'); j >= 0 && (j+1 >= len(rest) || rest[j+1] != ' ' ||
		j > 0 && (rest[0] == 'a' || rest[0] == 'd' || rest[j-1] == 'n') && dovecotProc(rest[:j])) {
		return "", "", false
	}
	if len(dovecotLevel(rest)) != len(rest) || rest != "" && (rest[0] == 'c' || rest[0] == 'p') && (strings.HasPrefix(rest, "conn ") || strings.HasPrefix(rest, "pam_unix(")) {
		return "", "", false
	}
	return proc, rest, true
}

// dovecotPassdb reads the line Dovecot's auth process writes most, a
// passdb's failure under syslog's "dovecot" tag (rest is what follows
// "auth: ": "passwd-file(U,IP,<S>): unknown user"), as parseDovecotTo's
// general code does, when rest's first ": " follows a ')' and no ':'
// follows it (done: the answer is ok, e is set; else e is not touched and
// the general code reads the line). The general code's steps before
// passdbFailure are then known without their searches: no second process
// name (dovecotProc of what is before that ": "), no level (a level's ':'
// follows a letter), neither "conn …" nor pam_unix's line (checked), and
// the verdict after the first and only "): ".
func dovecotPassdb(e *event.Event, rest string) (ok, done bool) {
	// The first ": ": usually the first ':'; an IPv6 address has ':' but no ": ".
	c := strings.IndexByte(rest, ':')
	if c >= 0 && c+1 < len(rest) && rest[c+1] != ' ' {
		if i := indexBy(rest[c+1:], ": ", 0); i >= 0 {
			c += 1 + i
		} else {
			c = -1
		}
	}
	if c < 0 || c+1 >= len(rest) {
		return false, false
	}
	// (rest[:c] ends in ')': it names a process only as "auth-worker(…)"
	// or "auth(…)", which start with 'a' as "conn " with 'c' and
	// "pam_unix(" with 'p': a driver's name is not compared with them)
	if c < 2 || rest[c-1] != ')' || strings.IndexByte(rest[c+2:], ':') >= 0 ||
		(rest[0] == 'a' || rest[0] == 'c' || rest[0] == 'p') && (dovecotProc(rest[:c]) || strings.HasPrefix(rest, "conn ") || strings.HasPrefix(rest, "pam_unix(")) {
		return false, false
	}
	open := strings.IndexByte(rest[:c], '(')
	if open <= 0 { // (the general code's '(' is none or after cl: false)
		return false, true
	}
	return passdbFailure(e, rest, open, c-1), true
}

// passdbFailure reads a passdb's failure msg, "driver(user,ip[,<session>]):
// verdict" (open: its '(', cl: the ')' of the "): " before the verdict).
func passdbFailure(e *event.Event, msg string, open, cl int) bool {
	what := msg[cl+3:]
	switch {
	case len(what) >= len("unknown user") && what[:8] == "unknown " && what[8:12] == "user": // (HasPrefix, in two compares the compiler makes inline)
		e.Detail = "unknown user"
	case strings.HasPrefix(what, "Password mismatch") || strings.HasPrefix(what, "invalid credentials") || strings.HasPrefix(what, "Invalid credentials"):
		e.Detail = "password mismatch"
	case strings.HasPrefix(what, "pam_authenticate() failed"):
		e.Detail = "password mismatch"
		if strings.Contains(what, "User not known") {
			e.Detail = "unknown user"
		}
	default:
		return false
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
	// The usual fields, "user,IPv4" or "user,IPv4,<S>" with no other ',',
	// are read forward: the first ',' then ends the user, the address
	// (which has none) the next field, and a last one with none and
	// read as the session is the one the search from the right finds.
	if c := strings.IndexByte(args, ','); c >= 0 {
		if ip, n, ok := logline.DottedQuad(args[c+1:]); ok {
			switch after := args[c+1+n:]; {
			case after == "":
				e.User, e.IP, e.Kind = args[:c], ip, event.AuthFailure
				return true
			case after[0] == ',' && (len(after) == 1 || len(after) >= 3 && after[1] == '<' && after[len(after)-1] == '>' && strings.IndexByte(after[2:], ',') < 0):
				e.User, e.IP, e.Kind = args[:c], ip, event.AuthFailure
				if len(after) > 1 {
					e.Session = after[2 : len(after)-1]
				}
				return true
			}
		}
	}
	last := lastByte(args, ',')
	if last < 0 {
		return false
	}
	if prev := lastByte(args[:last], ','); prev >= 0 {
		if s := args[last+1:]; s == "" || strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
			e.Session = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">") // "" or "<S>"
			args, last = args[:last], prev
		}
	}
	e.User = args[:last]
	var ok bool
	e.IP, ok = dovecotAddr(args[last+1:])
	e.Kind = event.AuthFailure
	return ok
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
	if msg == "" {
		return msg
	}
	var l string // (the levels' first bytes differ: one can be there)
	switch msg[0] {
	case 'I':
		l = "Info: "
	case 'W':
		l = "Warning: "
	case 'E':
		l = "Error: "
	case 'D':
		l = "Debug: "
	case 'F':
		l = "Fatal: "
	case 'P':
		l = "Panic: "
	default:
		return msg
	}
	if strings.HasPrefix(msg, l) {
		return msg[len(l):]
	}
	return msg
}

// procEnd returns where the Dovecot process name msg starts with ends: the
// index of msg's first ": " when what is before it names one (dovecotProc),
// else -1; and the index of msg's first ": " (-1: none). The auth
// process's own name is read without a search.
func procEnd(msg string) (end, colon int) {
	switch {
	case strings.HasPrefix(msg, "auth: "):
		return len("auth"), len("auth")
	case strings.HasPrefix(msg, "dovecot: "):
		return len("dovecot"), len("dovecot")
	}
	i := indexBy(msg, ": ", 0)
	if i <= 0 || !dovecotProc(msg[:i]) {
		return -1, i
	}
	return i, i
}

// authFailedAt is strings.Index(msg, "(auth failed, "), without a search
// on the usual "Disconnected (auth failed, …".
func authFailedAt(msg string) int {
	if len(msg) > 27 && msg[:13] == "Disconnected " && msg[13:27] == "(auth failed, " { // (two compares the compiler makes inline)
		return len("Disconnected ")
	}
	return strings.Index(msg, "(auth failed, ")
}

// loginFieldsUsual is dovecotLoginFields of a message of the usual form,
// "…: user=<U>, method=M, rip=IP, …" (its first '=' that of "user=<", or
// "Login: user=<" first), found forward with a few byte searches where
// dovecotLoginFields searched back for the last " rip=" over Dovecot's
// fields and for the last '>' over the user's: the first '>' after
// "user=<" is the last before " rip=" when ", method=M, rip=" follows it
// with no '>' in M, and that " rip=" is the last when no 'r' follows it
// (one after it would have its 'r' there). ok is false for any other
// message, which dovecotLoginFields reads.
func loginFieldsUsual(msg string) (head, user, mid, tail string, ok bool) {
	u := len("Login: ")
	if len(msg) < len("Login: user=<") || msg[:len("Login: user=<")] != "Login: user=<" {
		// The first "user=<" has the first '=' when that '=' is in one.
		e := strings.IndexByte(msg, '=')
		if e < len("user") || e+1 >= len(msg) || msg[e-len("user"):e+2] != "user=<" {
			return "", "", "", "", false
		}
		u = e - len("user")
	}
	rest := msg[u+len("user=<"):]
	g := strings.IndexByte(rest, '>')
	if g < 0 {
		return "", "", "", "", false
	}
	after := rest[g+1:] // ", method=M, rip=…"
	const method, rip = ", method=", " rip="
	if len(after) < len(method) || after[:len(method)] != method {
		return "", "", "", "", false
	}
	c := strings.IndexByte(after[len(method):], ',')
	if c < 0 {
		return "", "", "", "", false
	}
	m := len(method) + c + 1 // after[:m]: ", method=M,"
	if len(after) < m+len(rip) || after[m:m+len(rip)] != rip || strings.IndexByte(after[:m], '>') >= 0 {
		return "", "", "", "", false
	}
	tail = after[m+len(rip):]
	if strings.IndexByte(tail, 'r') >= 0 {
		return "", "", "", "", false
	}
	return msg[:u], rest[:g], after[:m], tail, true
}

// dovecotLoginFields splits a login process's message
// ("Disconnected (auth failed, 1 attempts in 2 secs): user=<U>, method=M,
// rip=IP, lip=IP, session=<S>") into Dovecot's text before "user=<", the
// user name U (the client's: anything may be in it), the fields between
// it and rip ("method=M"), and the fields from the last " rip=" on,
// without "rip=" (its address first). tail is "" when there is no rip.
func dovecotLoginFields(msg string) (head, user, mid, tail string) {
	r := lastIndexBy(msg, " rip=", 1) // (by its 'r': the fields after it have none but "secured")
	if r < 0 {
		return msg, "", "", ""
	}
	head, tail = msg[:r], msg[r+len(" rip="):]
	u := len("Login: ") // (a login's: its first "user=<", without a search)
	if len(head) < len("Login: user=<") || head[:len("Login: user=<")] != "Login: user=<" {
		u = indexBy(head, "user=<", 5)
	}
	if u < 0 {
		return head, "", head, tail
	}
	user = head[u+len("user=<"):]
	head = head[:u]
	if j := lastByte(user, '>'); j >= 0 {
		user, mid = user[:j], user[j+1:]
	}
	return head, user, mid, tail
}

// loginMethod is field(mid, "method=", ','): mid is what a login line
// has between the user's '>' and " rip=", usually ", method=PLAIN,", where
// the first "method=" is at 2 (", " holds no 'm') and is not searched for.
func loginMethod(mid string) string {
	if len(mid) < len(", method=") || mid[:len(", method=")] != ", method=" {
		return field(mid, "method=", ',')
	}
	v := mid[len(", method="):]
	if j := strings.IndexByte(v, ','); j >= 0 {
		return v[:j]
	}
	return v
}

// MaxAttempts is the most attempts one login summary ("auth failed, N
// attempts in M secs") stands for. Dovecot delays each failure
// (auth_failure_delay, 2 s) and ends a login that does not finish, so a
// real session's N is a few dozen at most; the text is the log's, and
// anyone who can write to syslog (logger -t dovecot) can write N =
// 999999999. Every attempt is paired and counted one by one (Once, the
// report's abuse view), holding the pairing's lock: such a line stalled
// the guard for minutes and ran the report out of memory.
const MaxAttempts = 1000

// leadingDigits is the number of ASCII digits s starts with, up to 18
// (digitsValue's value of 18 digits cannot overflow an int).
func leadingDigits(s string) int {
	i := 0
	for i < len(s) && i < 18 && s[i]-'0' <= 9 {
		i++
	}
	return i
}

// digitsValue is strconv.Atoi of s, 1 to 18 ASCII digits.
func digitsValue(s string) int {
	v := 0
	for i := 0; i < len(s); i++ {
		v = v*10 + int(s[i]-'0')
	}
	return v
}

// dovecotAddr parses the address at the start of s (up to ',' or ' ').
func dovecotAddr(s string) (netip.Addr, bool) {
	if ip, n, ok := logline.DottedQuad(s); ok && (n == len(s) || s[n] == ',' || s[n] == ' ' || s[n] == ')') {
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

// indexBy is strings.Index(s, key), searched by key's byte at k (one
// rarer than key's first: '<', '=', ':'), each one found checked for key
// around it. strings.Index compares the whole key at every byte of strings
// as short as Dovecot's lines, and stops at each of its first bytes on
// longer ones.
func indexBy(s, key string, k int) int {
	for off := 0; off < len(s); {
		i := strings.IndexByte(s[off:], key[k])
		if i < 0 {
			return -1
		}
		i += off
		if t := i - k; t >= 0 && hasAt(s, t, key) {
			return t
		}
		off = i + 1
	}
	return -1
}

// lastIndexBy is strings.LastIndex(s, key), searched by key's byte at k
// from the end, eight bytes at a time (Go's LastIndexByte compares one
// byte at a time), each one found checked for key around it.
func lastIndexBy(s, key string, k int) int {
	c := key[k]
	i := len(s)
	if i >= 8 {
		b := unsafe.Slice(unsafe.StringData(s), len(s))
		rep := uint64(c) * 0x0101010101010101
		for ; i >= 8; i -= 8 {
			for m := zeroBytes(binary.LittleEndian.Uint64(b[i-8:]) ^ rep); m != 0; {
				n := bits.Len64(m)/8 - 1 // the word's last c
				if t := i - 8 + n - k; t >= 0 && hasAt(s, t, key) {
					return t
				}
				m &^= 0x80 << (8 * n)
			}
		}
	}
	for i--; i >= 0; i-- {
		if s[i] == c && i >= k && hasAt(s, i-k, key) {
			return i - k
		}
	}
	return -1
}

// lastByte is strings.LastIndexByte(s, c), eight bytes at a time.
func lastByte(s string, c byte) int {
	i := len(s)
	if i >= 8 {
		b := unsafe.Slice(unsafe.StringData(s), len(s))
		rep := uint64(c) * 0x0101010101010101
		for ; i >= 8; i -= 8 {
			if m := zeroBytes(binary.LittleEndian.Uint64(b[i-8:]) ^ rep); m != 0 {
				return i - 9 + bits.Len64(m)/8
			}
		}
	}
	for i--; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// hasAt reports whether key is at s[t:]: a key of up to 4 bytes, or one
// whose first byte differs, compared byte by byte (most candidates differ
// at their first or second byte); a longer one whose first byte is there,
// whole (the runtime's comparison is a call, the loop ~10 instructions a
// byte).
func hasAt(s string, t int, key string) bool {
	if t+len(key) > len(s) {
		return false
	}
	s = s[t : t+len(key)]
	if len(key) > 4 && s[0] == key[0] {
		return s == key // (one call, where the loop took ~10 instructions a byte)
	}
	for j := range len(key) {
		if s[j] != key[j] {
			return false
		}
	}
	return true
}

// zeroBytes has the high bit of each zero byte of w set, and no other bit.
func zeroBytes(w uint64) uint64 {
	const lo7 = 0x7f7f7f7f7f7f7f7f
	return ^((w&lo7 + lo7) | w | lo7)
}

// field returns the text after key up to the byte end (or the end of s).
func field(s, key string, end byte) string {
	i := indexBy(s, key, len(key)-1) // (the keys end in '=', '<' or '(')
	if i < 0 {
		return ""
	}
	s = s[i+len(key):]
	if j := strings.IndexByte(s, end); j >= 0 {
		return s[:j]
	}
	return s
}
