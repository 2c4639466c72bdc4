package accounts_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/queue"
)

// serveHost is `relayguard serve` with a trusted-local submission listener
// on loopback; clients connect from distinct 127.N.0.1 addresses (distinct
// /16 networks without a network namespace).
type serveHost struct {
	proc       *hosttest.Proc
	addr       string
	conf, data string
	sink       *delivertest.Sink
}

func startServe(t *testing.T, users ...string) *serveHost {
	t.Helper()
	sink := delivertest.StartSink(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "relayguard.toml")
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
hostname = "mx.example.test"
local_domains = ["example.test"]
[admin]
listen = ""
[[listener]]
name = "submission"
address = "127.0.0.1:0"
mode = "submission"
trusted_local = true
[delivery.transports]
"remote.test" = "smtp:127.0.0.1:9"
[accounts]
alert_mail_to = "postmaster@admin.test"
alert_smtp = %q
`, sink.Addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &serveHost{conf: conf, data: data, sink: sink}
	for _, u := range users {
		cmd := exec.Command(hosttest.Relayguard(t), "--config", conf, "--data-dir", data, "user", "add", u, "--password-stdin")
		cmd.Stdin = strings.NewReader(u + "-pw\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("user add %s: %v\n%s", u, err, out)
		}
	}
	h.proc = hosttest.Start(t, "", `submission \(submission\) listening on`, "--config", conf, "--data-dir", data, "serve")
	h.addr = regexp.MustCompile(`submission \(submission\) listening on (\S+)`).FindStringSubmatch(h.proc.Output())[1]
	return h
}

// submit logs in as user with password from src and sends one message;
// it returns the first error.
func (h *serveHost) submit(src netip.Addr, user, password string) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 30 * time.Second}
	conn, err := d.Dial("tcp", h.addr)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	c := gosmtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	if err := c.Mail(user+"@example.test", nil); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt("friend@remote.test", nil); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s@example.test\r\nSubject: hi\r\n\r\nhello\r\n", user)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func smtpCode(err error) int {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// held counts user's messages in serve's spool, held and not.
func (h *serveHost) spool(t *testing.T, user string) (held, queued int) {
	sp, err := queue.OpenForAdmin(filepath.Join(h.data, "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	envs, err := sp.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range envs {
		if e.AuthUser != user {
			continue
		}
		if e.Held {
			held++
		} else {
			queued++
		}
	}
	return held, queued
}

// relayguard as the MTA, the same containment as on a Postfix host: bob's
// password used from 12 networks gets the account suspended after the 9th
// (its MAIL FROM 451, later logins 535 like a wrong password), its 8
// queued messages held in the spool, an alert mailed; `user unsuspend`
// releases them. carol's name guessed from 11 addresses: a login with her
// right password from a new network is refused, carol herself logs in
// from the network she used before.
func TestServeLoginSpreadAndGuessing(t *testing.T) {
	hosttest.NeedRoot(t)
	h := startServe(t, "bob", "carol")
	lo := func(a, b byte) netip.Addr { return netip.AddrFrom4([4]byte{127, a, b, 1}) }
	if err := h.submit(lo(50, 0), "carol", "carol-pw"); err != nil {
		t.Fatalf("carol from her network: %v", err)
	}
	for i := 1; i <= 12; i++ {
		err := h.submit(lo(byte(i), 0), "bob", "bob-pw")
		switch {
		case i <= 8 && err != nil:
			t.Fatalf("bob from network %d: %v", i, err)
		case i == 9 && (smtpCode(err) != 451 || !strings.Contains(err.Error(), "account bob is suspended")):
			t.Fatalf("bob from network 9: %v, want 451 at MAIL FROM", err)
		case i > 9 && (smtpCode(err) != 535 || !strings.HasPrefix(err.Error(), "AUTH")):
			t.Fatalf("bob from network %d: %v, want 535 at AUTH", i, err)
		}
	}
	hosttest.Eventually(t, "bob's 8 messages held in the spool", func() bool {
		held, queued := h.spool(t, "bob")
		return held == 8 && queued == 0
	})
	h.proc.WaitOutput(t, `msg="account suspended" user=bob rule=login_spread`, `queued mail of a suspended account held" user=bob queue=spool messages=8`,
		`auth failed".*user=bob reason="account suspended"`)
	hosttest.Eventually(t, "the alert mail", func() bool {
		for _, m := range h.sink.Messages(t) {
			if strings.Contains(m.Data, "account bob suspended (login_spread)") && strings.Contains(m.Data, "127.9.0.0/16") {
				return true
			}
		}
		return false
	})

	// Distributed guessing of carol: 11 addresses fail.
	for i := 0; i < 11; i++ {
		if err := h.submit(lo(60, byte(i)), "carol", "guess"); smtpCode(err) != 535 {
			t.Fatalf("guess %d: %v, want 535", i, err)
		}
	}
	h.proc.WaitOutput(t, `msg="account compromise signal" user=carol rule=distributed_guessing`)
	if err := h.submit(lo(70, 0), "carol", "carol-pw"); smtpCode(err) != 535 {
		t.Errorf("carol's right password from a new network while guessed: %v, want 535", err)
	}
	if err := h.submit(lo(50, 0), "carol", "carol-pw"); err != nil {
		t.Errorf("carol from the network she used before: %v", err)
	}
	h.proc.WaitOutput(t, `user=carol reason="username under distributed guessing`)

	out, err := exec.Command(hosttest.Relayguard(t), "--config", h.conf, "--data-dir", h.data, "user", "unsuspend", "bob").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "released 8 held message(s)") {
		t.Fatalf("unsuspend: %v\n%s", err, out)
	}
	if held, queued := h.spool(t, "bob"); held != 0 || queued != 8 {
		t.Errorf("after unsuspend: %d held, %d queued; want 0 and 8", held, queued)
	}
	// serve sees the unsuspension (made by another process) within a second.
	hosttest.Eventually(t, "bob sending again after unsuspend", func() bool { return h.submit(lo(1, 0), "bob", "bob-pw") == nil })
}
