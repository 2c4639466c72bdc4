package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func testConfig(transports map[string]string) *config.Config {
	c := config.Default()
	c.Hostname = "relay.test"
	c.Delivery.RetrySchedule = []config.Duration{config.Duration(100 * time.Millisecond)}
	c.Delivery.RescanInterval = config.Duration(200 * time.Millisecond)
	c.Delivery.ConnectTimeout = config.Duration(5 * time.Second)
	c.Delivery.CommandTimeout = config.Duration(30 * time.Second)
	c.Delivery.Transports = transports
	return c
}

func openSpool(t testing.TB, dir string) *queue.Spool {
	t.Helper()
	sp, err := queue.OpenSpool(dir, time.Millisecond, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// startScheduler runs a scheduler until the test ends or stop is called.
func startScheduler(t testing.TB, sp *queue.Spool, cfg *config.Config) (stop func()) {
	t.Helper()
	return startSchedulerLog(t, sp, cfg, testLog())
}

// startSchedulerLog is startScheduler logging to log.
func startSchedulerLog(t testing.TB, sp *queue.Spool, cfg *config.Config, log *slog.Logger) (stop func()) {
	t.Helper()
	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second) // every route is in the transport table
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, testLog(), deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	s := queue.NewScheduler(sp, d, cfg.Delivery, cfg.Hostname, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("scheduler: %v", err)
			}
			d.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

func message(seq int) string {
	return fmt.Sprintf("From: alice@sender.test\r\nTo: someone\r\nSubject: test %d\r\nMessage-ID: <seq-%d@test>\r\n\r\nbody of message %d\r\n", seq, seq, seq)
}

func put(t testing.TB, sp *queue.Spool, env *queue.Envelope, seq int) string {
	t.Helper()
	id, err := sp.Put(context.Background(), env, strings.NewReader(message(seq)))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func rcpts(addrs ...string) []queue.Recipient {
	out := make([]queue.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = queue.Recipient{Addr: a}
	}
	return out
}

// waitFor polls cond (bounded; readiness, not a timing assertion).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func gone(sp *queue.Spool, id string) bool {
	_, err := sp.Load(id)
	return errors.Is(err, os.ErrNotExist)
}

func spoolLen(t testing.TB, sp *queue.Spool) int {
	envs, err := sp.List()
	if err != nil {
		t.Fatal(err)
	}
	return len(envs)
}

func TestSchedulerDeliversEverything(t *testing.T) {
	sink := delivertest.StartSink(t)
	mbox := t.TempDir()
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr, "b.test": "smtp:" + sink.Addr, "local.test": "maildir:" + mbox})
	// Some messages are in the spool before the scheduler starts (recovery).
	for i := 0; i < 10; i++ {
		put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Recipients: rcpts("x@a.test", "y@b.test", "z@a.test")}, i)
	}
	startScheduler(t, sp, cfg)
	for i := 10; i < 20; i++ {
		put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Recipients: rcpts("x@a.test", "y@b.test", "bob@local.test")}, i)
	}
	waitFor(t, "empty spool", func() bool { return spoolLen(t, sp) == 0 })
	got := map[string]int{}
	for _, m := range sink.Messages(t) {
		for _, r := range m.Rcpts {
			got[r]++
		}
	}
	if got["x@a.test"] != 20 || got["y@b.test"] != 20 || got["z@a.test"] != 10 {
		t.Fatalf("sink recipients: %v", got)
	}
	if n := len(delivertest.ReadMaildir(t, filepath.Join(mbox, "bob"))); n != 10 {
		t.Fatalf("maildir got %d messages, want 10", n)
	}
}

