package milter

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/relayguard/relayguard/internal/hosttest"

	"github.com/emersion/go-message/textproto"
	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

// These tests speak the milter protocol to the server with go-milter's
// client, as Postfix's cleanup does, over a real socket, with the real
// limiter over SQLite and queue files written in Postfix's record format.
// TestSendmailFloodHeldPerUID and TestSubmissionBoundAndLimited run the
// same against a real Postfix.

// logBuffer is a log destination read while sessions write.
type logBuffer = hosttest.LogBuffer

type fakeAccounts struct {
	suspended map[string]bool
	mu        sync.Mutex
	sent      []string // user/qid
	tied      []string
	logins    []string
}

func (f *fakeAccounts) Suspended(_ context.Context, name string) (bool, error) {
	return f.suspended[name], nil
}

func (f *fakeAccounts) Login(_ context.Context, user string, client netip.Addr) {
	f.mu.Lock()
	f.logins = append(f.logins, user+"/"+client.String())
	f.mu.Unlock()
}

func (f *fakeAccounts) Sent(_ context.Context, user, qid string) {
	f.mu.Lock()
	f.sent = append(f.sent, user+"/"+qid)
	f.mu.Unlock()
}

func (f *fakeAccounts) Tie(_ context.Context, user, qid string) {
	f.mu.Lock()
	f.tied = append(f.tied, user+"/"+qid)
	f.mu.Unlock()
}

type testMilter struct {
	addr  string
	queue string
	db    *sql.DB
	logs  *logBuffer
	rec   *event.Recorder
	acct  *fakeAccounts
}

func startMilter(t *testing.T, rl config.RateLimitConfig, mc config.MilterConfig) *testMilter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st, err := ratelimit.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	rec := &event.Recorder{}
	lim, err := ratelimit.New(rl, st, ratelimit.Options{Log: log, Events: rec, Registerer: prometheus.NewRegistry(), Source: "milter"})
	if err != nil {
		t.Fatal(err)
	}
	queue := t.TempDir()
	if mc.QueueDirectories == nil {
		mc.QueueDirectories = []string{queue}
	}
	acct := &fakeAccounts{suspended: map[string]bool{}}
	s, err := New(Options{Config: mc, Limiter: lim, Log: maillog.New(log), Events: rec, Accounts: acct,
		Owners:    UserDBOwners{LocalDomains: []string{"example.test"}},
		LookupUID: func(uid int) string { return map[int]string{33: "www-data", 1000: "alice"}[uid] }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("unix:" + filepath.Join(t.TempDir(), "milter.sock"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		db.Close()
	})
	return &testMilter{addr: ln.Addr().String(), queue: queue, db: db, logs: logs, rec: rec, acct: acct}
}

func defaultMilterConfig() config.MilterConfig {
	c := config.Default().Milter
	c.QueueDirectories = nil
	c.ExemptUsers = []string{"0"}
	return c
}

// session opens a milter session as Postfix does (protocol negotiation,
// connect).
func (tm *testMilter) session(t *testing.T, port uint16) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions("unix", tm.addr, gomilter.ClientOptions{
		ActionMask: gomilter.OptQuarantine | gomilter.OptAddHeader, ProtocolMask: gomilter.OptNoBody,
	})
	t.Cleanup(func() { c.Close() })
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if act, err := s.Conn("localhost", gomilter.FamilyInet, port, "127.0.0.1"); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("connect: %+v %v", act, err)
	}
	return s
}

