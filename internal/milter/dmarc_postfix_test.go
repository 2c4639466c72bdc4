package milter_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"net/netip"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/msgauth"
)

// With check_dmarc in end_of_data_restrictions, the milter judges
// Postfix's inbound mail as relayguard serve does: a message signed by its
// From: domain (1.5 MB, so its body hash is computed over the temporary
// file) gets our Authentication-Results field at the top of the header and
// loses the ones that arrived claiming our authserv-id (in several
// spellings), while another server's stays; an unsigned message from a
// p=reject domain is refused by Postfix with 550 5.7.1; a p=quarantine
// failure is tagged under our field; a client the list lets through
// before check_dmarc loses its forged field too.
func TestMilterCheckDMARC(t *testing.T) {
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
	dir := t.TempDir()
	checks := filepath.Join(dir, "header_checks")
	// Every message is held, so that the test reads what the milter made
	// of it with postcat.
	os.WriteFile(checks, []byte("/^Subject:/ HOLD\n"), 0o644)
	h := startMilterHost(t, `
[dnsbl]
resolvers = ["`+dns.Addr+`"]
[policy]
end_of_data_restrictions = ["permit_sasl_authenticated", "check_client_access trusted", "check_dmarc"]
[policy.dmarc]
authserv_id = "mx.example.test"
[[policy.access]]
name = "trusted"
entries = ["198.51.100.21/32 OK"]
`, "header_checks = regexp:"+checks+"\n")
	client, trusted := netip.MustParseAddr("198.51.100.20"), netip.MustParseAddr("198.51.100.21")
	h.n.AddClient(t, client)
	h.n.AddClient(t, trusted)
	ctx := context.Background()

	signer, _ := msgauth.NewSigner([]msgauth.SigningKey{{Domain: "signed.example", Selector: "s1", Key: key}}, config.DefaultDKIMHeaders, []string{"From"})
	hdr := "From: a@signed.example\r\nTo: bob@example.test\r\nSubject: signed\r\n"
	// 1.5 MB: many body chunks, and past what the milter holds in memory.
	body := "hello\r\n" + strings.Repeat("a line of a long body, longer than the milter holds in memory\r\n", 24000)
	sig, err := signer.Sign(strings.NewReader(hdr + "\r\n" + body))
	if err != nil {
		t.Fatal(err)
	}
	forged := "Authentication-Results: mx.example.test; dmarc=pass header.from=bank.example\r\n" +
		"Authentication-Results: \"MX.example.test\" (forged-quoted); dkim=pass\r\n" +
		"Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=x@signed.example\r\n" +
		"Authentication-Results:\r\n\t(forged-comment)\r\n mx.example.test.; dmarc=pass\r\n"
	if err := h.n.Submit(ctx, client, "192.0.2.1:25", hosttest.Message{From: "bounce@signed.example", To: []string{"bob@example.test"},
		Header: forged + string(sig) + hdr, Body: body}); err != nil {
		t.Fatalf("signed message: %v", err)
	}
	code := func(err error) (int, string) {
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			return se.Code, se.Message
		}
		return 0, err.Error()
	}
	err = h.n.Submit(ctx, client, "192.0.2.1:25", hosttest.Message{From: "ceo@signed.example", To: []string{"bob@example.test"},
		Header: "From: CEO <ceo@signed.example>\r\nTo: bob@example.test\r\nSubject: pay this\r\n", Body: "now\r\n"})
	if c, msg := code(err); c != 550 || !strings.Contains(msg, "rejected by the DMARC policy of signed.example (p=reject)") {
		t.Errorf("unsigned p=reject message: %d %q, want 550 5.7.1 from the DMARC check", c, msg)
	}
	if err := h.n.Submit(ctx, client, "192.0.2.1:25", hosttest.Message{From: "a@quar.example", To: []string{"bob@example.test"},
		Header: "From: a@quar.example\r\nTo: bob@example.test\r\nSubject: q\r\n", Body: "q\r\n"}); err != nil {
		t.Fatalf("p=quarantine message: %v", err)
	}

	// A client the list lets through before check_dmarc: not judged, but
	// what it forged in our name is deleted all the same.
	if err := h.n.Submit(ctx, trusted, "192.0.2.1:25", hosttest.Message{From: "ceo@signed.example", To: []string{"bob@example.test"},
		Header: "Authentication-Results: mx.example.test; dmarc=pass header.from=signed.example (forged-trusted)\r\n" +
			"From: ceo@signed.example\r\nTo: bob@example.test\r\nSubject: trusted\r\n", Body: "t\r\n"}); err != nil {
		t.Fatalf("message of a trusted client: %v", err)
	}

	var held []string
	hosttest.Eventually(t, "three messages on hold", func() bool {
		held = held[:0]
		for _, e := range h.pf.Queue(t) {
			if e.QueueName == "hold" {
				held = append(held, e.QueueID)
			}
		}
		return len(held) == 3
	})
	var signedMsg, quarMsg, trustedMsg string
	for _, id := range held {
		out, err := exec.Command(hosttest.PostfixBin+"/postcat", "-c", h.pf.Etc, "-hq", id).CombinedOutput()
		if err != nil {
			t.Fatalf("postcat %s: %v\n%s", id, err, out)
		}
		switch {
		case strings.Contains(string(out), "Subject: signed"):
			signedMsg = string(out)
		case strings.Contains(string(out), "Subject: trusted"):
			trustedMsg = string(out)
		default:
			quarMsg = string(out)
		}
	}
	ours := "Authentication-Results: mx.example.test;\n\tspf=fail smtp.mailfrom=bounce@signed.example;\n\tdkim=pass "
	if !strings.Contains(signedMsg, ours) || !strings.Contains(signedMsg, "dmarc=pass header.from=signed.example policy.dmarc=reject") {
		t.Fatalf("signed message without our Authentication-Results:\n%s", signedMsg)
	}
	if strings.Count(strings.ToLower(signedMsg), "authentication-results: mx.example.test") != 1 ||
		strings.Contains(signedMsg, "forged-") || strings.Contains(signedMsg, "bank.example") ||
		!strings.Contains(signedMsg, "Authentication-Results: relay.other.example;") {
		t.Fatalf("forged fields kept or another server's lost:\n%s", signedMsg)
	}
	if !strings.Contains(quarMsg, "policy.dmarc=quarantine\nX-Relayguard-Quarantine: dmarc=fail header.from=quar.example policy.dmarc=quarantine\n") {
		t.Fatalf("p=quarantine message not tagged:\n%s", quarMsg)
	}
	if strings.Contains(trustedMsg, "Authentication-Results") || !strings.Contains(trustedMsg, "Subject: trusted") {
		t.Fatalf("message of a trusted client: a forged field kept, or ours added:\n%s", trustedMsg)
	}
	h.milter.WaitOutput(t, `msg="milter decision".*action=reject rule=check_dmarc`)
}
