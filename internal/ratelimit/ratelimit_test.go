package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/relayguard/relayguard/internal/redistest"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/service"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

const password = "correct horse battery staple"

type server struct {
	addr   string
	users  *userdb.DB
	spool  *queue.Spool
	events *event.Recorder
}

// startServer runs the real SMTP server with a real user database, spool
// and the limiter on a trusted local submission listener.
func startServer(t *testing.T, rl config.RateLimitConfig) *server {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "mail.test"
	cfg.LocalDomains = []string{"mail.test"}
	cfg.Listeners = []config.ListenerConfig{{Name: "local", Address: "127.0.0.1:0", Mode: config.ModeSubmission, TrustedLocal: true}}
	cfg.Delivery.RateLimits = rl
	if err := cfg.Finish(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	users, err := userdb.Open(ctx, db, userdb.Options{PasswordHash: "bcrypt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := users.Add(ctx, "alice", password); err != nil {
		t.Fatal(err)
	}
	if err := users.AddAddress(ctx, "alice", "alice@mail.test"); err != nil {
		t.Fatal(err)
	}
	spool, err := queue.OpenSpool(filepath.Join(dir, "spool"), time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ratelimit.NewStore(ctx, &store.Stores{DB: db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &event.Recorder{}
	lim, err := ratelimit.New(cfg.Delivery.RateLimits, st, ratelimit.Options{
		Events: rec, Suspender: userSuspender{users}, Holder: service.SpoolHolder{Spool: spool}, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := smtpd.New(cfg.SMTP(), smtpd.Deps{Users: users, Creds: users, Spool: spool, Events: rec, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, ln, cfg.Listeners[0])
	t.Cleanup(func() {
		cancel()
		srv.Shutdown()
		spool.Close()
		db.Close()
	})
	return &server{addr: ln.Addr().String(), users: users, spool: spool, events: rec}
}

// send submits one message as alice with a real SMTP client library and
// returns the SMTP error, if any.
func send(t *testing.T, addr string, rcpts ...string) error {
	t.Helper()
	return sendFrom(t, addr, "alice@mail.test", rcpts...)
}

// sendFrom is send with the envelope sender from ("" for the null sender).
func sendFrom(t *testing.T, addr, from string, rcpts ...string) error {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", password)); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	w.Write([]byte("Subject: hi\r\n\r\nhello\r\n"))
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func smtpCode(err error) (int, string) {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return 0, ""
}

func rateEvents(rec *event.Recorder) []event.Event {
	var out []event.Event
	for _, e := range rec.Snapshot() {
		if e.Kind == event.RateLimited {
			out = append(out, e)
		}
	}
	return out
}

func TestHourlyLimitOverSMTP(t *testing.T) {
	s := startServer(t, config.RateLimitConfig{UserMessagesPerHour: 3})
	for i := 0; i < 3; i++ {
		if err := send(t, s.addr, "friend@remote.test"); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	err := send(t, s.addr, "friend@remote.test")
	if code, enh := smtpCode(err); code != 451 || enh != "4.7.1" {
		t.Fatalf("4th message: got %v, want 451 4.7.1", err)
	}
	ev := rateEvents(s.events)
	if len(ev) != 1 || ev[0].User != "alice" || ev[0].Rule != "delivery.rate_limits.user_messages_per_hour" {
		t.Fatalf("events: %+v", ev)
	}
	// Without suspension the account still works and nothing is held.
	if a, err := s.users.Get(context.Background(), "alice"); err != nil || a.Suspended {
		t.Fatalf("account: %+v %v", a, err)
	}
	envs, _ := s.spool.List()
	for _, e := range envs {
		if e.Held {
			t.Fatalf("message %s held without suspend_on_limit", e.ID)
		}
	}
	if len(envs) != 3 {
		t.Fatalf("spool has %d messages, want the 3 accepted", len(envs))
	}
}

func TestSuspensionHoldsQueuedMail(t *testing.T) {
	s := startServer(t, config.RateLimitConfig{UserMessagesPerHour: 2, SuspendOnLimit: true})
	for i := 0; i < 2; i++ {
		if err := send(t, s.addr, "friend@remote.test"); err != nil {
			t.Fatal(err)
		}
	}
	err := send(t, s.addr, "friend@remote.test")
	if code, _ := smtpCode(err); code != 451 {
		t.Fatalf("3rd message: got %v, want 451", err)
	}
	if len(rateEvents(s.events)) != 1 {
		t.Fatalf("no rate_limited event: %+v", s.events.Snapshot())
	}
	a, err := s.users.Get(context.Background(), "alice")
	if err != nil || !a.Suspended {
		t.Fatalf("account not suspended: %+v %v", a, err)
	}
	envs, _ := s.spool.List()
	if len(envs) != 2 {
		t.Fatalf("spool has %d messages", len(envs))
	}
	for _, e := range envs {
		if !e.Held || e.Recipients[0].Status != queue.StatusHeld || !strings.Contains(e.HoldReason, "user_messages_per_hour") {
			t.Fatalf("queued mail of the suspended account not held: %+v", e)
		}
	}
	// The suspended account can no longer authenticate.
	if err := send(t, s.addr, "friend@remote.test"); err == nil {
		t.Fatal("suspended account still sends")
	}
}

// An authenticated client's null-sender messages (bounce-shaped spam from
// a stolen account) have their own cap; its normal mail is not affected.
func TestNullSenderCapOverSMTP(t *testing.T) {
	s := startServer(t, config.RateLimitConfig{UserMessagesPerHour: 100, UserNullSenderMessagesPerHour: 2})
	for i := 0; i < 2; i++ {
		if err := sendFrom(t, s.addr, "", "victim@remote.test"); err != nil {
			t.Fatalf("null-sender message %d: %v", i+1, err)
		}
	}
	err := sendFrom(t, s.addr, "", "victim@remote.test")
	if code, enh := smtpCode(err); code != 451 || enh != "4.7.1" || !strings.Contains(err.Error(), "user_null_sender_messages_per_hour = 2 per hour") {
		t.Fatalf("3rd null-sender message: got %v, want 451 4.7.1 naming user_null_sender_messages_per_hour", err)
	}
	if err := send(t, s.addr, "friend@remote.test"); err != nil {
		t.Fatalf("normal message after the cap: %v", err)
	}
}

func TestRecipientLimitsOverSMTP(t *testing.T) {
	s := startServer(t, config.RateLimitConfig{UserRecipientsPerDay: 5, UserNewRecipientsPerDay: 2})
	// Two strangers are fine; sending to them again is not "new".
	if err := send(t, s.addr, "a@remote.test", "b@remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := send(t, s.addr, "a@remote.test", "B@remote.test"); err != nil {
		t.Fatal(err)
	}
	err := send(t, s.addr, "c@remote.test")
	if code, enh := smtpCode(err); code != 451 || enh != "4.7.1" || !strings.Contains(err.Error(), "user_new_recipients_per_day") {
		t.Fatalf("third stranger: got %v", err)
	}
	// 4 recipients counted so far (+1 refused); the next one passes the
	// daily total only up to 5.
	err = send(t, s.addr, "a@remote.test")
	if code, _ := smtpCode(err); code != 451 || !strings.Contains(err.Error(), "user_recipients_per_day") {
		t.Fatalf("6th recipient of the day: got %v", err)
	}
}

func TestTrustedIPAndDomainLimits(t *testing.T) {
	dir := t.TempDir()
	db, err := store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := ratelimit.NewSQLStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 10, 30, 0, 0, time.UTC)
	rec := &event.Recorder{}
	lim, err := ratelimit.New(config.RateLimitConfig{IPMessagesPerHour: 2, SenderDomainMessagesPerHour: 3}, st,
		ratelimit.Options{Events: rec, Now: func() time.Time { return now }, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h1 := ratelimit.Sender{IP: netip.MustParseAddr("10.0.0.1"), From: "app@corp.test", Trusted: true}
	h2 := ratelimit.Sender{IP: netip.MustParseAddr("10.0.0.2"), From: "app@corp.test", Trusted: true}
	for i, c := range []struct {
		s   ratelimit.Sender
		bad string
	}{
		{h1, ""}, {h1, ""}, {h1, "ip_messages_per_hour"}, // third from one host
		{h2, ""},                                // 3rd counted with corp.test
		{h2, "sender_domain_messages_per_hour"}, // 4th with corp.test
	} {
		err := lim.Message(ctx, c.s, 1)
		var le *ratelimit.LimitError
		if c.bad == "" && err != nil || c.bad != "" && (!errors.As(err, &le) || le.Limit != c.bad) {
			t.Fatalf("message %d: got %v, want %q", i+1, err, c.bad)
		}
	}
	// An hour later the window is new.
	now = now.Add(time.Hour)
	if err := lim.Message(ctx, h1, 1); err != nil {
		t.Fatalf("next hour: %v", err)
	}
	if n := len(rec.Snapshot()); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	// Untrusted unauthenticated clients are not this limiter's business.
	if err := lim.Message(ctx, ratelimit.Sender{IP: netip.MustParseAddr("192.0.2.9"), From: "x@corp.test"}, 1); err != nil {
		t.Fatal(err)
	}
}

// With the shared Redis store, a limit holds across several servers.
func TestRedisSharedAcrossServers(t *testing.T) {
	url := redistest.Start(t).URL()
	ctx := context.Background()
	var lims []*ratelimit.Limiter
	for i := 0; i < 2; i++ {
		stores, err := store.Open(ctx, t.TempDir(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stores.Close() })
		st, err := ratelimit.NewStore(ctx, stores, nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ratelimit.New(config.RateLimitConfig{UserMessagesPerHour: 3, UserNewRecipientsPerDay: 1}, st,
			ratelimit.Options{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		lims = append(lims, l)
	}
	alice := ratelimit.Sender{User: "alice", IP: netip.MustParseAddr("127.0.0.1"), From: "alice@mail.test"}
	for i, l := range []int{0, 1, 0} {
		if err := lims[l].Message(ctx, alice, 1); err != nil {
			t.Fatalf("message %d via server %d: %v", i+1, l, err)
		}
	}
	if err := lims[1].Message(ctx, alice, 1); err == nil {
		t.Fatal("4th message in the hour accepted by the other server")
	}
	if err := lims[0].Rcpt(ctx, alice, "x@remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := lims[1].Rcpt(ctx, alice, "x@remote.test"); err != nil {
		t.Fatalf("known recipient on the other server: %v", err)
	}
	if err := lims[1].Rcpt(ctx, alice, "y@remote.test"); err == nil {
		t.Fatal("second new recipient accepted by the other server")
	}
}

// With Redis down, the shared limits count in the local database and keep
// biting; when Redis returns, the outage's counts and new recipients are
// written to it before anything else is counted there, so that another
// server sees them.
func TestSharedFallbackAndResync(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop()
	ctx := t.Context()
	open := func(down bool) (*ratelimit.Limiter, *store.Stores) {
		stores, err := store.Open(ctx, t.TempDir(), rs.URL(), nil)
		if err != nil {
			t.Fatalf("store.Open with Redis down=%v: %v", down, err)
		}
		if stores.Redis.Health.Down() != down {
			t.Fatalf("store.Open: Redis down=%v, want %v", stores.Redis.Health.Down(), down)
		}
		t.Cleanup(func() { stores.Close() })
		stores.Redis.Health.Retry = time.Millisecond
		st, err := ratelimit.NewStore(ctx, stores, nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ratelimit.New(config.RateLimitConfig{UserMessagesPerHour: 3, UserNewRecipientsPerDay: 2}, st,
			ratelimit.Options{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		return l, stores
	}
	a, ast := open(true)
	alice := ratelimit.Sender{User: "alice", IP: netip.MustParseAddr("127.0.0.1"), From: "alice@mail.test"}
	// Down: counted locally, the limit bites at the 4th message.
	for i := range 3 {
		if err := a.Message(ctx, alice, 1); err != nil {
			t.Fatalf("message %d with Redis down: %v", i+1, err)
		}
	}
	if err := a.Message(ctx, alice, 1); err == nil {
		t.Fatal("4th message accepted with Redis down")
	}
	if err := a.Rcpt(ctx, alice, "x@remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := a.Rcpt(ctx, alice, "x@remote.test"); err != nil {
		t.Fatalf("known recipient with Redis down: %v", err)
	}

	rs.Restart()
	// go-redis redials a pool that failed to dial within a second or so.
	for deadline := time.Now().Add(20 * time.Second); ast.Redis.C.Ping(ctx).Err() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Redis did not come back")
		}
	}
	// The next operation writes the outage to Redis first.
	if err := a.Rcpt(ctx, alice, "x@remote.test"); err != nil {
		t.Fatalf("known recipient after Redis returned: %v", err)
	}
	b, _ := open(false) // another server, with its own (empty) database
	if err := b.Message(ctx, alice, 1); err == nil {
		t.Fatal("the other server accepted a message over the limit counted during the outage")
	}
	if err := b.Rcpt(ctx, alice, "x@remote.test"); err != nil {
		t.Fatalf("the other server does not know the recipient seen during the outage: %v", err)
	}
	if err := b.Rcpt(ctx, alice, "y@remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := b.Rcpt(ctx, alice, "z@remote.test"); err == nil {
		t.Fatal("third new recipient of the day accepted")
	}
}

// userSuspender suspends the account in the account database, as
// deliver/service does for serve without the accounts' responder.
type userSuspender struct{ users *userdb.DB }

func (u userSuspender) Suspend(ctx context.Context, user string, _ *ratelimit.LimitError) error {
	return u.users.Suspend(ctx, user)
}