// writeQueueFile writes incoming/qid in Postfix's record format with the
// given first content line.
func writeQueueFile(t *testing.T, dir, qid, firstLine string) {
	t.Helper()
	var b bytes.Buffer
	rec := func(typ byte, data string) {
		b.WriteByte(typ)
		n := len(data)
		for {
			c := byte(n & 0x7f)
			if n >>= 7; n != 0 {
				c |= 0x80
			}
			b.WriteByte(c)
			if n == 0 {
				break
			}
		}
		b.WriteString(data)
	}
	rec('C', "             0             0             0")
	rec('T', "1796527129 190150")
	rec('S', "www@example.test")
	rec('R', "victim@remote.test")
	rec('p', "              0")
	rec('M', "")
	rec('N', firstLine)
	rec('N', "Subject: "+strings.Repeat("x", 300)) // a length over 127: two length bytes
	rec('X', "")
	rec('E', "")
	if err := os.MkdirAll(filepath.Join(dir, "incoming"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "incoming", qid), b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// local runs one sendmail-submitted message through the milter and returns
// the end-of-message action and whether it was quarantined.
func (tm *testMilter) local(t *testing.T, qid string, nrcpt int) (*gomilter.Action, bool) {
	t.Helper()
	s := tm.session(t, 0)
	if err := s.Macros(gomilter.CodeMail, "i", qid); err != nil {
		t.Fatal(err)
	}
	if act, err := s.Mail("<www@example.test>", nil); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("MAIL: %+v %v", act, err)
	}
	for i := range nrcpt {
		if act, err := s.Rcpt(fmt.Sprintf("<r%d@remote.test>", i), nil); err != nil || act.Code != gomilter.ActContinue {
			t.Fatalf("RCPT: %+v %v", act, err)
		}
	}
	var h textproto.Header
	h.Add("Subject", "hi")
	if act, err := s.Header(h); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("header: %+v %v", act, err)
	}
	if err := s.Macros(gomilter.CodeEOB, "i", qid); err != nil {
		t.Fatal(err)
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatal(err)
	}
	quarantined := false
	for _, m := range mods {
		if m.Code == gomilter.ActQuarantine {
			quarantined = true
		}
	}
	return act, quarantined
}

// Local submissions are attributed to the uid pickup wrote into the queue
// file and limited per uid: over the limit quarantined (never discarded),
// other uids unaffected, exempt uids never limited.
func TestLocalSubmissionsPerUID(t *testing.T) {
	tm := startMilter(t, config.RateLimitConfig{LocalMessagesPerHour: 2, LocalRecipientsPerDay: 100}, defaultMilterConfig())
	for i, tc := range []struct {
		uid        int
		quarantine bool
	}{{33, false}, {33, false}, {33, true}, {1000, false}, {0, false}, {0, false}, {0, false}, {33, true}} {
		qid := fmt.Sprintf("Q%d", i)
		writeQueueFile(t, tm.queue, qid, fmt.Sprintf("Received: by mx.example.test (Postfix, from userid %d)", tc.uid))
		act, q := tm.local(t, qid, 1)
		if act.Code != gomilter.ActAccept || q != tc.quarantine {
			t.Fatalf("message %d of uid %d: action %q quarantined %v; want accept, quarantined %v", i, tc.uid, act.Code, q, tc.quarantine)
		}
	}
	log := tm.logs.String()
	if !strings.Contains(log, `msg="milter decision" id=Q2 user=www-data uid=33 client=127.0.0.1 from=www@example.test nrcpt=1 action=quarantine rule=delivery.rate_limits.local_messages_per_hour text="relayguard: Error: local user www-data (uid 33) exceeded its limit (local_messages_per_hour = 2 per hour), try again later"`) {
		t.Errorf("quarantine not logged with user, uid and limit:\n%s", log)
	}
	// Every accepted or held message is tied to its local user.
	if len(tm.acct.sent) != 6 || len(tm.acct.tied) != 2 || tm.acct.tied[0] != "www-data/Q2" || tm.acct.sent[0] != "www-data/Q0" {
		t.Errorf("sent %q, held %q", tm.acct.sent, tm.acct.tied)
	}
	// The limit bit twice; each is a rate_limited event naming the user.
	var limited int
	for _, e := range tm.rec.Snapshot() {
		if e.Kind == event.RateLimited && e.User == "www-data" && e.Source == "milter" {
			limited++
		}
	}
	if limited != 2 {
		t.Errorf("%d rate_limited events for www-data, want 2", limited)
	}
}

