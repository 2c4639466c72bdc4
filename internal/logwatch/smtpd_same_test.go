package logwatch

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/report/loggen"
)

// The smtpd parser as it was before it wrote its event through a pointer
// (ParseMessageTo): TestParseSmtpdSame and FuzzParseSmtpd hold the new
// code to it.

// refAfterFrom is afterFrom as it was, with strings.Index.
func refAfterFrom(s string) (netip.Addr, bool) {
	i := strings.Index(s, " from ")
	if i < 0 {
		return netip.Addr{}, false
	}
	return bracketAddr(s[i+6:])
}

// refParseSmtpd is parseSmtpd as it was before it wrote into a pointer.
func refParseSmtpd(program, msg string, w *wants) (event.Event, bool) {
	e := event.Event{Source: "postfix", Service: smtpService(program)}
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
				return e, false
			}
			d := strings.TrimSpace(strings.TrimPrefix(tail[sp+len(" authentication failed"):], ":"))
			// The server failed, not the client (the auth daemon died, or
			// Postfix and the SASL server disagree on mechanisms): a user
			// whose password was right must not be counted as guessing.
			// fail2ban's postfix filter excludes both in mode=auth.
			if strings.HasPrefix(d, "Connection lost to authentication server") || strings.HasPrefix(d, "Invalid authentication mechanism") {
				return e, false
			}
			e.Kind = event.AuthFailure
			e.Mechanism = tail[:sp]
			if j := strings.Index(d, ", sasl_username="); j >= 0 {
				e.User = d[j+len(", sasl_username="):]
				d = d[:j]
			}
			e.Detail = d
			e.IP, ok = bracketAddr(rest[:i])
			return e, ok
		}
		// warning: non-SMTP command from unknown[192.0.2.1]: GET / HTTP/1.1
		if strings.HasPrefix(rest, "non-SMTP command from ") {
			e.Kind, e.Rule = event.ProtocolAbuse, "non_smtp_command"
			e.IP, ok = bracketAddr(rest)
			if j := strings.Index(rest, "]: "); j >= 0 {
				e.Detail = rest[j+3:]
			}
			return e, ok
		}
		return e, false
	case strings.HasPrefix(msg, "lost connection after AUTH from "):
		e.Kind = event.LostAfterAuth
		e.IP, ok = refAfterFrom(msg)
		return e, ok
	case strings.HasPrefix(msg, "improper command pipelining after "):
		e.Kind, e.Rule = event.ProtocolAbuse, "pipelining"
		e.IP, ok = refAfterFrom(msg)
		return e, ok
	case strings.HasPrefix(msg, "too many errors after "):
		// smtpd_hard_error_limit reached (enumeration, broken bots)
		e.Kind, e.Rule = event.ProtocolAbuse, "too_many_errors"
		e.IP, ok = refAfterFrom(msg)
		return e, ok
	}
	// The rest start with a queue ID (or NOQUEUE) of at most 16 bytes and
	// ": ": one short look says which, where three searches of the whole
	// line for ": reject: ", ": milter-reject: " and ": client=" cost a
	// quarter of the parse on lines that are none of them.
	qid, rest, ok := splitQueueID(msg)
	if !ok {
		return e, false
	}
	switch {
	case strings.HasPrefix(rest, "reject: "):
		// "NOQUEUE: reject: RCPT from h[a]: ..." or "4XyZ1: reject: ..."
		if !w.rejected() {
			return e, false
		}
		return refParseReject(e, rest[len("reject: "):])
	case strings.HasPrefix(rest, "milter-reject: "):
		if !w.rejected() {
			return e, false
		}
		return refParseReject(e, rest[len("milter-reject: "):])
	case strings.HasPrefix(rest, "client="):
		// "4XyZ1: client=h[a], sasl_method=PLAIN, sasl_username=bob"
		rest = rest[len("client="):]
		j := strings.Index(rest, ", sasl_method=")
		if j < 0 {
			return e, false
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
		return e, ok
	}
	return e, false
}

