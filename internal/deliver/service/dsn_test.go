package service_test

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/deliver/service"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// DSN (RFC 3461) end to end with Postfix as the client: Postfix relays
// messages submitted to it with RET, ENVID, NOTIFY and ORCPT to
// relayguard, which offers DSN, so Postfix passes them on; relayguard then
// honours them in its own notices: NOTIFY=SUCCESS to a peer without DSN
// gives a "relayed" notice, NOTIFY=NEVER no notice for a failure,
// NOTIFY=FAILURE a failure notice with RET=HDRS's header only, each with
// the ENVID and ORCPT it was given.
func TestPostfixClientDSN(t *testing.T) {
	hosttest.NeedPostfix(t)
	noDSN := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{}) // go-smtp offers no DSN
	refuser := delivertest.StartSink(t, "-f", "RCPT")
	notices := delivertest.StartSink(t)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "mx.relay.test"
	cfg.LocalDomains = []string{"mx.relay.test"}
	cfg.MyNetworks = []string{"127.0.0.0/8"}
	cfg.Listeners = []config.ListenerConfig{{Name: "mx", Address: "127.0.0.1:0", Mode: config.ModeMX}}
	cfg.Delivery.BounceTrusted = true // Postfix on 127.0.0.1 is a trusted host: its senders get notices
	cfg.Delivery.Transports = map[string]string{
		"remote.test": "smtp:" + noDSN.Addr, "refuse.test": "smtp:" + refuser.Addr, "sender.test": "smtp:" + notices.Addr,
	}
	if err := cfg.Finish(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	users, err := userdb.Open(ctx, db, userdb.Options{PasswordHash: "bcrypt"})
	if err != nil {
		t.Fatal(err)
	}
	spool, err := queue.OpenSpool(cfg.Spool.Dir, time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	dl, err := service.Start(ctx, cfg, service.Deps{Stores: &store.Stores{DB: db}, Spool: spool, Users: users, Events: &event.Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Stop()
	srv, err := smtpd.New(cfg.SMTP(), smtpd.Deps{Users: users, Creds: users, Spool: spool, Limits: dl.Limiter})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, ln, cfg.Listeners[0])

	pfPort := delivertest.FreePort(t)
	hosttest.StartPostfix(t, hosttest.PostfixConfig{
		Listen: fmt.Sprintf("127.0.0.1:%d", pfPort),
		Main:   fmt.Sprintf("mynetworks = 127.0.0.0/8\nrelayhost = [127.0.0.1]:%d\ndefault_transport = smtp\nrelay_transport = smtp\nsmtp_tls_security_level = none\n", ln.Addr().(*net.TCPAddr).Port),
	})
	pfAddr := fmt.Sprintf("127.0.0.1:%d", pfPort)
	delivertest.WaitListening(t, "tcp", pfAddr)

	// Submit to Postfix with the DSN parameters (a raw dialogue: the
	// parameters are the point).
	conn, err := net.Dial("tcp", pfAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Bounded: a Postfix that stops answering fails the test, not the
	// whole test binary.
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	tc := textproto.NewConn(conn)
	expect := func(code int) {
		t.Helper()
		if _, _, err := tc.ReadResponse(code); err != nil {
			t.Fatalf("Postfix: %v", err)
		}
	}
	cmd := func(code int, format string, a ...any) {
		t.Helper()
		tc.PrintfLine(format, a...)
		expect(code)
	}
	expect(220)
	cmd(250, "EHLO submitter.test")
	send := func(mail, rcpt, params, subject string) {
		t.Helper()
		cmd(250, "MAIL FROM:<a@sender.test> %s", mail)
		cmd(250, "RCPT TO:<%s> %s", rcpt, params)
		cmd(354, "DATA")
		tc.PrintfLine("From: a@sender.test\r\nSubject: %s\r\n\r\nBODY-OF-%s\r\n.", subject, subject)
		expect(250)
	}
	send("RET=HDRS ENVID=T1+2Bx", "ok@remote.test", "NOTIFY=SUCCESS ORCPT=rfc822;orig-ok@remote.test", "one")
	send("ENVID=T2", "never@refuse.test", "NOTIFY=NEVER", "two")
	send("RET=HDRS ENVID=T3", "fail@refuse.test", "NOTIFY=FAILURE ORCPT=rfc822;orig-fail@refuse.test", "three")
	cmd(221, "QUIT")

	// What Postfix relayed to relayguard, and what relayguard says back.
	waitFor(t, "two notices", func() bool { return len(notices.Messages(t)) >= 2 })
	var relayed, failed string
	for _, m := range notices.Messages(t) {
		switch {
		case strings.Contains(m.Data, "Action: relayed"):
			relayed = m.Data
		case strings.Contains(m.Data, "Action: failed"):
			failed = m.Data
		}
	}
	for _, want := range []string{"Original-Envelope-Id: T1+x", "Original-Recipient: rfc822; orig-ok@remote.test", "Final-Recipient: rfc822; ok@remote.test", "Status: 2.0.0"} {
		if !strings.Contains(relayed, want) {
			t.Fatalf("relayed notice lacks %q:\n%s", want, relayed)
		}
	}
	for _, want := range []string{"Original-Envelope-Id: T3", "Original-Recipient: rfc822; orig-fail@refuse.test", "text/rfc822-headers", "Subject: three"} {
		if !strings.Contains(failed, want) {
			t.Fatalf("failure notice lacks %q:\n%s", want, failed)
		}
	}
	if strings.Contains(failed, "BODY-OF-three") {
		t.Fatalf("RET=HDRS: the failure notice returns the body:\n%s", failed)
	}
	if m := noDSN.Messages(); len(m) != 1 {
		t.Fatalf("the peer got %d messages", len(m))
	}
	// NOTIFY=NEVER: the failure of message two is reported to nobody.
	time.Sleep(500 * time.Millisecond)
	for _, m := range notices.Messages(t) {
		if strings.Contains(m.Data, "never@refuse.test") {
			t.Fatalf("a notice for NOTIFY=NEVER:\n%s", m.Data)
		}
	}
	waitFor(t, "the spool to empty", func() bool { envs, _ := spool.List(); return len(envs) == 0 })
}
