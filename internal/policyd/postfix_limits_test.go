package policyd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/redistest"
)

// Two Postfix instances, each with its own `relayguard policy`, share one
// Redis: a user limited to 3 messages per hour sends two messages through
// the first and one through the second, and the fourth is deferred by
// either, naming the limit; another user's mail still flows. Postfix and
// its Dovecot SASL run in a network namespace, the users in another.
func TestPostfixSendLimitSharedByTwoInstances(t *testing.T) {
	hosttest.NeedPostfix(t)
	rd := redistest.Start(t)
	n := hosttest.NewNet(t)
	user := netip.MustParseAddr("198.51.100.10")
	n.AddClient(t, user)
	dc := hosttest.StartDovecot(t, hosttest.DovecotConfig{Netns: n.Server, Users: map[string]string{"bob": "bob-pw", "carol": "carol-pw"}})

	var smtpAddrs []string
	var logs []string
	for i, port := range []int{25, 26} {
		dir := hosttest.TempDir(t, "rg-policy-")
		sock := filepath.Join(dir, "policy.sock")
		conf := filepath.Join(dir, "relayguard.toml")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
local_domains = ["example.test"]
[store]
url = %q
[policy]
listen = "unix:%s"
[delivery.rate_limits]
user_messages_per_hour = 3
`, rd.URL(), sock)), 0o644); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(dir, "data")
		if err := os.MkdirAll(data, 0o750); err != nil {
			t.Fatal(err)
		}
		hosttest.Start(t, "", "policy service listening", "--config", conf, "--data-dir", data, "policy")
		pf := hosttest.StartPostfix(t, hosttest.PostfixConfig{
			Netns: n.Server, Listen: fmt.Sprintf("192.0.2.1:%d", port), Hostname: fmt.Sprintf("mx%d.example.test", i+1),
			Main: dc.PostfixSASL() + fmt.Sprintf(`smtpd_recipient_restrictions = check_policy_service unix:%s, permit_sasl_authenticated, reject_unauth_destination
smtpd_policy_service_default_action = 451 4.3.5 policy service unavailable
`, sock),
		})
		smtpAddrs = append(smtpAddrs, fmt.Sprintf("192.0.2.1:%d", port))
		logs = append(logs, pf.Log)
	}
	ctx := context.Background()
	send := func(via int, who string) error {
		return n.Submit(ctx, user, smtpAddrs[via], hosttest.Message{User: who, Password: who + "-pw", From: who + "@example.test",
			To: []string{"friend@remote.test", "other@remote.test"}})
	}
	for i, via := range []int{0, 0, 1} {
		if err := send(via, "bob"); err != nil {
			t.Fatalf("bob's message %d through instance %d: %v", i+1, via+1, err)
		}
	}
	for via := range 2 {
		err := send(via, "bob")
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) || se.Code != 450 || !strings.Contains(se.Message, "user_messages_per_hour = 3 per hour") {
			t.Fatalf("bob's 4th message through instance %d: %v; want 450 4.7.1 naming user_messages_per_hour", via+1, err)
		}
		if se.EnhancedCode != (gosmtp.EnhancedCode{4, 7, 1}) {
			t.Errorf("enhanced code %v, want 4.7.1", se.EnhancedCode)
		}
	}
	if err := send(1, "carol"); err != nil {
		t.Fatalf("carol's message: %v", err)
	}
	hosttest.WaitFile(t, logs[0], `NOQUEUE: reject: RCPT from .*450 4.7.1 .*user bob exceeded its limit \(user_messages_per_hour = 3 per hour\)`)
	hosttest.WaitFile(t, logs[1], `sasl_username=carol`)
}
