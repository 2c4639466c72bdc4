package report

import (
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/logwatch"
)

// refConnectionLine is connectionLine as it was before session 8 (its
// tests in another order): connectionLine is held to it by
// TestConnectionLineSame and FuzzConnectionLine.
func refConnectionLine(a *Analyzer, prog string, at int, msg string) bool {
	if a.opt.SMTPDStats || msg == "" || (msg[0] != 'c' && msg[0] != 'd' && msg[0] != 'l') {
		return false
	}
	if !strings.HasPrefix(prog, "postfix") && (prog == "relayguard" || logwatch.Dovecot(prog)) {
		return false
	}
	if at < 0 || prog[at:] != "smtpd" {
		return false
	}
	return strings.HasPrefix(msg, "connect from ") || strings.HasPrefix(msg, "disconnect from ") ||
		strings.HasPrefix(msg, "lost connection after ")
}

var connPrograms = []string{"postfix/smtpd", "postfix/submission/smtpd", "postfix/smtps/smtpd", "postfix/smtp", "postfix/smtpdx",
	"postfix-out/smtpd", "dovecot/smtpd", "relayguard/smtpd", "smtpd", "postfix", "postfix-script", "dovecot", "relayguard", "imap-login"}

var connMessages = []string{"connect from unknown[192.0.2.1]", "disconnect from unknown[192.0.2.1] ehlo=1 quit=1 commands=2",
	"lost connection after AUTH from unknown[192.0.2.1]", "lost connection before AUTH", "connection from x", "disconnected",
	"Connect from x", "connect  from x", "NOQUEUE: reject: RCPT from x", ""}

// checkConnectionLine compares connectionLine with the old one for prog
// and msg under every syslog name and --smtpd-stats.
func checkConnectionLine(t *testing.T, prog, msg string) {
	t.Helper()
	for _, name := range []string{"postfix", "postfix-out", "dovecot", "relayguard"} {
		for _, stats := range []bool{false, true} {
			a := NewAnalyzer(Options{SyslogName: name, SMTPDStats: stats})
			at := a.commandAt(prog)
			if got, want := a.connectionLine(prog, at, msg), refConnectionLine(a, prog, at, msg); got != want {
				t.Fatalf("syslog name %q, --smtpd-stats %v: connectionLine(%q, %d, %q) = %v, the old one %v", name, stats, prog, at, msg, got, want)
			}
		}
	}
}

// TestConnectionLineSame holds connectionLine to the old one on programs
// and messages near the connection lines', each message cut at every
// length.
func TestConnectionLineSame(t *testing.T) {
	n := 0
	for _, prog := range connPrograms {
		for _, msg := range connMessages {
			for k := range len(msg) + 1 {
				checkConnectionLine(t, prog, msg[:k])
				n++
			}
		}
	}
	// (it must say yes to some: the three kinds under postfix/smtpd)
	a := NewAnalyzer(Options{})
	for _, msg := range connMessages[:3] {
		if !a.connectionLine("postfix/smtpd", a.commandAt("postfix/smtpd"), msg) {
			t.Errorf("%q is not a connection line", msg)
		}
	}
}

func FuzzConnectionLine(f *testing.F) {
	for _, prog := range connPrograms {
		for _, msg := range connMessages {
			f.Add(prog, msg)
		}
	}
	f.Fuzz(checkConnectionLine)
}
