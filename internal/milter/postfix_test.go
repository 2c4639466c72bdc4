package milter_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/hosttest"
)

// milterHost is a Postfix instance (in its own network namespace) with
// relayguard milter on a unix socket as both smtpd_milters and
// non_smtpd_milters.
type milterHost struct {
	n      *hosttest.Net
	pf     *hosttest.Postfix
	milter *hosttest.Proc
	dir    string // the milter's config file and its data directory ("data")
}

func startMilterHost(t *testing.T, relayguardConf, postfixMain string) *milterHost {
	t.Helper()
	hosttest.NeedPostfix(t)
	n := hosttest.NewNet(t)
	dir := hosttest.TempDir(t, "rg-milter-")
	sock := filepath.Join(dir, "milter.sock")
	pf := hosttest.StartPostfix(t, hosttest.PostfixConfig{Netns: n.Server, Listen: "192.0.2.1:25", Main: fmt.Sprintf(`smtpd_milters = unix:%[1]s
non_smtpd_milters = unix:%[1]s
milter_default_action = tempfail
milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer} {client_addr}
`, sock) + postfixMain})
	conf := filepath.Join(dir, "relayguard.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
local_domains = ["example.test"]
[milter]
listen = "unix:%s"
queue_directories = [%q]
`, sock, pf.QueueDir)+relayguardConf), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	p := hosttest.Start(t, "", "milter listening", "--config", conf, "--data-dir", data, "milter")
	return &milterHost{n: n, pf: pf, milter: p, dir: dir}
}

func countQueue(t *testing.T, pf *hosttest.Postfix) (hold, other int) {
	for _, e := range pf.Queue(t) {
		if e.QueueName == "hold" {
			hold++
		} else {
			other++
		}
	}
	return hold, other
}

// A hacked web script running as an unprivileged user calls sendmail 500
// times: the first 100 (local_messages_per_hour) are delivered, the other
// 400 wait in Postfix's hold queue, none is discarded, and relayguard's log
// names the user and uid of each; another local user's mail still flows.
func TestSendmailFloodHeldPerUID(t *testing.T) {
	h := startMilterHost(t, `
[delivery.rate_limits]
local_messages_per_hour = 100
`, "")
	web, webGID, err := hosttest.LookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	other, otherGID, err := hosttest.LookupUser("daemon")
	if err != nil {
		t.Fatal(err)
	}
	script := `i=0; while [ $i -lt 500 ]; do printf 'Subject: offer %s\n\nbuy now\n' $i | /usr/sbin/sendmail -i -f web@example.test "victim$i@remote.test" || exit 1; i=$((i+1)); done`
	if out, err := h.pf.AsUser(web, webGID, script); err != nil {
		t.Fatalf("sendmail loop as nobody: %v\n%s", err, out)
	}
	hosttest.Eventually(t, "400 messages on hold and nothing else queued", func() bool {
		hold, rest := countQueue(t, h.pf)
		return hold == 400 && rest == 0
	})
	for i := range 5 {
		msg := fmt.Sprintf("Subject: report %d\n\ncron output\n", i)
		if out, err := h.pf.Sendmail(other, otherGID, "daemon@example.test", []string{"admin@remote.test"}, []byte(msg)); err != nil {
			t.Fatalf("sendmail as daemon: %v\n%s", err, out)
		}
	}
	log := hosttest.WaitFile(t, h.pf.Log, `(?s)(to=<admin@remote.test>.*status=sent.*){5}`)
	if n := len(regexp.MustCompile(`to=<victim\d+@remote.test>.*status=sent`).FindAllString(log, -1)); n != 100 {
		t.Errorf("%d of the flood's messages delivered, want 100", n)
	}
	if hold, rest := countQueue(t, h.pf); hold != 400 || rest != 0 {
		t.Errorf("after the other user's mail: %d held, %d other queued; want 400 and 0", hold, rest)
	}
	out := h.milter.WaitOutput(t, `msg="milter decision".*user=daemon uid=1 .*action=accept`)
	held := regexp.MustCompile(`msg="milter decision" id=\S+ user=nobody uid=`+fmt.Sprint(web)+` .*action=quarantine rule=delivery.rate_limits.local_messages_per_hour`).FindAllString(out, -1)
	if len(held) != 400 {
		t.Errorf("%d quarantine decisions naming nobody and its uid, want 400", len(held))
	}
	if strings.Contains(out, "user=daemon uid=1 client=invalid IP from=daemon@example.test nrcpt=1 action=quarantine") {
		t.Error("the other user's mail was quarantined")
	}
}

// As smtpd_milters, for a login authenticated through Dovecot: the header
// From: and the envelope sender must be the login's addresses, the null
// sender has its own cap, the message limit bites with its name, and
// unauthenticated mail to the MX is not the milter's business.
func TestSubmissionBoundAndLimited(t *testing.T) {
	hosttest.NeedPostfix(t)
	dc := hosttest.StartDovecot(t, hosttest.DovecotConfig{Users: map[string]string{"bob": "bob-pw"}})
	h := startMilterHost(t, `
[delivery.rate_limits]
user_messages_per_hour = 3
user_null_sender_messages_per_hour = 1
`, dc.PostfixSASL())
	client := netip.MustParseAddr("198.51.100.20")
	h.n.AddClient(t, client)
	ctx := context.Background()
	send := func(from, headerFrom string) error {
		m := hosttest.Message{User: "bob", Password: "bob-pw", From: from, To: []string{"friend@remote.test"}}
		if headerFrom != "" {
			m.Header = "From: " + headerFrom + "\r\nTo: friend@remote.test\r\nSubject: hi\r\n"
		}
		return h.n.Submit(ctx, client, "192.0.2.1:25", m)
	}
	code := func(err error) (int, string) {
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			return se.Code, se.Message
		}
		return 0, fmt.Sprint(err)
	}
	if err := send("bob@example.test", "Bob <bob@example.test>"); err != nil {
		t.Fatalf("bob's own message: %v", err)
	}
	if c, msg := code(send("bob@example.test", "CEO <ceo@bank.test>")); c != 550 || !strings.Contains(msg, "From: <ceo@bank.test> is not an address of user bob") {
		t.Errorf("forged header From: %d %q, want 550 naming the address and the login", c, msg)
	}
	if c, msg := code(send("alice@example.test", "bob@example.test")); c != 553 || !strings.Contains(msg, "not owned by user bob") {
		t.Errorf("forged envelope sender: %d %q, want 553", c, msg)
	}
	if err := send("", "bob@example.test"); err != nil {
		t.Fatalf("first null-sender message: %v", err)
	}
	if c, msg := code(send("", "bob@example.test")); c != 451 || !strings.Contains(msg, "user_null_sender_messages_per_hour = 1 per hour") {
		t.Errorf("second null-sender message: %d %q, want 451 naming user_null_sender_messages_per_hour", c, msg)
	}
	if c, msg := code(send("bob@example.test", "bob@example.test")); c != 451 || !strings.Contains(msg, "user_messages_per_hour = 3 per hour") {
		t.Errorf("4th message: %d %q, want 451 naming user_messages_per_hour", c, msg)
	}
	// Inbound mail from a stranger to a local address: accepted untouched.
	if err := h.n.Submit(ctx, client, "192.0.2.1:25", hosttest.Message{From: "x@remote.test", To: []string{"bob@example.test"},
		Header: "From: CEO <ceo@bank.test>\r\nSubject: hi\r\n"}); err != nil {
		t.Errorf("unauthenticated inbound mail: %v", err)
	}
	out := h.milter.WaitOutput(t, `msg="milter decision" id=\S+ user=bob uid=-1 client=198.51.100.20 from=bob@example.test nrcpt=1 action=accept`,
		`msg="milter decision" id="" user=bob uid=-1 client=198.51.100.20 .*action=reject rule=header_from_binding`)
	if strings.Contains(out, "x@remote.test") {
		t.Errorf("the milter logged a decision about unauthenticated mail:\n%s", out)
	}
}

// With smtp_send_limits = false (the policy service counts the
// submissions' limits) the milter asks Postfix for no reply to the
// connection and to each recipient (SMFIP_NR_CONN, SMFIP_NR_RCPT): Postfix
// goes on without waiting, the recipients are still counted, and a local
// program's recipients per day still bite.
func TestLimitsElsewhereNoRcptReplies(t *testing.T) {
	hosttest.NeedPostfix(t)
	dc := hosttest.StartDovecot(t, hosttest.DovecotConfig{Users: map[string]string{"bob": "bob-pw"}})
	h := startMilterHost(t, `smtp_send_limits = false
[delivery.rate_limits]
user_messages_per_hour = 1
local_recipients_per_day = 3
`, dc.PostfixSASL())
	client := netip.MustParseAddr("198.51.100.21")
	h.n.AddClient(t, client)
	ctx := context.Background()
	for i := range 2 {
		m := hosttest.Message{User: "bob", Password: "bob-pw", From: "bob@example.test", To: []string{"a@remote.test", "b@remote.test"},
			Header: fmt.Sprintf("From: bob@example.test\r\nSubject: %d\r\n", i)}
		if err := h.n.Submit(ctx, client, "192.0.2.1:25", m); err != nil {
			t.Fatalf("submission %d (user_messages_per_hour = 1 is not the milter's to count here): %v", i, err)
		}
	}
	web, webGID, err := hosttest.LookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		msg := fmt.Sprintf("Subject: cron %d\n\nout\n", i)
		if out, err := h.pf.Sendmail(web, webGID, "web@example.test", []string{"x@remote.test", "y@remote.test"}, []byte(msg)); err != nil {
			t.Fatalf("sendmail %d as nobody: %v\n%s", i, err, out)
		}
	}
	hosttest.Eventually(t, "the second local message (recipients 3 and 4 of 3) on hold", func() bool {
		hold, _ := countQueue(t, h.pf)
		return hold == 1
	})
	h.milter.WaitOutput(t,
		`(?s)(msg="milter decision" id=\S+ user=bob uid=-1 client=198.51.100.21 from=bob@example.test nrcpt=2 action=accept.*){2}`,
		`msg="milter decision" id=\S+ user=nobody uid=\d+ .*nrcpt=2 action=accept`,
		`msg="milter decision" id=\S+ user=nobody uid=\d+ .*nrcpt=2 action=quarantine rule=delivery.rate_limits.local_recipients_per_day`)
}
