package smtpd

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
)

// TestRefusalsAreSessionErrors: every command a rule or a limit refuses is
// an error of the session, as Postfix's smtpd counts every rejected command
// toward smtpd_hard_error_limit. Found by review: one session could try
// 10,000 relay targets (554) at 25,000/s, or go on sending RCPT after the
// unknown-recipient rate bit (450) for ever, each reply a log line, never
// slowed down nor cut off.
func TestRefusalsAreSessionErrors(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Limits.SoftErrorLimit = 3
		c.Limits.ErrorDelay = config.Duration(20 * time.Millisecond)
		c.Limits.MaxBadCommands = 6
		c.Limits.UnknownRcptLimit = 2
	})

	// Relay attempts: refused, then slowed down, then the session ends.
	c := ts.dialFrom(t, "mx", "127.0.0.4")
	c.dialogue(`
S: 220
C: EHLO relay.example
S: 250
C: MAIL FROM:<x@example.net>
S: 250`)
	for i := 1; i <= 6; i++ {
		c.cmd(fmt.Sprintf("RCPT TO:<victim%d@remote.example>", i))
		c.expect(fmt.Sprintf("554 5.7.1 <victim%d@remote.example>: Relay access denied", i))
	}
	c.expect("421 4.7.0 mail.test Error: too many errors")
	c.expectClosed()

	// Past the unknown-recipient rate every RCPT gets 450; those count too.
	c = ts.dialFrom(t, "mx", "127.0.0.5")
	c.dialogue(`
S: 220
C: EHLO enum.example
S: 250
C: MAIL FROM:<x@example.net>
S: 250
C: RCPT TO:<guess1@mail.test>
S: 550 5.1.1
C: RCPT TO:<guess2@mail.test>
S: 550 5.1.1`)
	for i := 3; i <= 6; i++ {
		c.cmd(fmt.Sprintf("RCPT TO:<guess%d@mail.test>", i))
		c.expect("450 4.7.1 Error: too many unknown recipients from 127.0.0.5")
	}
	c.expect("421 4.7.0 mail.test Error: too many errors")
	c.expectClosed()

	// A session with a few refusals among good commands is not cut off.
	c = ts.dialFrom(t, "mx", "127.0.0.6")
	c.dialogue(`
S: 220
C: EHLO ok.example
S: 250
C: MAIL FROM:<x@example.net>
S: 250
C: RCPT TO:<someone@remote.example>
S: 554 5.7.1
C: RCPT TO:<alice@mail.test>
S: 250 2.1.5
C: QUIT
S: 221`)

	var tooMany int
	for _, l := range ts.logs.Lines() {
		if strings.Contains(l, "limit=limits.max_bad_commands ") {
			tooMany++
		}
	}
	if tooMany != 2 {
		t.Errorf("%d 'limit reached' lines for limits.max_bad_commands, want 2", tooMany)
	}
}
