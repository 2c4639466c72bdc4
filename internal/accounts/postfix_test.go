package accounts_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// postfixHost is a Postfix instance in a network namespace with Dovecot
// SASL and relayguard milter, whose remote mail stays queued (the relay
// host refuses connections) so that it can be held.
type postfixHost struct {
	n      *hosttest.Net
	pf     *hosttest.Postfix
	milter *hosttest.Proc
	conf   string
	data   string
	sink   *delivertest.Sink
}

func startPostfixHost(t *testing.T, users map[string]string, extra string) *postfixHost {
	t.Helper()
	hosttest.NeedPostfix(t)
	n := hosttest.NewNet(t)
	dc := hosttest.StartDovecot(t, hosttest.DovecotConfig{Users: users})
	sink := delivertest.StartSink(t)
	dir := hosttest.TempDir(t, "rg-accounts-")
	sock := filepath.Join(dir, "milter.sock")
	pf := hosttest.StartPostfix(t, hosttest.PostfixConfig{Netns: n.Server, Listen: "192.0.2.1:25", Main: dc.PostfixSASL() + fmt.Sprintf(`
smtpd_milters = unix:%[1]s
non_smtpd_milters = unix:%[1]s
milter_default_action = tempfail
milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer} {client_addr}
default_transport = smtp
relayhost = [127.0.0.1]:9
`, sock)})
	conf := filepath.Join(dir, "relayguard.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
hostname = "mx.example.test"
local_domains = ["example.test"]
[milter]
listen = "unix:%s"
queue_directories = [%q]
[accounts]
alert_mail_to = "postmaster@admin.test"
alert_smtp = %q
postfix_config_directories = [%q]
`, sock, pf.QueueDir, sink.Addr, pf.Etc)+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	p := hosttest.Start(t, "", "milter listening", "--config", conf, "--data-dir", data, "milter")
	return &postfixHost{n: n, pf: pf, milter: p, conf: conf, data: data, sink: sink}
}

func (h *postfixHost) relayguard(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(hosttest.Relayguard(t), append([]string{"--config", h.conf, "--data-dir", h.data}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("relayguard %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// queued counts the queue's messages from sender by queue name.
func (h *postfixHost) queued(t *testing.T, sender string) map[string]int {
	out := map[string]int{}
	for _, e := range h.pf.Queue(t) {
		if e.Sender == sender {
			out[e.QueueName]++
		}
	}
	return out
}

// A stolen password used from 12 networks (distinct /16s) in a row: after
// the 9th network (more than 8 within the hour) the account is suspended:
// that message and every later one get 451 from the milter, the 8 messages
// already queued are moved to Postfix's hold queue, and an alert mail
// naming the account, the signal and the networks reaches the admin's
// sink. Another user's queued mail is not held. `relayguard user
// unsuspend` releases the held mail and the account sends again.
func TestLoginSpreadSuspendsHoldsAlerts(t *testing.T) {
	h := startPostfixHost(t, map[string]string{"bob": "bob-pw", "carol": "carol-pw"}, "")
	ctx := context.Background()
	var srcs []netip.Addr
	for i := 1; i <= 12; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i), 0, 2})
		h.n.AddClient(t, a)
		srcs = append(srcs, a)
	}
	send := func(src netip.Addr, user string) error {
		return h.n.Submit(ctx, src, "192.0.2.1:25", hosttest.Message{User: user, Password: user + "-pw",
			From: user + "@example.test", To: []string{"victim@remote.test"}})
	}
	if err := send(srcs[0], "carol"); err != nil {
		t.Fatalf("carol: %v", err)
	}
	for i, src := range srcs {
		err := send(src, "bob")
		var se *gosmtp.SMTPError
		switch {
		case i < 8 && err != nil:
			t.Fatalf("bob's message from network %d (%s): %v", i+1, src, err)
		case i >= 8 && (!errors.As(err, &se) || se.Code != 451 || !strings.Contains(se.Message, "account bob is suspended")):
			t.Fatalf("bob's message from network %d (%s): %v; want 451 account suspended", i+1, src, err)
		}
	}
	hosttest.Eventually(t, "bob's 8 queued messages on hold", func() bool {
		q := h.queued(t, "bob@example.test")
		return q["hold"] == 8 && len(q) == 1
	})
	if q := h.queued(t, "carol@example.test"); q["hold"] != 0 || len(q) != 1 {
		t.Errorf("carol's mail: %v, want queued, not held", q)
	}
	h.milter.WaitOutput(t, `msg="account compromise signal" user=bob rule=login_spread reason="logged in from 9 networks within 1h0m0s \(more than 8\): 10.1.0.0/16, .*10.9.0.0/16; last from 10.9.0.2"`,
		`msg="account suspended" user=bob rule=login_spread .* text="mx.example.test \(milter\)"`,
		`queued mail of a suspended account held" user=bob queue=postfix messages=8`)
	var alert delivertest.SinkMessage
	hosttest.Eventually(t, "the alert mail at the sink", func() bool {
		for _, m := range h.sink.Messages(t) {
			if strings.Contains(string(m.Data), "account bob suspended (login_spread)") {
				alert = m
				return true
			}
		}
		return false
	})
	body := string(alert.Data)
	for _, want := range []string{"Signal:   login_spread", "10.9.0.0/16", "Held:     8 queued message(s)", "relayguard user unsuspend bob"} {
		if !strings.Contains(body, want) {
			t.Errorf("alert mail lacks %q:\n%s", want, body)
		}
	}
	// The operator lifts the suspension: the held mail goes back to the
	// queue and the account sends again (the logins that caused the
	// suspension no longer count).
	out := h.relayguard(t, "user", "unsuspend", "bob")
	if !strings.Contains(out, "unsuspended account bob") || !strings.Contains(out, "released 8 held message(s)") || !strings.Contains(out, "login_spread") {
		t.Errorf("unsuspend output:\n%s", out)
	}
	hosttest.Eventually(t, "bob's mail released", func() bool {
		q := h.queued(t, "bob@example.test")
		return q["hold"] == 0 && len(q) > 0
	})
	// Other processes (the milter) see the unsuspension within a second.
	hosttest.Eventually(t, "bob sending again after unsuspend", func() bool { return send(srcs[11], "bob") == nil })
}