func TestPerDomainConcurrency(t *testing.T) {
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{DataDelay: 400 * time.Millisecond}) // long enough for the two to overlap on a loaded machine
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(map[string]string{"slow.test": "smtp:" + peer.Addr})
	cfg.Delivery.PerDomainConcurrency = 2
	for i := 0; i < 8; i++ {
		put(t, sp, &queue.Envelope{From: "a@sender.test", AuthUser: "a", Recipients: rcpts("u@slow.test")}, i)
	}
	startScheduler(t, sp, cfg)
	waitFor(t, "empty spool", func() bool { return spoolLen(t, sp) == 0 })
	if n := len(peer.Messages()); n != 8 {
		t.Fatalf("peer got %d messages", n)
	}
	if p := peer.PeakConcurrency(); p != 2 {
		t.Fatalf("peak concurrency to one domain %d, want exactly the limit 2", p)
	}
}

// A peer that tempfails, then accepts: the recipient is retried and
// delivered once, and nobody gets a notice.
func TestTempfailThenAccept(t *testing.T) {
	sink := delivertest.StartSink(t, "-r", ".")
	sp := openSpool(t, t.TempDir())
	mbox := t.TempDir()
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr, "sender.test": "maildir:" + mbox})
	cfg.Delivery.RetrySchedule = []config.Duration{config.Duration(time.Second)}
	startScheduler(t, sp, cfg)
	id := put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission", Recipients: rcpts("x@a.test")}, 1)
	waitFor(t, "first attempt", func() bool {
		env, err := sp.Load(id)
		return err == nil && env.Recipients[0].Attempts >= 1
	})
	env, _ := sp.Load(id)
	r := env.Recipients[0]
	if r.Status != queue.StatusQueued || r.LastCode != 450 || !r.NextAttempt.After(r.Updated) {
		t.Fatalf("after a 450: %+v", r)
	}
	sink.Restart(t)
	waitFor(t, "delivery", func() bool { return gone(sp, id) })
	if n := len(sink.Messages(t)); n != 1 {
		t.Fatalf("sink got %d messages, want 1", n)
	}
	if n := len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))); n != 0 || spoolLen(t, sp) != 0 {
		t.Fatalf("a notice was sent for a delivered message")
	}
}

// A peer that refuses a recipient with 5xx: the recipient fails at once and
// the authenticated sender gets an RFC 3464 report.
func TestPermanentFailureBouncesToAuthenticatedSender(t *testing.T) {
	sink := delivertest.StartSink(t, "-f", "RCPT")
	sp := openSpool(t, t.TempDir())
	mbox := t.TempDir()
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr, "sender.test": "maildir:" + mbox})
	startScheduler(t, sp, cfg)
	id := put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission", Recipients: rcpts("nobody@a.test")}, 7)
	waitFor(t, "the notice", func() bool {
		return gone(sp, id) && len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))) == 1
	})
	dsn := delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))[0]
	for _, want := range []string{
		"Return-Path: <>\n",
		"Content-Type: multipart/report; report-type=delivery-status;",
		"Content-Type: message/delivery-status\n",
		"Reporting-MTA: dns; relay.test\n",
		"Final-Recipient: rfc822; nobody@a.test\n",
		"Action: failed\n",
		"Status: 5.3.0\n",
		"Diagnostic-Code: smtp; 500 5.3.0",
		"Content-Type: text/rfc822-headers\n",
		"Message-ID: <seq-7@test>\n",
		"Auto-Submitted: auto-replied\n",
	} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "body of message 7") {
		t.Error("DSN returned the body; only the header was asked for")
	}
}

// No notice for mail from the MX listener (backscatter) or from <>.
func TestNoBackscatter(t *testing.T) {
	sink := delivertest.StartSink(t, "-f", "RCPT")
	sp := openSpool(t, t.TempDir())
	mbox := t.TempDir()
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr, "sender.test": "maildir:" + mbox})
	startScheduler(t, sp, cfg)
	ids := []string{
		put(t, sp, &queue.Envelope{From: "forged@sender.test", Mode: "mx", ClientIP: "192.0.2.1", Recipients: rcpts("nobody@a.test")}, 1),
		put(t, sp, &queue.Envelope{From: "", AuthUser: "alice", Mode: "submission", Recipients: rcpts("nobody@a.test")}, 2),
	}
	for _, id := range ids {
		waitFor(t, "failure of "+id, func() bool { return gone(sp, id) })
	}
	// A notice is spooled before the failed message is removed: an empty
	// spool after the removal proves none was made.
	if n := spoolLen(t, sp); n != 0 {
		t.Fatalf("%d notices spooled", n)
	}
	if n := len(delivertest.ReadMaildir(t, filepath.Join(mbox, "forged"))); n != 0 {
		t.Fatalf("backscatter: %d", n)
	}
}

