package logwatch

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/event"
)

// Dovecot's parser as it was before it was made faster (strings.LastIndex,
// strings.Split, IndexAny, netip.ParseAddr for every address), kept as
// the reference the fast one is held to (TestDovecotSameAsReference,
// FuzzDovecotSameAsReference). dovecotProc is shared; refField is field as it
// was (strings.Index).

func refParseDovecot(program, msg string) (event.Event, bool) {
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
	msg = refDovecotLevel(msg)
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
		e.IP, ok = refDovecotAddr(strings.TrimSpace(msg[rh+7:]))
		e.User = refField(msg, " ruser=", ' ')
		if u := refField(msg, " user=", ' '); u != "" && rh < strings.LastIndex(msg, " user=") {
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
		head, user, mid, tail := refDovecotLoginFields(msg)
		if tail == "" {
			return e, false
		}
		e.IP, ok = refDovecotAddr(tail)
		if !ok {
			return e, false
		}
		e.User = user
		e.Mechanism = refField(mid, "method=", ',')
		e.Session = refField(tail, "session=<", '>')
		msg = head
		switch {
		case strings.HasPrefix(msg, "Login: "):
			if e.Service == "submission" {
				e.Kind = event.AuthSuccess
			} else {
				e.Kind = event.LoginSuccess
			}
			return e, true
		case strings.Contains(msg, "(auth failed, "):
			e.Kind = event.AuthFailure
			i := strings.Index(msg, "(auth failed, ")
			n := msg[i+len("(auth failed, "):]
			if j := strings.IndexByte(n, ')'); j >= 0 {
				e.Detail = n[:j]
			}
			// "3 attempts in 18 secs": the summary of the session's failures.
			if k := strings.IndexByte(e.Detail, ' '); k > 0 {
				if v, err := strconv.Atoi(e.Detail[:k]); (err == nil || errors.Is(err, strconv.ErrRange)) && v > 1 {
					e.Attempts = min(v, MaxAttempts) // (the bound is a rule, not a speed-up)
				}
			}
			return e, true
		case strings.Contains(msg, "(tried to use disabled plaintext auth)") || strings.Contains(msg, "(tried to use disallowed plaintext auth)") ||
			strings.Contains(msg, "(proxy dest auth failed)"):
			// Credentials sent in clear where they are refused, or refused
			// by the proxied backend: fail2ban counts both.
			e.Kind = event.AuthFailure
			e.Detail = refField(msg, "(", ')')
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
		cl := strings.LastIndex(msg, "): ")
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
		args := strings.Split(msg[open+1:cl], ",")
		if n := len(args); n > 2 && (args[n-1] == "" || strings.HasPrefix(args[n-1], "<") && strings.HasSuffix(args[n-1], ">")) {
			e.Session = strings.TrimSuffix(strings.TrimPrefix(args[n-1], "<"), ">") // "" or "<S>"
			args = args[:n-1]
		}
		if len(args) < 2 {
			return e, false
		}
		e.User = strings.Join(args[:len(args)-1], ",")
		e.IP, ok = refDovecotAddr(args[len(args)-1])
		e.Kind = event.AuthFailure
		return e, ok
	}
	return e, false
}

// dovecotLevel strips the log level Dovecot's own log file writes after
// the process name ("Info: ", "Warning: "…).
func refDovecotLevel(msg string) string {
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
func refDovecotLoginFields(msg string) (head, user, mid, tail string) {
	r := strings.LastIndex(msg, " rip=")
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
func refDovecotAddr(s string) (netip.Addr, bool) {
	if i := strings.IndexAny(s, ", )"); i >= 0 {
		s = s[:i]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func refField(s, key string, end byte) string {
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
