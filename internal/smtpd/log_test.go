package smtpd

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
)

// waitRecords waits until the server has logged n records of kind k and
// returns every record it logged, each line parsed by internal/maillog (the
// one reader of relayguard's log). Every line must carry a connection id.
func waitRecords(t *testing.T, ts *testServer, k maillog.Kind, n int) []maillog.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var recs []maillog.Record
		seen := 0
		for _, l := range ts.logs.Lines() {
			if !strings.Contains(l, " cid=") {
				t.Fatalf("log line without a connection id: %s", l)
			}
			r, ok := maillog.Parse(l)
			if !ok {
				continue
			}
			recs = append(recs, r)
			if r.Kind == k {
				seen++
			}
		}
		if seen >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %q records logged, want %d:\n%s", seen, k, n, strings.Join(ts.logs.Lines(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOnePlaceLogsCountsPublishes runs two interleaved sessions and a
// non-SMTP client, and checks that each reply that matters is logged once
// (with its rule and codes, under its session's cid), counted once, and
// published as exactly one guard event.
func TestOnePlaceLogsCountsPublishes(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.dial(t, "mx")
	b := ts.dial(t, "submissions")
	a.expect("220 ")
	b.expect("220 ")
	a.cmd("EHLO a.example")
	b.cmd("EHLO b.example")
	a.expect("250 ")
	b.expect("250 ")
	a.cmd("MAIL FROM:<x@example.org>")
	b.cmd("AUTH PLAIN " + plainIR("alice", "wrong"))
	a.expect("250 2.1.0")
	b.expect("535 5.7.8")
	a.cmd("RCPT TO:<nobody@mail.test>")
	b.cmd("AUTH PLAIN " + plainIR("alice", testPassword))
	a.expect("550 5.1.1")
	b.expect("235 2.7.0")
	a.dialogue(`
C: RCPT TO:<victim@remote.example>
S: 554 5.7.1
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	a.send("Subject: logged\r\n\r\nhi\r\n.\r\n")
	a.expect("250 2.0.0 Ok: queued as")
	a.cmd("QUIT")
	b.cmd("QUIT")
	a.expect("221")
	b.expect("221")
	c := ts.dial(t, "mx")
	c.expect("220 ")
	c.cmd("GET / HTTP/1.1")
	c.expect("502 5.5.1")
	c.expectClosed()

	recs := waitRecords(t, ts, maillog.KindDisconnected, 3)
	bySession := map[string][]maillog.Record{}
	var order []string
	for _, r := range recs {
		if r.CID == "" {
			t.Fatalf("record without cid: %+v", r)
		}
		if _, ok := bySession[r.CID]; !ok {
			order = append(order, r.CID)
		}
		bySession[r.CID] = append(bySession[r.CID], r)
	}
	if len(order) != 3 {
		t.Fatalf("%d connection ids, want 3: %v", len(order), order)
	}
	kinds := func(rs []maillog.Record) []maillog.Kind {
		var out []maillog.Kind
		for _, r := range rs {
			out = append(out, r.Kind)
		}
		return out
	}
	var sa, sb, sc []maillog.Record
	for _, cid := range order {
		rs := bySession[cid]
		switch rs[0].Listener {
		case "submissions":
			sb = rs
		case "mx":
			if slices.ContainsFunc(rs, func(r maillog.Record) bool { return r.Kind == maillog.KindNonSMTP }) {
				sc = rs
			} else {
				sa = rs
			}
		}
	}
	want := []maillog.Kind{maillog.KindConnected, maillog.KindRejected, maillog.KindRelayDenied, maillog.KindAccepted, maillog.KindDisconnected}
	if got := kinds(sa); !slices.Equal(got, want) {
		t.Fatalf("session A records %v, want %v", got, want)
	}
	if r := sa[1]; r.Rule != "reject_unlisted_recipient" || r.Code != "550 5.1.1" || r.Rcpt != "nobody@mail.test" {
		t.Errorf("unknown-recipient record %+v", r)
	}
	if r := sa[2]; r.Rule != "reject_unauth_destination" || r.Code != "554 5.7.1" || r.Rcpt != "victim@remote.example" {
		t.Errorf("relay record %+v", r)
	}
	want = []maillog.Kind{maillog.KindConnected, maillog.KindAuthFailed, maillog.KindAuthOK, maillog.KindDisconnected}
	if got := kinds(sb); !slices.Equal(got, want) {
		t.Fatalf("session B records %v, want %v", got, want)
	}
	if r := sb[1]; r.User != "alice" || r.Mech != "PLAIN" || r.Reason != "bad credentials" {
		t.Errorf("auth failure record %+v", r)
	}
	if got := kinds(sc); !slices.Equal(got, []maillog.Kind{maillog.KindConnected, maillog.KindNonSMTP, maillog.KindDisconnected}) {
		t.Errorf("non-SMTP session records %v", got)
	}
	for _, l := range ts.logs.Lines() {
		if strings.Contains(l, "wrong") || strings.Contains(l, "horse") {
			t.Errorf("a password reached the log: %s", l)
		}
	}

	// One event per refusal and per AUTH outcome, nothing else.
	var evs []string
	for _, e := range ts.events.Snapshot() {
		evs = append(evs, string(e.Kind)+" "+e.Rule+" "+e.Detail)
	}
	wantEvents := []string{
		"auth_failure  bad credentials",
		"unknown_recipient reject_unlisted_recipient nobody@mail.test",
		"auth_success  ",
		"relay_denied reject_unauth_destination victim@remote.example",
		"protocol_abuse non_smtp_command non-SMTP command",
	}
	slices.Sort(evs)
	slices.Sort(wantEvents)
	if !slices.Equal(evs, wantEvents) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(evs, "\n"), strings.Join(wantEvents, "\n"))
	}

	// Counted once each.
	m := ts.metrics
	for rule, n := range map[string]float64{"reject_unlisted_recipient": 1, "reject_unauth_destination": 1, "non_smtp_command": 1} {
		if got := testutil.ToFloat64(m.Rejections.WithLabelValues(rule)); got != n {
			t.Errorf("rejections{%s} = %v, want %v", rule, got, n)
		}
	}
	if got := testutil.ToFloat64(m.Auth.WithLabelValues("PLAIN", "failure")); got != 1 {
		t.Errorf("auth failures counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Auth.WithLabelValues("PLAIN", "success")); got != 1 {
		t.Errorf("auth successes counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Spooled); got != 1 {
		t.Errorf("spooled %v, want 1", got)
	}
}

// TestLimitLogsItsKey: a limit that bites is logged once as "limit
// reached" with its config key and value, under the session's cid, and
// a local failure is logged with the session's cid and the error.
func TestLimitLogsItsKey(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: MAIL FROM:<x@example.org> SIZE=999999999
S: 552 5.3.4`)
	ts.db.Close()
	c.dialogue(`
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 451 4.3.0
C: QUIT
S: 221`)
	recs := waitRecords(t, ts, maillog.KindDisconnected, 1)
	var limits []maillog.Record
	for _, r := range recs {
		if r.Kind == maillog.KindLimitReached {
			limits = append(limits, r)
		}
	}
	if len(limits) != 1 || limits[0].Limit != "limits.max_message_size" || limits[0].Value != "26214400" {
		t.Errorf("limit records %+v", limits)
	}
	var failure string
	for _, l := range ts.logs.Lines() {
		if strings.Contains(l, "level=ERROR") {
			failure = l
		}
	}
	if !strings.Contains(failure, "cid="+recs[0].CID) || !strings.Contains(failure, "rule=local_recipient_lookup") ||
		!strings.Contains(failure, "alice@mail.test") || !strings.Contains(failure, "database is closed") {
		t.Errorf("local failure logged as %q", failure)
	}
	if n := len(ts.events.Snapshot()); n != 0 {
		t.Errorf("%d events for a size limit and a local failure, want none", n)
	}
	if got := testutil.ToFloat64(ts.metrics.Rejections.WithLabelValues("limits.max_message_size")); got != 1 {
		t.Errorf("size limit counted %v times", got)
	}
}