// dovecotHost is Postfix with Dovecot SASL, Dovecot asking relayguard
// watch's authentication policy endpoint, and watch enforcing bans with
// nftables; all inside the server namespace (the firewall is the
// namespace's own).
type dovecotHost struct {
	n     *hosttest.Net
	watch *hosttest.Proc
	conf  string
	data  string
}

func startDovecotHost(t *testing.T, users map[string]string) *dovecotHost {
	t.Helper()
	hosttest.NeedPostfix(t)
	hosttest.NeedRoot(t, "nft")
	n := hosttest.NewNet(t)
	dir := hosttest.TempDir(t, "rg-dovecot-policy-")
	conf := filepath.Join(dir, "relayguard.toml")
	if err := os.WriteFile(conf, []byte(`
hostname = "mx.example.test"
local_domains = ["example.test"]
[firewall]
backend = "nftables"
[accounts]
dovecot_policy_listen = "127.0.0.1:10033"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	w := hosttest.Start(t, n.Server, "dovecot auth policy listening", "--config", conf, "--data-dir", data, "watch")
	dc := hosttest.StartDovecot(t, hosttest.DovecotConfig{Netns: n.Server, Users: users, Extra: `
auth_policy_server_url = http://127.0.0.1:10033/
auth_policy_hash_nonce = relayguard-test
auth_policy_request_attributes = login=%{requested_username} remote=%{rip} protocol=%s
`})
	hosttest.StartPostfix(t, hosttest.PostfixConfig{Netns: n.Server, Listen: "192.0.2.1:25", Main: dc.PostfixSASL()})
	return &dovecotHost{n: n, watch: w, conf: conf, data: data}
}

// try connects once from src with a short timeout (a banned network's
// packets are dropped) and reads the banner.
func (h *dovecotHost) try(src netip.Addr) error {
	return hosttest.InNS(h.n.Client, func() error {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.Dial("tcp", "192.0.2.1:25")
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
}

// The owner of a username under distributed guessing still logs in from
// the network she used before, while a login with her right password from
// a new network is refused before Dovecot checks it; on Postfix with
// Dovecot SASL, through Dovecot's authentication policy.
func TestGuessedOwnerStillLogsInOnPostfix(t *testing.T) {
	h := startDovecotHost(t, map[string]string{"carol": "carol-pw"})
	ctx := context.Background()
	owner := netip.MustParseAddr("10.50.0.2")
	stranger := netip.MustParseAddr("10.80.0.2")
	h.n.AddClient(t, owner)
	h.n.AddClient(t, stranger)
	login := func(src netip.Addr, pw string) error {
		return h.n.Submit(ctx, src, "192.0.2.1:25", hosttest.Message{User: "carol", Password: pw,
			From: "carol@example.test", To: []string{"friend@remote.test"}})
	}
	if err := login(owner, "carol-pw"); err != nil {
		t.Fatalf("carol from her network: %v", err)
	}
	for i := range 11 {
		a := netip.AddrFrom4([4]byte{10, 60, byte(i), 2})
		h.n.AddClient(t, a)
		if err := login(a, fmt.Sprintf("guess%d", i)); smtpCode(err) != 535 {
			t.Fatalf("guess from %s: %v, want 535", a, err)
		}
	}
	h.watch.WaitOutput(t, `msg="account compromise signal" user=carol rule=distributed_guessing reason="11 addresses failed`)
	if err := login(stranger, "carol-pw"); smtpCode(err) != 535 {
		t.Errorf("the right password from a new network: %v, want 535", err)
	}
	h.watch.WaitOutput(t, `login refused before its password was checked" user=carol client=10.80.0.2 protocol=smtp reason="username under distributed guessing`)
	if err := login(owner, "carol-pw"); err != nil {
		t.Errorf("carol from her network during the guessing: %v", err)
	}
}

// Any authentication attempt with a decoy username bans the source's /24
// at once (nftables in the server's namespace): a neighbour in that /24
// can no longer connect, another network can.
func TestDecoyBansPrefixOnPostfix(t *testing.T) {
	h := startDovecotHost(t, map[string]string{"carol": "carol-pw"})
	ctx := context.Background()
	attacker := netip.MustParseAddr("10.70.1.5")
	neighbour := netip.MustParseAddr("10.70.1.9")
	other := netip.MustParseAddr("10.71.0.2")
	for _, a := range []netip.Addr{attacker, neighbour, other} {
		h.n.AddClient(t, a)
	}
	if err := h.try(neighbour); err != nil {
		t.Fatalf("before the decoy attempt the neighbour cannot connect: %v", err)
	}
	// The ban drops the attacker's own connection at once: its AUTH gets
	// 535 or nothing at all.
	err := h.n.Submit(ctx, attacker, "192.0.2.1:25", hosttest.Message{User: "admin", Password: "admin", From: "x@example.test",
		To: []string{"y@remote.test"}, Timeout: 10 * time.Second})
	if err == nil || !strings.HasPrefix(err.Error(), "AUTH") {
		t.Fatalf("AUTH as the decoy: %v, want it refused", err)
	}
	h.watch.WaitOutput(t, `msg="account compromise signal" user=admin rule=decoy reason="authentication attempt as decoy admin from 10.70.1.5; banning 10.70.1.0/24"`,
		`msg=banned prefix=10.70.1.0/24`)
	hosttest.Eventually(t, "the neighbour blocked", func() bool { return h.try(neighbour) != nil })
	if err := h.try(other); err != nil {
		t.Errorf("another network is blocked too: %v", err)
	}
	out, err := hosttest.Command(h.n.Server, hosttest.Relayguard(t), "--config", h.conf, "--data-dir", h.data, "ban", "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.70.1.0/24") || !strings.Contains(string(out), "decoy username admin") {
		t.Errorf("ban list: %v\n%s", err, out)
	}
}
