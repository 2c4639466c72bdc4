package policyd

import (
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// dnsPolicyConf is a `relayguard policy` configuration whose lists are
// asked through the resolver at dnsAddr.
func dnsPolicyConf(dnsAddr string, restrictions string) string {
	return fmt.Sprintf(`
local_domains = ["example.test"]

[policy]
listen = "127.0.0.1:0"
recipient_restrictions = %s

[dnsbl]
zones = ["bl.rgtest*1"]
resolvers = [%q]
timeout = "2s"
`, restrictions, dnsAddr)
}

// rcptCode sends a message from src and returns the RCPT reply's code
// and text (250 when the message was accepted).
func rcptCode(t *testing.T, src, addr, from, to string) (int, string) {
	t.Helper()
	err := sendFrom(t, src, addr, from, to)
	var te *textproto.Error
	switch {
	case err == nil:
		return 250, ""
	case errors.As(err, &te):
		return te.Code, te.Msg
	}
	t.Fatalf("from %s: %v", src, err)
	return 0, ""
}

// TestPostfixDNSOutageDefers runs real Postfix → `relayguard policy` →
// unbound → NSD. The policy server is started while the resolver is down:
// a listed client is deferred (451), not delivered — before, it passed
// once the first health check had marked every list dead. With the
// resolver back, listed clients are refused and clean ones delivered; when
// it goes down again, a client whose listing is cached is still refused,
// and an uncached one (listed or not) is deferred (issue 13 item 1).
func TestPostfixDNSOutageDefers(t *testing.T) {
	needPostfix(t)
	dnstest.NeedReal(t)
	t.Parallel()
	dir, err := os.MkdirTemp("", "rg-postfix-dns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	nsd := dnstest.StartNSD(t, map[string][]string{"rgtest": {
		"2.0.0.127.bl IN A 127.0.0.2", "6.0.0.127.bl IN A 127.0.0.2", "7.0.0.127.bl IN A 127.0.0.2"}})
	ub := dnstest.StartUnbound(t, dnstest.Stub{Zone: "rgtest", Addrs: []string{nsd.Addr}})
	ub.Stop()

	bin := buildRelayguard(t, dir)
	policyAddr := startPolicyConf(t, bin, dir, dnsPolicyConf(ub.Addr, `["reject_unauth_destination", "dnsbl_score"]`))
	port := freePort(t)
	logFile := startPostfix(t, dir, port, policyAddr)
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", port)
	const from, to = "someone@sender.test", "user@example.test"

	// Started during the outage, now and a few seconds on: deferred.
	// relayguard answers DEFER_IF_PERMIT 4.4.3; Postfix replies with its
	// defer_code, 450.
	for i := range 2 {
		if code, msg := rcptCode(t, "127.0.0.6", smtpAddr, from, to); code/100 != 4 {
			t.Fatalf("listed client, policy server started during a DNS outage (try %d): %d %s, want 4xx", i, code, msg)
		}
		time.Sleep(3 * time.Second)
	}

	ub.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, msg := rcptCode(t, "127.0.0.6", smtpAddr, from, to)
		if code == 554 {
			break
		}
		if code/100 != 4 || time.Now().After(deadline) {
			t.Fatalf("listed client after the resolver returned: %d %s, want 554", code, msg)
		}
		time.Sleep(time.Second)
	}
	if code, msg := rcptCode(t, "127.0.0.9", smtpAddr, from, to); code != 250 {
		t.Fatalf("clean client: %d %s", code, msg)
	}

	ub.Stop()
	if code, msg := rcptCode(t, "127.0.0.6", smtpAddr, from, to); code != 554 {
		t.Errorf("listed client with a cached listing, during the outage: %d %s, want 554", code, msg)
	}
	if code, msg := rcptCode(t, "127.0.0.7", smtpAddr, from, to); code/100 != 4 {
		t.Errorf("listed client not cached, during the outage: %d %s, want 4xx", code, msg)
	}
	if code, msg := rcptCode(t, "127.0.0.10", smtpAddr, from, to); code/100 != 4 {
		t.Errorf("unknown client, during the outage: %d %s, want 4xx (cannot be checked)", code, msg)
	}

	log := waitLog(t, logFile,
		`NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.7\]: 450 4\.4\.3 .*temporary failure looking up DNS lists bl\.rgtest`,
		`NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.6\]: 554 5\.7\.1 `,
		`client=unknown\[127\.0\.0\.9\]`)
	for _, ip := range []string{"6", "7", "10"} {
		if regexp.MustCompile(`client=unknown\[127\.0\.0\.` + ip + `\]`).MatchString(log) {
			t.Errorf("127.0.0.%s got a queue ID: its mail was accepted\n%s", ip, log)
		}
	}
}

