package report

import (
	"strings"
	"testing"
)

// refCommand is Analyzer.command as it was before the usual prefix was
// compared as one word.
func refCommand(prefix, prog string) (cmd string, ok bool) {
	switch {
	case strings.HasPrefix(prog, prefix) || (prefix != "postfix/" && strings.HasPrefix(prog, "postfix/")):
		cmd = prog[strings.IndexByte(prog, '/')+1:]
		if rest, ok := strings.CutPrefix(cmd, "smtps/"); ok {
			cmd = rest
		} else if rest, ok := strings.CutPrefix(cmd, "submission/"); ok {
			cmd = rest
		}
		return cmd, true
	case prog == "postfix" || prog == "postfix-script":
		return prog, true
	}
	return "", false
}

// TestCommandSame holds command to refCommand on every program built from
// a set of parts, under the default and other syslog names.
func TestCommandSame(t *testing.T) {
	heads := []string{"", "postfix", "postfix/", "postfix-in/", "postfi", "Postfix/", "pf/x/", "dovecot", "relayguard", "postfix-script"}
	mids := []string{"", "smtps/", "submission/", "smtps", "submission", "smtp/", "smtps/x/"}
	tails := []string{"", "smtpd", "qmgr", "/", "smtpd[", "x/y"}
	for _, name := range []string{"postfix", "postfix-in", "pf/x", "p"} {
		a := NewAnalyzer(Options{SyslogName: name})
		for _, h := range heads {
			for _, m := range mids {
				for _, tl := range tails {
					prog := h + m + tl
					gc, gok := a.command(prog)
					wc, wok := refCommand(a.prefix, prog)
					if gc != wc || gok != wok {
						t.Fatalf("syslog name %q: command(%q) = %q, %v; was %q, %v", name, prog, gc, gok, wc, wok)
					}
				}
			}
		}
	}
}

// TestCleanupCheckSame holds cleanupCheck to the three searches it
// replaced, on strings built from its markers' parts.
func TestCleanupCheckSame(t *testing.T) {
	parts := []string{":", " ", "header ", "body ", "END-OF-MESSAGE ", ": header", ": body", "x", "::", ": END-OF-MESSAGE", "4XyZ1: message-id=<a@b>"}
	var build func(s string, n int)
	build = func(s string, n int) {
		want := strings.Contains(s, ": header ") || strings.Contains(s, ": body ") || strings.Contains(s, ": END-OF-MESSAGE ")
		if got := cleanupCheck(s); got != want {
			t.Fatalf("cleanupCheck(%q) = %v, want %v", s, got, want)
		}
		if n == 0 {
			return
		}
		for _, p := range parts {
			build(s+p, n-1)
		}
	}
	build("", 4)
}
