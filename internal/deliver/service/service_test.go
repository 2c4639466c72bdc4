package service_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/deliver/service"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

const password = "correct horse battery staple"

// The whole path: authenticated submission into relayguard's SMTP server,
// durable spool, scheduler, outbound SMTP to Postfix's smtp-sink; mail to a
// local domain into a Maildir; and a stolen account stopped by its limit.
func TestSubmissionToSinkAndMaildir(t *testing.T) {
	sink := delivertest.StartSink(t)
	mail := t.TempDir()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "relay.test"
	cfg.LocalDomains = []string{"relay.test"}
	cfg.Listeners = []config.ListenerConfig{
		{Name: "local", Address: "127.0.0.1:0", Mode: config.ModeSubmission, TrustedLocal: true},
		{Name: "mx", Address: "127.0.0.1:0", Mode: config.ModeMX},
	}
	cfg.Delivery.Transports = map[string]string{"remote.test": "smtp:" + sink.Addr, "relay.test": "maildir:" + mail}
	cfg.Delivery.RateLimits = config.RateLimitConfig{UserMessagesPerHour: 5, SuspendOnLimit: true}
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
	users.Add(ctx, "alice", password)
	users.AddAddress(ctx, "alice", "alice@relay.test")
	users.Add(ctx, "bob", password)
	users.AddAddress(ctx, "bob", "bob@relay.test")
	spool, err := queue.OpenSpool(cfg.Spool.Dir, time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	rec := &event.Recorder{}
	dl, err := service.Start(ctx, cfg, service.Deps{Stores: &store.Stores{DB: db}, Spool: spool, Users: users, Events: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Stop()
	srv, err := smtpd.New(cfg.SMTP(), smtpd.Deps{Users: users, Creds: users, Spool: spool, Events: rec, Limits: dl.Limiter})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	addr := map[string]string{}
	for _, lc := range cfg.Listeners {
		ln, err := net.Listen("tcp", lc.Address)
		if err != nil {
			t.Fatal(err)
		}
		addr[lc.Name] = ln.Addr().String()
		go srv.Serve(ctx, ln, lc)
	}

	for i := 0; i < 5; i++ {
		if err := submit(t, addr["local"], "alice", "alice@relay.test", "friend@remote.test", "bob@relay.test"); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	waitFor(t, "delivery", func() bool {
		envs, _ := spool.List()
		return len(envs) == 0
	})
	if n := len(sink.Messages(t)); n != 5 {
		t.Fatalf("sink got %d messages, want 5", n)
	}
	if n := len(delivertest.ReadMaildir(t, filepath.Join(mail, "bob"))); n != 5 {
		t.Fatalf("bob's Maildir has %d messages, want 5", n)
	}

	// The 6th message in the hour: 451, suspension.
	err = submit(t, addr["local"], "alice", "alice@relay.test", "friend@remote.test")
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 {
		t.Fatalf("6th message: got %v, want 451", err)
	}
	if a, _ := users.Get(ctx, "alice"); !a.Suspended {
		t.Fatal("alice not suspended")
	}
	found := false
	for _, e := range rec.Snapshot() {
		found = found || e.Kind == event.RateLimited && e.User == "alice"
	}
	if !found {
		t.Fatal("no rate_limited event")
	}
	// Bob is not affected.
	if err := submit(t, addr["local"], "bob", "bob@relay.test", "friend@remote.test"); err != nil {
		t.Fatalf("bob: %v", err)
	}
	waitFor(t, "bob's delivery", func() bool { return len(sink.Messages(t)) == 6 })
}

func submit(t *testing.T, addr, user, from string, rcpts ...string) error {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		return err
	}
	msg := "From: " + from + "\r\nTo: " + strings.Join(rcpts, ", ") + "\r\nSubject: hi\r\n\r\nhello\r\n"
	return c.SendMail(from, rcpts, strings.NewReader(msg))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A stolen account sends over several sessions at once. One session passed
// its limit check (DATA) and is sending its message when another one hits
// the limit and the account is suspended: the message that completes after
// the suspension is held like the rest of the account's mail, not delivered.
func TestSuspensionHoldsMailOfOpenSessions(t *testing.T) {
	sink := delivertest.StartSink(t)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "relay.test"
	cfg.LocalDomains = []string{"relay.test"}
	cfg.Listeners = []config.ListenerConfig{{Name: "local", Address: "127.0.0.1:0", Mode: config.ModeSubmission, TrustedLocal: true}}
	cfg.Delivery.Transports = map[string]string{"remote.test": "smtp:" + sink.Addr}
	cfg.Delivery.RateLimits = config.RateLimitConfig{UserMessagesPerHour: 2, SuspendOnLimit: true}
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
	users.Add(ctx, "alice", password)
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
	srv, err := smtpd.New(cfg.SMTP(), smtpd.Deps{Users: users, Creds: users, Spool: spool, Events: event.Discard{}, Limits: dl.Limiter})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, ln, cfg.Listeners[0])
	addr := ln.Addr().String()

	// Session A: authenticated, through DATA (message 1 of 2 in the hour).
	a, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Hello("a.client.test"); err != nil {
		t.Fatal(err)
	}
	if err := a.Auth(sasl.NewPlainClient("", "alice", password)); err != nil {
		t.Fatal(err)
	}
	if err := a.Mail("alice@relay.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Rcpt("late@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := a.Data()
	if err != nil {
		t.Fatal(err)
	}
	// Message 2 goes out; message 3 hits the limit and suspends alice.
	if err := submit(t, addr, "alice", "alice@relay.test", "second@remote.test"); err != nil {
		t.Fatalf("message 2: %v", err)
	}
	waitFor(t, "message 2 delivered", func() bool { return len(sink.Messages(t)) == 1 })
	var se *gosmtp.SMTPError
	if err := submit(t, addr, "alice", "alice@relay.test", "third@remote.test"); !errors.As(err, &se) || se.Code != 451 {
		t.Fatalf("message 3: got %v, want 451", err)
	}
	if acct, _ := users.Get(ctx, "alice"); !acct.Suspended {
		t.Fatal("alice not suspended")
	}
	// Session A now completes its message: accepted (it was within the
	// limit when it began) but held, not delivered.
	if _, err := w.Write([]byte("From: alice@relay.test\r\nSubject: late\r\n\r\nlate body\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("message 1: %v", err)
	}
	envs, err := spool.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 || !envs[0].Held || envs[0].Recipients[0].Addr != "late@remote.test" || envs[0].Recipients[0].Status != queue.StatusHeld {
		t.Fatalf("queue after the suspension: %+v", envs)
	}
	// Nothing more reaches the sink: a release by the operator is the only
	// way out, and then the message goes.
	if _, err := queue.Release(spool, envs[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after release", func() bool { return len(sink.Messages(t)) == 2 })
}