// TestPostfixUnknownSenderDomainCode shows what Postfix makes of
// reject_unknown_sender_domain's 550 5.1.8 (issue 13 item 9). Asked from
// smtpd_recipient_restrictions, Postfix rewrites the address status to the
// recipient's, 5.1.2 (smtpd_dsn_fix, RFC 3463 X.1.8 → X.1.2: the reply is
// about the recipient address) and prefixes its own "<rcpt>: Recipient
// address rejected:"; asked from smtpd_sender_restrictions it keeps 5.1.8.
// docs/policy.md says so.
func TestPostfixUnknownSenderDomainCode(t *testing.T) {
	needPostfix(t)
	dnstest.NeedReal(t)
	t.Parallel()
	nsd := dnstest.StartNSD(t, map[string][]string{"rgtest": {"2.0.0.127.bl IN A 127.0.0.2", "mx IN MX 10 mail.mx", "mail.mx IN A 192.0.2.25"}})
	ub := dnstest.StartUnbound(t, dnstest.Stub{Zone: "rgtest", Addrs: []string{nsd.Addr}})
	for _, tc := range []struct {
		name, main, code, text, log string
	}{
		{"recipient restrictions", "", "5.1.2", `<user@example\.test>: Recipient address rejected: <s@nosuch\.rgtest>: Sender address rejected: Domain not found`,
			`mapping DSN status 5\.1\.8 into Recipient address status 5\.1\.2`},
		{"sender restrictions", "smtpd_recipient_restrictions = reject_unauth_destination\nsmtpd_sender_restrictions = check_policy_service inet:%s",
			"5.1.8", `<s@nosuch\.rgtest>: Sender address rejected: <s@nosuch\.rgtest>: Sender address rejected: Domain not found`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, err := os.MkdirTemp("", "rg-postfix-dsn-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			bin := buildRelayguard(t, dir)
			policyAddr := startPolicyConf(t, bin, dir, dnsPolicyConf(ub.Addr, `["reject_unauth_destination", "reject_unknown_sender_domain"]`))
			port := freePort(t)
			extra := ""
			if tc.main != "" {
				extra = fmt.Sprintf(tc.main, policyAddr)
			}
			logFile := startPostfix(t, dir, port, policyAddr, extra)
			smtpAddr := fmt.Sprintf("127.0.0.1:%d", port)
			code, msg := rcptCode(t, "127.0.0.9", smtpAddr, "s@nosuch.rgtest", "user@example.test")
			t.Logf("Postfix answered: %d %s", code, msg)
			if code != 550 || !regexp.MustCompile(`^`+regexp.QuoteMeta(tc.code)+` `+tc.text).MatchString(msg) {
				t.Errorf("unknown sender domain: %d %s, want 550 %s %s", code, msg, tc.code, tc.text)
			}
			if code, msg := rcptCode(t, "127.0.0.9", smtpAddr, "s@mx.rgtest", "user@example.test"); code != 250 {
				t.Errorf("known sender domain: %d %s", code, msg)
			}
			pats := []string{`NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.9\]: 550 ` + regexp.QuoteMeta(tc.code)}
			if tc.log != "" {
				pats = append(pats, tc.log)
			}
			waitLog(t, logFile, pats...)
		})
	}
}
