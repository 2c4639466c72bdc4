package logwatch

import (
	"context"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/event"
)

// onceCount parses the lines (each slice a file, fed one after the other,
// as watch's followers may deliver them) through one Once and returns the
// attempts counted per address and the events passed on.
func onceCount(files ...[]string) (map[string]int, []event.Event) {
	rec := &event.Recorder{}
	o := NewOnce(rec)
	for _, lines := range files {
		emit := Events(context.Background(), o)
		for _, l := range lines {
			emit(l)
		}
	}
	n := map[string]int{}
	for _, e := range rec.Events {
		if e.Kind == event.AuthFailure {
			n[e.IP.String()] += e.Count()
		}
	}
	return n, rec.Events
}

// Lines as written by Postfix 3.7 with Dovecot 2.3.19 SASL and
// auth_verbose = yes (taken from TestPostfixDovecotSASL's logs): Dovecot's
// auth process logs the verdict, Postfix its warning after
// auth_failure_delay; the fourth attempt's Dovecot answer came too late and
// Postfix logged "Connection lost" (no event), the third's verdict is only
// in Dovecot's log.
var (
	saslPostfix = []string{
		"Dec 06 03:47:34 mx postfix/smtpd[26043]: warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice@example.test",
		"Dec 06 03:47:40 mx postfix/smtpd[26043]: warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice@example.test",
		"Dec 06 03:47:50 mx postfix/smtpd[26043]: warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: Connection lost to authentication server, sasl_username=alice@example.test",
		"Dec 06 03:48:00 mx postfix/smtpd[26043]: warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: Connection lost to authentication server, sasl_username=alice@example.test",
	}
	saslDovecot = []string{
		"Dec 06 03:47:32 auth: Info: passwd-file(alice@example.test,127.0.0.2): Password mismatch",
		"Dec 06 03:47:38 auth: Info: passwd-file(alice@example.test,127.0.0.2): Password mismatch",
		"Dec 06 03:47:48 auth: Info: passwd-file(bob@example.test,127.0.0.2): unknown user",
		"Dec 06 03:48:00 auth: Info: passwd-file(alice@example.test,127.0.0.3,<mWy5+e5h18V/AAAD>): Password mismatch",
		"Dec 06 03:48:06 auth: Info: passwd-file(alice@example.test,127.0.0.3,<mWy5+e5h18V/AAAD>): Password mismatch",
		"Dec 06 03:48:16 auth: Info: passwd-file(alice@example.test,127.0.0.3,<mWy5+e5h18V/AAAD>): Password mismatch",
		"Dec 06 03:48:18 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 3 attempts in 18 secs): user=<alice@example.test>, method=PLAIN, rip=127.0.0.3, lip=127.0.0.1, session=<mWy5+e5h18V/AAAD>",
	}
)

func TestOnceCountsEachAttemptOnce(t *testing.T) {
	want := map[string]int{"127.0.0.2": 3, "127.0.0.3": 3}
	check := func(name string, got map[string]int, want map[string]int) {
		t.Helper()
		for ip, n := range want {
			if got[ip] != n {
				t.Errorf("%s: %s counted %d attempts, want %d (all: %v)", name, ip, got[ip], n, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: counted %v, want %v", name, got, want)
		}
	}
	got, _ := onceCount(saslPostfix, saslDovecot)
	check("postfix file first", got, want)
	got, _ = onceCount(saslDovecot, saslPostfix)
	check("dovecot file first", got, want)
	// One file, time order (Dovecot logging to syslog with Postfix).
	merged := append(append([]string{}, saslDovecot[:2]...), saslPostfix[0], saslPostfix[1])
	merged = append(merged, saslDovecot[2:]...)
	got, _ = onceCount(merged)
	check("one file", got, want)

	// Without auth_verbose only the front ends log: the summary stands
	// for its three attempts, each Postfix warning for one.
	got, _ = onceCount(saslPostfix[:2], saslDovecot[6:])
	check("auth_verbose = no", got, map[string]int{"127.0.0.2": 2, "127.0.0.3": 3})

	// PAM's own line, Dovecot's pam passdb line and the login summary of
	// one attempt; then a second attempt known only to PAM.
	got, _ = onceCount([]string{
		"Dec 06 04:00:01 mx auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.44  user=bob",
		"Dec 06 04:00:01 mx dovecot: auth-worker(311): pam(bob,192.0.2.44,<AbCd>): pam_authenticate() failed: Authentication failure (Password mismatch?)",
		"Dec 06 04:00:03 mx dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=192.0.2.44, lip=192.0.2.1, session=<AbCd>",
		"Dec 06 04:00:09 mx auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.44  user=bob",
	})
	check("pam", got, map[string]int{"192.0.2.44": 2})

	// Two sessions of one address: lines of one never stand for the other.
	got, _ = onceCount([]string{
		"Dec 06 05:00:00 mx dovecot: auth: passwd-file(a,198.51.100.5,<S1>): Password mismatch",
		"Dec 06 05:00:01 mx dovecot: auth: passwd-file(a,198.51.100.5,<S2>): Password mismatch",
		"Dec 06 05:00:02 mx dovecot: auth: passwd-file(a,198.51.100.5,<S2>): Password mismatch",
		"Dec 06 05:00:09 mx dovecot: imap-login: Disconnected (auth failed, 2 attempts in 9 secs): user=<a>, method=PLAIN, rip=198.51.100.5, lip=192.0.2.1, session=<S1>",
	})
	check("two sessions", got, map[string]int{"198.51.100.5": 4})

	// Lines of one address far apart in time are separate attempts.
	got, _ = onceCount([]string{
		"Dec 06 06:00:00 mx dovecot: auth: passwd-file(a,203.0.113.8): Password mismatch",
		"Dec 06 06:05:00 mx postfix/smtpd[1]: warning: unknown[203.0.113.8]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
	})
	check("far apart", got, map[string]int{"203.0.113.8": 2})

	// More attempts than an address remembers (the oldest are forgotten):
	// the auth process's line still pairs with a remembered one.
	var many []string
	for range maxPending + 44 {
		many = append(many, "Dec 06 07:00:00 mx postfix/smtpd[1]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6")
	}
	many = append(many, "Dec 06 07:00:00 mx dovecot: auth: passwd-file(a,203.0.113.9): Password mismatch")
	got, _ = onceCount(many)
	check("many", got, map[string]int{"203.0.113.9": maxPending + 44})
}

// Events other than paired auth failures pass unchanged; relayguard's own
// records (one line per attempt) are never paired.
func TestOncePassesOthers(t *testing.T) {
	_, evs := onceCount([]string{
		`time=2026-12-06T03:00:00Z level=INFO msg="auth failed" client=192.0.2.9 mechanism=PLAIN user=x`,
		`time=2026-12-06T03:00:00Z level=INFO msg="auth failed" client=192.0.2.9 mechanism=PLAIN user=x`,
		"Dec 06 03:00:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 <a@b.example>: Relay access denied; from=<> to=<a@b.example> proto=ESMTP helo=<x>",
		"Dec 06 03:00:02 mx dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=5, session=<Q>",
	})
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, string(e.Kind))
	}
	if got := strings.Join(kinds, " "); got != "auth_failure auth_failure relay_denied login_success" {
		t.Fatalf("events passed on: %s", got)
	}
}
