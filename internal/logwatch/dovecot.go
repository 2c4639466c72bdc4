package logwatch

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/event"
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
