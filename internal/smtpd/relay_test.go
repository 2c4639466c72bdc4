package smtpd

import (
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

// relayCase is one sender/recipient form. want* are reply-code prefixes for
// the RCPT (or MAIL, when the MAIL is refused) per kind of client.
type relayCase struct {
	name     string
	from     string // MAIL FROM path; for the authenticated client "" means <alice@mail.test>
	authFrom string
	to       string
	utf8     bool
	outsider string
	trusted  string
	authed   string
}

// Local domain mail.test (and localhost), server 127.0.0.1, outside domain
// remote.example; users alice (alice@, sales@mail.test) and bob@mail.test.
var relayCases = []relayCase{
	// plain forms
	{name: "outside to outside", from: "<spammer@spam.example>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "null sender to outside", from: "<>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "outside to local user", from: "<friend@remote.example>", to: "<alice@mail.test>", outsider: "250", trusted: "250", authed: "250"},
	{name: "outside to unknown local", from: "<friend@remote.example>", to: "<nobody@mail.test>", outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: "bare postmaster", from: "<friend@remote.example>", to: "<postmaster>", outsider: "250", trusted: "250", authed: "250"},
	{name: "postmaster at domain", from: "<friend@remote.example>", to: "<PostMaster@mail.test>", outsider: "250", trusted: "250", authed: "250"},
	{name: "uppercase local domain", from: "<friend@remote.example>", to: "<alice@MAIL.TEST>", outsider: "250", trusted: "250", authed: "250"},
	{name: "trailing dot local domain", from: "<friend@remote.example>", to: "<alice@mail.test.>", outsider: "250", trusted: "250", authed: "250"},
	{name: "uppercase outside domain", from: "<x@spam.example>", to: "<VICTIM@REMOTE.EXAMPLE>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "trailing dot outside domain", from: "<x@spam.example>", to: "<victim@remote.example.>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "quoted local part of a local user", from: "<x@remote.example>", to: `<"alice"@mail.test>`, outsider: "250", trusted: "250", authed: "250"},
	{name: "bare account at localhost", from: "<x@remote.example>", to: "<alice@localhost>", outsider: "250", trusted: "250", authed: "250"},
	{name: "local domain as suffix", from: "<x@spam.example>", to: "<victim@mail.test.remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	// percent hack, bang paths, extra @
	{name: "percent hack at server name", from: "<x@spam.example>", to: "<victim%remote.example@mail.test>", outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: "percent hack at IP literal", from: "<x@spam.example>", to: "<victim%remote.example@[127.0.0.1]>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "double percent hack", from: "<x@spam.example>", to: "<victim%remote.example%other.example@mail.test>", outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: "bang path unqualified", from: "<x@spam.example>", to: "<remote.example!victim>", outsider: "501 5.1.3", trusted: "501 5.1.3", authed: "501 5.1.3"},
	{name: "bang path at server name", from: "<x@spam.example>", to: "<remote.example!victim@mail.test>", outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: "bang path at IP literal", from: "<x@spam.example>", to: "<remote.example!victim@[127.0.0.1]>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "user@remote@server", from: "<x@spam.example>", to: "<victim@remote.example@mail.test>", outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: "user@remote@[IP]", from: "<x@spam.example>", to: "<victim@remote.example@[127.0.0.1]>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "bang and percent mixed", from: "<x@spam.example>", to: "<remote.example!victim%other.example@mail.test>", outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	// quoted local parts
	{name: `quoted "T@D" unqualified`, from: "<x@spam.example>", to: `<"victim@remote.example">`, outsider: "501 5.1.3", trusted: "501 5.1.3", authed: "501 5.1.3"},
	{name: `quoted "T@D"@server`, from: "<x@spam.example>", to: `<"victim@remote.example"@mail.test>`, outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: `quoted "T@D"@[IP]`, from: "<x@spam.example>", to: `<"victim@remote.example"@[127.0.0.1]>`, outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: `quoted "T%D"@server`, from: "<x@spam.example>", to: `<"victim%remote.example"@mail.test>`, outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: `quoted "T%D" unqualified`, from: "<x@spam.example>", to: `<"victim%remote.example">`, outsider: "501 5.1.3", trusted: "501 5.1.3", authed: "501 5.1.3"},
	{name: "mixed quoting", from: "<x@spam.example>", to: `<"victim"%remote.example@mail.test>`, outsider: "550 5.1.1", trusted: "550 5.1.1", authed: "550 5.1.1"},
	{name: "quoted outside recipient", from: "<x@spam.example>", to: `<"victim"@remote.example>`, outsider: "554 5.7.1", trusted: "250", authed: "250"},
	// source routes
	{name: "source route via server to outside", from: "<x@spam.example>", to: "<@mail.test:victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "source route via [IP] to outside", from: "<x@spam.example>", to: "<@[127.0.0.1]:victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "two-hop source route", from: "<x@spam.example>", to: "<@mail.test,@relay.example:victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "source route to local user", from: "<x@spam.example>", to: "<@remote.example:alice@mail.test>", outsider: "250", trusted: "250", authed: "250"},
	// IP literals (allow_ip_literals is off)
	{name: "server IP literal", from: "<x@spam.example>", to: "<victim@[127.0.0.1]>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "foreign IPv4 literal", from: "<x@spam.example>", to: "<victim@[192.0.2.1]>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "IPv6 literal of server", from: "<x@spam.example>", to: "<victim@[IPv6:::1]>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "foreign IPv6 literal", from: "<x@spam.example>", to: "<victim@[IPv6:2001:db8::25]>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "IPv6 literal without tag", from: "<x@spam.example>", to: "<victim@[2001:db8::25]>", outsider: "501 5.1.3", trusted: "501 5.1.3", authed: "501 5.1.3"},
	// UTF-8
	{name: "UTF-8 outside domain", utf8: true, from: "<x@spam.example>", to: "<victim@bücher.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "punycode outside domain", from: "<x@spam.example>", to: "<victim@xn--bcher-kva.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "UTF-8 without SMTPUTF8", from: "<x@spam.example>", to: "<victim@bücher.example>", outsider: "553 5.6.7", trusted: "553 5.6.7", authed: "553 5.6.7"},
	// forged senders
	{name: "local sender forged by outsider to outside", from: "<alice@mail.test>", authFrom: "<alice@mail.test>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
	{name: "postmaster sender to outside", from: "<postmaster@mail.test>", authFrom: "<postmaster@mail.test>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "553 5.7.1"},
	{name: "sender at server IP literal", from: "<x@[127.0.0.1]>", authFrom: "<x@[127.0.0.1]>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "553 5.7.1"},
	{name: "localhost sender", from: "<x@localhost>", authFrom: "<x@localhost>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "553 5.7.1"},
	{name: "sender without domain", from: "<spammer>", authFrom: "<spammer>", to: "<victim@remote.example>", outsider: "501 5.1.7", trusted: "501 5.1.7", authed: "501 5.1.7"},
	{name: "someone else's address", from: "<bob@mail.test>", authFrom: "<bob@mail.test>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "553 5.7.1"},
	{name: "random subdomain sender", from: "<x@a1b2c3.remote.example>", to: "<victim@remote.example>", outsider: "554 5.7.1", trusted: "250", authed: "250"},
}

// TestRelayTable runs every form for an outsider, a trusted network and an
// authenticated user, each over a real SMTP dialogue, and checks that no
// outsider form is accepted for a destination that is not local.
func TestRelayTable(t *testing.T) {
	if len(relayCases) < 40 {
		t.Fatalf("only %d relay forms", len(relayCases))
	}
	// Each refused form is an error of the session; the table is tried in
	// one session, so the session's error limits are set out of its way.
	outsideTS := startServer(t, func(c *config.Config) {
		c.Limits.MaxBadCommands, c.Limits.SoftErrorLimit = 1000, 1000
	})
	trustedTS := startServer(t, func(c *config.Config) { c.MyNetworks = []string{"127.0.0.0/8"} })
	clients := []struct {
		kind string
		ts   *testServer
		open func(t *testing.T, ts *testServer) *client
		want func(rc relayCase) string
		from func(rc relayCase) string
	}{
		{"outsider", outsideTS, func(t *testing.T, ts *testServer) *client {
			c := ts.dial(t, "mx")
			c.dialogue("S: 220\nC: EHLO spam.example\nS: 250")
			return c
		}, func(rc relayCase) string { return rc.outsider }, func(rc relayCase) string { return rc.from }},
		{"trusted", trustedTS, func(t *testing.T, ts *testServer) *client {
			c := ts.dial(t, "mx")
			c.dialogue("S: 220\nC: EHLO webserver.internal\nS: 250")
			return c
		}, func(rc relayCase) string { return rc.trusted }, func(rc relayCase) string { return rc.from }},
		{"authenticated", outsideTS, func(t *testing.T, ts *testServer) *client {
			c := tlsSession(t, ts, "submissions")
			c.dialogue("C: AUTH PLAIN " + plainIR("alice", testPassword) + "\nS: 235")
			return c
		}, func(rc relayCase) string { return rc.authed }, func(rc relayCase) string {
			if rc.authFrom != "" {
				return rc.authFrom
			}
			return "<alice@mail.test>"
		}},
	}
	for _, cl := range clients {
		t.Run(cl.kind, func(t *testing.T) {
			c := cl.open(t, cl.ts)
			for _, rc := range relayCases {
				param := ""
				if rc.utf8 {
					param = " SMTPUTF8"
				}
				c.cmd("MAIL FROM:" + cl.from(rc) + param)
				mail := c.reply()
				got := mail[len(mail)-1]
				if strings.HasPrefix(got, "250") {
					c.cmd("RCPT TO:" + rc.to)
					r := c.reply()
					got = r[len(r)-1]
				}
				want := cl.want(rc)
				if !strings.HasPrefix(got, want) {
					t.Errorf("%s: MAIL FROM:%s RCPT TO:%s: got %q, want %s", rc.name, cl.from(rc), rc.to, got, want)
				}
				if cl.kind == "outsider" && strings.HasPrefix(got, "2") && !localTarget(rc.to) {
					t.Errorf("OPEN RELAY: outsider form %q accepted for %s", rc.name, rc.to)
				}
				if want == "554 5.7.1" && !strings.Contains(got, "Relay access denied") {
					t.Errorf("%s: reply %q lacks Postfix's wording", rc.name, got)
				}
				c.cmd("RSET")
				c.expect("250")
			}
		})
	}
}

func localTarget(to string) bool {
	for _, s := range []string{"@mail.test>", "@MAIL.TEST>", "@mail.test.>", "@localhost>", "<postmaster>"} {
		if strings.HasSuffix(to, s) && !strings.Contains(to, "remote.example@") && !strings.Contains(to, "!") && !strings.Contains(to, "%") {
			return true
		}
	}
	return false
}

func TestIPLiteralsWhenAllowed(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.AllowIPLiterals = true })
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: MAIL FROM:<x@remote.example>
S: 250
C: RCPT TO:<alice@[127.0.0.1]>
S: 250 2.1.5
C: RCPT TO:<alice@[IPv6:::1]>
S: 250 2.1.5
C: RCPT TO:<nobody@[127.0.0.1]>
S: 550 5.1.1
C: RCPT TO:<victim%remote.example@[127.0.0.1]>
S: 550 5.1.1
C: RCPT TO:<alice@[192.0.2.1]>
S: 554 5.7.1`)
}
