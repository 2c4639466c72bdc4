package smtpd

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/policy"
)

// startPolicyServer is startServer with the real policy engine of
// internal/policy built from the same configuration.
func startPolicyServer(t *testing.T, mutate func(*config.Config)) *testServer {
	t.Helper()
	ts := newTestServer(t, mutate)
	eng, err := policy.New(ts.cfg.Site, ts.cfg.Policy, ts.cfg.DNSBL, policy.Deps{Events: ts.events, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.deps.Policy = eng
	ts.start()
	return ts
}

func TestPolicyEngineVerdicts(t *testing.T) {
	ts := startPolicyServer(t, func(c *config.Config) {
		c.Policy.Access = []config.AccessTable{{Name: "clients", Entries: []string{"127.0.0.1/32 REJECT no mail from this test network"}}}
		c.Policy.RecipientRestrictions = []string{"permit_sasl_authenticated", "check_client_access clients"}
		c.Policy.SenderRestrictions = []string{"reject_non_fqdn_sender"}
	})
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO client.example
S: 250
C: MAIL FROM:<nodomain@localhost>
S: 504 5.5.2 <nodomain@localhost>: Sender address rejected: need fully-qualified address (rule reject_non_fqdn_sender)
C: MAIL FROM:<someone@remote.example>
S: 250
C: RCPT TO:<alice@mail.test>`)
	got := c.expect("5")
	if !strings.Contains(got, "no mail from this test network") {
		t.Errorf("RCPT reply %q lacks the access table's text", got)
	}
	// An authenticated session is permitted before the access check.
	a := tlsSession(t, ts, "submissions")
	a.dialogue(`
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 235
C: MAIL FROM:<alice@mail.test>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250`)
}

func TestPolicyWarnOnlyPrependsHeader(t *testing.T) {
	ts := startPolicyServer(t, func(c *config.Config) {
		c.Policy.Access = []config.AccessTable{{Name: "clients", Entries: []string{"127.0.0.1/32 REJECT listed for testing"}}}
		c.Policy.RecipientRestrictions = []string{"warn_if_reject check_client_access clients"}
	})
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO client.example
S: 250
C: MAIL FROM:<someone@remote.example>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send("Subject: warned\r\n\r\nbody\r\n.\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	msg := ts.messageData(t, id)
	if !strings.Contains(msg, "\r\nX-Relayguard-Warn: check_client_access would reject: 554 listed for testing\r\nSubject: warned\r\n") {
		t.Errorf("warn-only verdict's header not prepended:\n%s", msg)
	}
}