// A peer that drops the connection mid-DATA: the recipient stays queued
// with a connection error and no notice; when the queue lifetime runs out
// it fails with 4.4.7 and the sender is told.
func TestDropMidDataThenExpire(t *testing.T) {
	drop := delivertest.StartDropper(t)
	sp := openSpool(t, t.TempDir())
	mbox := t.TempDir()
	cfg := testConfig(map[string]string{"a.test": "smtp:" + drop.Addr, "sender.test": "maildir:" + mbox})
	cfg.Delivery.MaxQueueLifetime = config.Duration(4 * time.Second)
	cfg.Delivery.RetrySchedule = []config.Duration{config.Duration(500 * time.Millisecond)}
	startScheduler(t, sp, cfg)
	id := put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission", Recipients: rcpts("x@a.test")}, 3)
	waitFor(t, "first attempt", func() bool {
		env, err := sp.Load(id)
		return err == nil && env.Recipients[0].Attempts >= 1
	})
	env, _ := sp.Load(id)
	if r := env.Recipients[0]; r.Status != queue.StatusQueued || r.LastCode != 0 || r.LastError == "" {
		t.Fatalf("after a drop mid-DATA: %+v", r)
	}
	if drop.Drops.Load() < 1 {
		t.Fatal("the peer saw no DATA")
	}
	if n := len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))); n != 0 {
		t.Fatal("notice before the queue lifetime ran out")
	}
	waitFor(t, "expiry notice", func() bool {
		return gone(sp, id) && len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))) == 1
	})
	dsn := delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))[0]
	if !strings.Contains(dsn, "Action: failed\n") || !strings.Contains(dsn, "Status: 4.4.7\n") {
		t.Fatalf("expiry DSN:\n%s", dsn)
	}
}

func TestHoldReleaseDelete(t *testing.T) {
	sink := delivertest.StartSink(t, "-r", ".")
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr})
	cfg.Delivery.RetrySchedule = []config.Duration{config.Duration(200 * time.Millisecond)}
	startScheduler(t, sp, cfg)
	id := put(t, sp, &queue.Envelope{From: "a@sender.test", AuthUser: "a", Recipients: rcpts("x@a.test")}, 1)
	id2 := put(t, sp, &queue.Envelope{From: "a@sender.test", AuthUser: "a", Recipients: rcpts("y@a.test")}, 2)
	waitFor(t, "first attempt", func() bool {
		env, err := sp.Load(id)
		return err == nil && env.Recipients[0].Attempts >= 1
	})
	if _, err := queue.Hold(sp, id, "operator"); err != nil {
		t.Fatal(err)
	}
	if err := queue.Delete(sp, id2); err != nil {
		t.Fatal(err)
	}
	// Let any attempt in progress finish, then make the peer accept.
	env, _ := sp.Load(id)
	attempts := env.Recipients[0].Attempts
	time.Sleep(500 * time.Millisecond)
	sink.Restart(t)
	// Held: several retry periods pass without an attempt.
	time.Sleep(time.Second)
	env, err := sp.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if !env.Held || env.Recipients[0].Status != queue.StatusHeld || env.Recipients[0].Attempts > attempts+1 {
		t.Fatalf("held message: %+v", env)
	}
	if _, err := queue.Release(sp, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after release", func() bool { return gone(sp, id) })
	msgs := sink.Messages(t)
	if len(msgs) != 1 || msgs[0].Rcpts[0] != "x@a.test" {
		t.Fatalf("sink got %+v; the deleted message must not be delivered", msgs)
	}
}