// TestPregreetOneEvent: a refusal publishes one event (it used to publish
// a reject and a protocol_abuse event for the same pregreet).
func TestPregreetOneEvent(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.GreetingDelay = config.Duration(300 * time.Millisecond) })
	c := ts.dial(t, "mx")
	c.cmd("EHLO impatient.example")
	c.expect("554 5.5.1")
	c.expectClosed()
	waitRecords(t, ts, maillog.KindDisconnected, 1)
	evs := ts.events.Snapshot()
	if len(evs) != 1 || evs[0].Kind != event.ProtocolAbuse || evs[0].Detail != "pregreet" || evs[0].Rule != "pregreet" {
		t.Errorf("events %+v, want one protocol_abuse pregreet", evs)
	}
}

// TestLogReaderSeesTheSameEvents: the guard counts the same whether it
// hears serve directly (the event bus) or reads serve's log (watch): for
// every session, the events that maillog derives from the log records are
// the events smtpd published.
func TestLogReaderSeesTheSameEvents(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Limits.GreetingDelay = config.Duration(200 * time.Millisecond)
		c.Limits.MaxBadCommands = 3 // the 550 and 554 below are errors too
	})
	c := ts.dial(t, "mx") // pregreet
	c.cmd("EHLO impatient.example")
	c.expect("554 5.5.1")
	c = ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<nobody@mail.test>
S: 550
C: RCPT TO:<a@remote.example>
S: 554
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send("a\nb\r\n.\r\n") // bare LF
	c.expect("521 5.5.2")
	c = ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: FOO
S: 500
C: BAR
S: 500
C: BAZ
S: 500
S: 421 4.7.0`)
	c = ts.dial(t, "mx")
	c.expect("220")
	c.send("EHLO x\r\nSTARTTLS\r\nRSET\r\n")
	c.expect("250 ")
	c.expect("220 2.0.0")
	c = ts.dial(t, "mx")
	c.expect("220")
	c.cmd("CONNECT example.org:443 HTTP/1.1")
	c.expect("502 5.5.1")
	c = ts.dial(t, "submissions")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: AUTH PLAIN ` + plainIR("mallory", "x") + `
S: 535
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 235
C: QUIT
S: 221`)
	recs := waitRecords(t, ts, maillog.KindDisconnected, 6)
	var fromLog, direct []string
	for _, r := range recs {
		if e, ok := r.Event(); ok {
			fromLog = append(fromLog, string(e.Kind)+" "+e.Rule+" "+e.IP.String()+" "+e.User)
		}
	}
	for _, e := range ts.events.Snapshot() {
		direct = append(direct, string(e.Kind)+" "+e.Rule+" "+e.IP.String()+" "+e.User)
	}
	slices.Sort(fromLog)
	slices.Sort(direct)
	if len(direct) != 9 || !slices.Equal(fromLog, direct) {
		t.Errorf("events read from the log:\n%s\npublished:\n%s", strings.Join(fromLog, "\n"), strings.Join(direct, "\n"))
	}
}
