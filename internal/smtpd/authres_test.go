package smtpd

import (
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/msgauth"
)

// With check_dmarc at the end of DATA, the spooled message starts with one
// Authentication-Results field of ours (SPF, DKIM, DMARC), the copies that
// arrived claiming our authserv-id are gone and other servers' fields
// stay; a p=reject failure is refused at the final dot with 550 5.7.1 and
// the session goes on; a p=quarantine failure is accepted and tagged.
func TestAuthenticationResultsInserted(t *testing.T) {
	key, err := msgauth.GenerateKey(msgauth.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := msgauth.Record(key.Public())
	dns := dnstest.Start(t)
	dns.Add(t,
		msgauth.ZoneLine("s1", "signed.example", rec),
		`signed.example. 300 IN TXT "v=spf1 -all"`,
		`_dmarc.signed.example. 300 IN TXT "v=DMARC1; p=reject"`,
		`quar.example. 300 IN TXT "v=spf1 -all"`,
		`_dmarc.quar.example. 300 IN TXT "v=DMARC1; p=quarantine"`,
	)
	signer, _ := msgauth.NewSigner([]msgauth.SigningKey{{Domain: "signed.example", Selector: "s1", Key: key}}, config.DefaultDKIMHeaders, []string{"From"})
	ts := startPolicyServer(t, func(c *config.Config) {
		c.DNSBL.Resolvers = []string{dns.Addr}
		c.Policy.EndOfDataRestrictions = []string{"permit_sasl_authenticated", "check_dmarc"}
	})
	body := "From: a@signed.example\r\nTo: alice@mail.test\r\nSubject: signed\r\n\r\nhello\r\n"
	sig, err := signer.Sign(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	signed := "Authentication-Results: Mail.Test; dmarc=pass header.from=signed.example\r\n" +
		"Authentication-Results: \"mail.test\" (forged-quoted); dkim=pass header.d=signed.example\r\n" +
		"Authentication-Results:\r\n\t(forged-comment)\r\n mail.test.; dmarc=pass header.from=signed.example\r\n" +
		"Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=x@signed.example\r\n" +
		string(sig) + body

	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO client.example
S: 250
C: MAIL FROM:<bounce@signed.example>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send(strings.ReplaceAll(signed, "\r\n.", "\r\n..") + ".\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	msg := ts.messageData(t, id)
	if !strings.HasPrefix(msg, "Authentication-Results: mail.test;\r\n\tspf=fail smtp.mailfrom=bounce@signed.example;\r\n\tdkim=pass ") ||
		!strings.Contains(msg, "header.d=signed.example header.s=s1;\r\n\tdmarc=pass header.from=signed.example policy.dmarc=reject\r\nReceived: from client.example") {
		t.Fatalf("spooled message does not start with our Authentication-Results:\n%s", msg)
	}
	if strings.Count(strings.ToLower(msg), "authentication-results: mail.test") != 1 || !strings.Contains(msg, "Authentication-Results: relay.other.example;") {
		t.Fatalf("forged field kept or foreign field lost:\n%s", msg)
	}
	if strings.Contains(msg, "forged-") {
		t.Fatalf("a forged field in another spelling of our authserv-id was kept:\n%s", msg)
	}
	// The signature still verifies on what was spooled (the field that was
	// removed was not signed).
	if !strings.Contains(msg, string(sig)+body) {
		t.Fatalf("message body changed:\n%s", msg)
	}

	// Unsigned, SPF fails, p=reject.
	c.dialogue(`
C: MAIL FROM:<ceo@signed.example>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send("From: ceo@signed.example\r\nSubject: pay this\r\n\r\nnow\r\n.\r\n")
	c.expect("550 5.7.1 Message rejected by the DMARC policy of signed.example (p=reject)")
	// The same with a From: that does not parse but reads as the domain.
	c.dialogue(`
C: MAIL FROM:<ceo@other.example>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send("From: CEO <ceo@signed.example>>\r\nSubject: pay this\r\n\r\nnow\r\n.\r\n")
	c.expect("550 5.7.1 Message rejected by the DMARC policy of signed.example (p=reject)")
	// Quarantine: accepted and tagged; the session is still usable.
	c.dialogue(`
C: MAIL FROM:<a@quar.example>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send("From: a@quar.example\r\nSubject: q\r\n\r\nq\r\n.\r\n")
	id = strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	msg = ts.messageData(t, id)
	if !strings.Contains(msg, "dmarc=fail header.from=quar.example policy.dmarc=quarantine\r\nX-Relayguard-Quarantine: dmarc=fail header.from=quar.example policy.dmarc=quarantine\r\nReceived: ") {
		t.Fatalf("quarantined message:\n%s", msg)
	}
	if n := len(ts.spooled(t)); n != 2 {
		t.Fatalf("%d messages spooled, want 2", n)
	}
}