// refParseReject is parseReject as it was, parsing the part after "reject: " of a Postfix reject line:
// "RCPT from h[a]: 554 5.7.1 <r>: Relay access denied; from=<s> to=<r> ...".
func refParseReject(e event.Event, s string) (event.Event, bool) {
	ip, ok := refAfterFrom(s)
	if !ok {
		return e, false
	}
	e.IP = ip
	// (each marker searched once, and " to=<" only after the reply text)
	if r := strings.Index(s, "Relay access denied"); r >= 0 {
		e.Kind, e.Rule = event.RelayDenied, "reject_unauth_destination"
		if i := strings.Index(s[r:], " to=<"); i >= 0 {
			to := s[r+i+5:]
			if j := strings.IndexByte(to, '>'); j >= 0 {
				e.Detail = to[:j]
			}
		}
		return e, true
	}
	if i := strings.Index(s, " blocked using "); i >= 0 {
		zone := s[i+len(" blocked using "):]
		if j := strings.IndexAny(zone, ";, "); j >= 0 {
			zone = zone[:j]
		}
		e.Kind, e.Rule, e.Detail = event.DNSBLReject, "reject_rbl_client", zone
		return e, true
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
	return e, true
}

// checkSmtpdSame compares ParseMessage and ParseMessageTo with the old
// parser on one smtpd message, under the plain and a submission tag.
func checkSmtpdSame(t *testing.T, msg string) {
	t.Helper()
	for _, prog := range []string{"postfix/smtpd", "postfix/submission/smtpd"} {
		want, wok := refParseSmtpd(prog, msg, nil)
		got, gok := ParseMessage(prog, msg)
		var to event.Event
		to.User = "left over" // (written over whole)
		took := ParseMessageTo(&to, prog, msg)
		if got != want || gok != wok || to != want || took != wok {
			t.Fatalf("%s %q:\nParseMessage   %+v %v\nParseMessageTo %+v %v\nbefore         %+v %v", prog, msg, got, gok, to, took, want, wok)
		}
	}
}

// smtpdMessages are the smtpd messages of every generated shape, of
// fail2ban's sample logs (when installed) and of a few odd lines.
func smtpdMessages(t testing.TB) []string {
	msgs := []string{"", "warning: ", "warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: Connection lost to authentication server",
		"NOQUEUE: reject: RCPT from x[192.0.2.1]: 554 5.7.1 <a@b>: Relay access denied; from=<> to=<a@b> proto=ESMTP",
		"NOQUEUE: reject: RCPT from x[192.0.2.1]: 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen;",
		"4XyZ1: client=h[2001:db8::1], sasl_method=PLAIN, sasl_username=bob, x", "4XyZ1: client=h[192.0.2.1]",
		"NOQUEUE: milter-reject: RCPT from [IPv6:2001:db8::1]: 550 x; from=<a> to=<b>", "reject: RCPT from a[1.2.3]: x",
		// (saslAt, trimSpace and parseReject's searches from past the stage)
		"warning: a: SASL b]: SASL LOGIN authentication failed: x", "warning: a]: SASL b]: SASL PLAIN authentication failed:  x ",
		"warning: unknown[2001:db8::1]: SASL LOGIN authentication failed: \u00a0x", "warning: [1.2.3.4]:25: SASL LOGIN authentication failed: x\t",
		"warning: unknown[192.0.2.1]: SASL LOGIN authentication failed:", "warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: é",
		"NOQUEUE: reject: RCPT from blocked using z[192.0.2.1]: 554 x", "NOQUEUE: reject: RCPT  from x[192.0.2.1]: 554 x blocked using z",
		"NOQUEUE: reject: Relay from Relay access denied[192.0.2.1]: 554 to=<a@b>", "NOQUEUE: reject: from x[192.0.2.1] blocked using z,y"}
	p := &logline.Parser{Year: 2026, Loc: time.UTC}
	add := func(line string) {
		if l, ok := p.Parse(line); ok && strings.HasSuffix(l.Program, "/smtpd") {
			msgs = append(msgs, l.Message)
		}
	}
	for _, shape := range loggen.Shapes {
		var buf bytes.Buffer
		if err := loggen.Write(&buf, loggen.Options{Lines: 20000, Start: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), Seed: 5, Shape: shape, Abuse: true}); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(buf.String(), "\n") {
			add(line)
		}
	}
	for _, name := range []string{"postfix", "postfix-sasl"} {
		f, err := os.Open(fail2banLogs + name)
		if err != nil {
			continue // (TestFail2banParity requires them under CI)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			add(sc.Text())
		}
		f.Close()
	}
	return msgs
}

// TestParseSmtpdSame holds the smtpd parser to the old one on every smtpd
// line of the generated shapes and fail2ban's samples, and on each with its
// tail cut at every length.
func TestParseSmtpdSame(t *testing.T) {
	eachSmtpdMessage(t, 3000, func(msg string, n int) { checkSmtpdSame(t, msg[:n]) })
}

// eachSmtpdMessage calls check(msg, len(msg)) for each distinct message of
// smtpdMessages, and check(msg, n) for every n < len(msg) of the first
// cuts of them.
func eachSmtpdMessage(t *testing.T, cuts int, check func(msg string, n int)) {
	seen := map[string]bool{}
	for _, msg := range smtpdMessages(t) {
		if seen[msg] {
			continue
		}
		seen[msg] = true
		check(msg, len(msg))
		if len(seen) < cuts {
			for n := range len(msg) {
				check(msg, n)
			}
		}
	}
}

func FuzzParseSmtpd(f *testing.F) {
	for _, msg := range smtpdMessages(f)[:200] {
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, msg string) { checkSmtpdSame(t, msg) })
}

// checkIndexSame holds indexSpaced and IndexAngled to strings.Index.
func checkIndexSame(t *testing.T, s string) {
	t.Helper()
	for _, w := range []string{"from ", "blocked using ", "b", "aa"} {
		if got, want := indexSpaced(s, w), strings.Index(s, " "+w); got != want {
			t.Errorf("indexSpaced(%q, %q) = %d, strings.Index %d", s, w, got, want)
		}
	}
	for _, k := range []string{" to=<", "to=<", "<", "<<", " <"} {
		if got, want := IndexAngled(s, k), strings.Index(s, k); got != want {
			t.Errorf("IndexAngled(%q, %q) = %d, strings.Index %d", s, k, got, want)
		}
	}
}

// TestIndexHelpersSame holds the searches parseReject and afterFrom use to
// strings.Index on every smtpd message of the shapes, on each with its head
// or its tail cut at every length, and on near misses.
func TestIndexHelpersSame(t *testing.T) {
	for _, s := range []string{"", " ", "from ", " from ", "xfrom from x", "  from from ", "to=<", " to=< to=<",
		"x to= <a> to=<b>", "<<< to=<", "blocked using  blocked using x", "ablocked using b blocked using "} {
		checkIndexSame(t, s)
	}
	eachSmtpdMessage(t, 1000, func(msg string, n int) {
		checkIndexSame(t, msg[:n])
		checkIndexSame(t, msg[len(msg)-n:])
	})
}

func FuzzIndexHelpers(f *testing.F) {
	for _, msg := range smtpdMessages(f)[:100] {
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, s string) { checkIndexSame(t, s) })
}
