package smtpd

import (
	"slices"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

// Reload changes the rules for sessions that start afterwards; a session
// in progress keeps the settings it started with and is not dropped.
func TestReloadAppliesToNewSessions(t *testing.T) {
	ts := startServer(t, nil)
	old := ts.dial(t, "mx")
	old.expect("220 " + testHost + " ")
	old.cmd("EHLO client.test")
	old.expect("250 ")

	next := config.Default()
	next.Hostname = "new.test"
	next.LocalDomains = []string{"new.test"}
	next.Limits.MaxRecipients = 100
	next.Listeners = slices.Clone(ts.cfg.Listeners)
	for i := range next.Listeners {
		if next.Listeners[i].Name == "submission" {
			next.Listeners[i].Deny = []string{"127.0.0.0/8"}
		}
	}
	if err := next.Finish(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// Listener networks that config.Finish did not parse are refused and
	// the settings in force stay.
	raw := slices.Clone(next.Listeners)
	raw[0].AllowNets = nil
	raw[0].Allow = []string{"192.0.2.0/24"}
	if err := ts.srv.Reload(next.SMTP(), raw); err == nil {
		t.Fatal("reload with unparsed listener networks accepted")
	}
	if err := ts.srv.Reload(next.SMTP(), next.Listeners); err != nil {
		t.Fatal(err)
	}

	// New sessions: new name, new local domain, mail.test no longer local.
	c := ts.dial(t, "mx")
	c.dialogue(`
		S: 220 new.test ESMTP
		C: EHLO client.test
		S: 250
		C: MAIL FROM:<someone@outside.test>
		S: 250
		C: RCPT TO:<alice@mail.test>
		S: 554 5.7.1
		C: RCPT TO:<nobody@new.test>
		S: 550 5.1.1
	`)
	// The listener's new deny list applies before the banner.
	ts.dial(t, "submission").expect("554 5.7.1")

	// The session that was open survives, on the settings it started with.
	old.dialogue(`
		C: MAIL FROM:<someone@outside.test>
		S: 250
		C: RCPT TO:<alice@mail.test>
		S: 250
		C: QUIT
		S: 221
	`)
}