// With delay_notice_after set, a sender whose mail is still being retried
// gets one "delayed" report (RFC 3464 Action: delayed), and the message
// stays queued.
func TestDelayNotice(t *testing.T) {
	sink := delivertest.StartSink(t, "-r", ".")
	sp := openSpool(t, t.TempDir())
	mbox := t.TempDir()
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr, "sender.test": "maildir:" + mbox})
	cfg.Delivery.DelayNoticeAfter = config.Duration(500 * time.Millisecond)
	cfg.Delivery.RetrySchedule = []config.Duration{config.Duration(200 * time.Millisecond)}
	stop := startScheduler(t, sp, cfg)
	id := put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission", Recipients: rcpts("x@a.test")}, 4)
	waitFor(t, "delay notice", func() bool { return len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))) >= 1 })
	// Further attempts, also after a restart, send no second notice.
	stop()
	env, _ := sp.Load(id)
	before := env.Recipients[0].Attempts
	startScheduler(t, sp, cfg)
	waitFor(t, "more attempts", func() bool {
		env, err := sp.Load(id)
		return err == nil && env.Recipients[0].Attempts >= before+3
	})
	box := delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))
	if len(box) != 1 {
		t.Fatalf("%d notices, want 1", len(box))
	}
	for _, want := range []string{"Action: delayed\n", "Status: 4.3.0\n", "Will-Retry-Until: ", "Final-Recipient: rfc822; x@a.test\n"} {
		if !strings.Contains(box[0], want) {
			t.Errorf("delay notice lacks %q:\n%s", want, box[0])
		}
	}
	if env, err := sp.Load(id); err != nil || env.Recipients[0].Status != queue.StatusQueued {
		t.Fatalf("message after the notice: %+v %v", env, err)
	}
}

// Through a smarthost, the concurrency limit holds for the smarthost as a
// whole, not per recipient domain.
func TestConcurrencyPerDestination(t *testing.T) {
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{DataDelay: 400 * time.Millisecond}) // long enough for the two to overlap on a loaded machine
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(nil)
	cfg.Delivery.Smarthost = peer.Addr
	cfg.Delivery.TLSPolicy = config.TLSNone
	cfg.Delivery.PerDomainConcurrency = 2
	for i := 0; i < 8; i++ {
		put(t, sp, &queue.Envelope{From: "a@sender.test", AuthUser: "a", Recipients: rcpts(fmt.Sprintf("u@d%d.test", i))}, i)
	}
	startScheduler(t, sp, cfg)
	waitFor(t, "empty spool", func() bool { return spoolLen(t, sp) == 0 })
	if n := len(peer.Messages()); n != 8 {
		t.Fatalf("smarthost got %d messages", n)
	}
	if p := peer.PeakConcurrency(); p != 2 {
		t.Fatalf("peak concurrency to the smarthost %d, want the limit 2", p)
	}
}

// `relayguard queue flush` (queue.Flush) makes a running scheduler retry a
// deferred recipient now instead of after its hour-long wait.
func TestFlushWakesScheduler(t *testing.T) {
	sink := delivertest.StartSink(t, "-r", ".")
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr})
	cfg.Delivery.RetrySchedule = []config.Duration{config.Duration(time.Hour)}
	cfg.Delivery.RescanInterval = config.Duration(time.Hour)
	startScheduler(t, sp, cfg)
	id := put(t, sp, &queue.Envelope{From: "a@sender.test", AuthUser: "a", Recipients: rcpts("x@a.test")}, 1)
	waitFor(t, "first attempt", func() bool {
		env, err := sp.Load(id)
		return err == nil && env.Recipients[0].Attempts == 1
	})
	sink.Restart(t)
	n, err := queue.Flush(sp)
	if err != nil || n != 1 {
		t.Fatalf("flush: %d, %v", n, err)
	}
	waitFor(t, "delivery after flush", func() bool { return gone(sp, id) })
	if m := sink.Messages(t); len(m) != 1 {
		t.Fatalf("sink got %d", len(m))
	}
}