// A message whose first header is smtpd's Received: is not a local
// submission: accepted, not counted. A queue file that cannot be read
// leaves the message with Postfix (temporary failure), never uncounted.
func TestLocalAttributionFailures(t *testing.T) {
	tm := startMilter(t, config.RateLimitConfig{LocalMessagesPerHour: 1}, defaultMilterConfig())
	writeQueueFile(t, tm.queue, "S1", "Received: from client.example (unknown [192.0.2.9]) by mx.example.test (Postfix) with ESMTP id S1")
	for range 3 {
		if act, q := tm.local(t, "S1", 1); act.Code != gomilter.ActAccept || q {
			t.Fatalf("smtpd's message: %+v quarantined %v, want accept", act, q)
		}
	}
	act, q := tm.local(t, "MISSING", 1)
	if act.Code != gomilter.ActReplyCode || act.SMTPCode != 451 || !strings.Contains(act.SMTPText, "4.3.0") || q {
		t.Fatalf("unreadable queue file: %+v, want 451 4.3.0", act)
	}
	if !strings.Contains(tm.logs.String(), "cannot attribute a local submission") || !strings.Contains(tm.logs.String(), "MISSING") {
		t.Errorf("the failure is not logged with the queue id:\n%s", tm.logs.String())
	}
	// The state store failing: a temporary failure too.
	writeQueueFile(t, tm.queue, "L1", "Received: by mx.example.test (Postfix, from userid 33)")
	tm.db.Close()
	if act, q := tm.local(t, "L1", 1); act.Code != gomilter.ActReplyCode || act.SMTPCode != 451 || q {
		t.Fatalf("store down: %+v quarantined %v, want 451", act, q)
	}
}

// A suspended local user's mail is held; a suspended login is deferred at
// MAIL FROM; unauthenticated SMTP mail is accepted at MAIL FROM.
func TestSuspendedAndUnauthenticated(t *testing.T) {
	tm := startMilter(t, config.RateLimitConfig{LocalMessagesPerHour: 100, UserMessagesPerHour: 100}, defaultMilterConfig())
	tm.acct.suspended["www-data"] = true
	tm.acct.suspended["mallory"] = true
	writeQueueFile(t, tm.queue, "W1", "Received: by mx.example.test (Postfix, from userid 33)")
	if act, q := tm.local(t, "W1", 1); act.Code != gomilter.ActAccept || !q {
		t.Fatalf("suspended local user: %+v quarantined %v, want held", act, q)
	}
	s := tm.session(t, 45678)
	if err := s.Macros(gomilter.CodeMail, "{auth_authen}", "mallory", "{client_addr}", "192.0.2.44"); err != nil {
		t.Fatal(err)
	}
	act, err := s.Mail("<mallory@example.test>", nil)
	if err != nil || act.Code != gomilter.ActReplyCode || act.SMTPCode != 451 || !strings.Contains(act.SMTPText, "account mallory is suspended") {
		t.Fatalf("suspended login: %+v %v", act, err)
	}
	s2 := tm.session(t, 45679)
	if act, err := s2.Mail("<stranger@remote.test>", nil); err != nil || act.Code != gomilter.ActAccept {
		t.Fatalf("unauthenticated sender: %+v %v, want accept at MAIL", act, err)
	}
	if len(tm.acct.logins) != 1 || tm.acct.logins[0] != "mallory/192.0.2.44" {
		t.Errorf("logins seen: %q", tm.acct.logins)
	}
	if !strings.Contains(tm.logs.String(), `user=mallory uid=-1 client=192.0.2.44`) {
		t.Errorf("the client address from {client_addr} is not in the decision:\n%s", tm.logs.String())
	}
}

// The queue file reader against damaged files: never a panic, always an
// error naming the file.
func TestLocalUIDDamagedFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "incoming"), 0o700)
	for name, data := range map[string][]byte{
		"empty":     {},
		"truncated": {'M', 0, 'N', 0x85},
		"long":      {'N', 0xff, 0xff, 0xff, 0xff, 0x7f},
		"nomessage": {'S', 3, 'a', '@', 'b', 'E', 0},
		"badptr":    {'p', 3, 'x', 'y', 'z'},
	} {
		os.WriteFile(filepath.Join(dir, "incoming", name), data, 0o600)
		if _, err := LocalUID(dir, name); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
	if _, err := LocalUID(dir, "../etc"); err == nil {
		t.Error("a queue id with a path accepted")
	}
}
