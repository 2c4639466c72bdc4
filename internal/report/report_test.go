package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/report/loggen"
)

var fixtureNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func fixtureParser() *logline.Parser {
	return &logline.Parser{Loc: time.UTC, Now: func() time.Time { return fixtureNow }}
}

func analyzeFixture(t *testing.T, opt Options) *Summary {
	t.Helper()
	a := NewAnalyzer(opt)
	if err := a.ReadFiles(context.Background(), []string{"testdata/fixture.log"}, fixtureParser); err != nil {
		t.Fatal(err)
	}
	return a.Summary()
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestFixtureGrandTotals(t *testing.T) {
	s := analyzeFixture(t, DefaultOptions())
	tt := s.Totals
	eq(t, "received", tt.Received, 8) // 7 by Postfix, 1 by serve
	eq(t, "delivered", tt.Delivered, 8)
	eq(t, "forwarded", tt.Forwarded, 1)
	eq(t, "deferred", tt.Deferred, 1)
	eq(t, "deferrals", tt.Deferrals, 2)
	eq(t, "bounced", tt.Bounced, 1)
	eq(t, "rejected", tt.Rejected, 10) // 8 by Postfix, 2 by serve
	eq(t, "rejected%", tt.RejectedPct, 50)
	eq(t, "reject warnings", tt.RejectWarnings, 2)
	eq(t, "held", tt.Held, 2)
	eq(t, "discarded", tt.Discarded, 2)
	eq(t, "discarded%", tt.DiscardedPct, 10)
	eq(t, "bytes received", tt.BytesReceived, 705000)
	eq(t, "bytes delivered", tt.BytesDelivered, 707800)
	eq(t, "senders", tt.Senders, 5)
	eq(t, "sending domains", tt.SendingDomains, 4)
	eq(t, "recipients", tt.Recipients, 6)
	eq(t, "recipient domains", tt.RecipientDomains, 5)
}

func TestFixtureTrafficTables(t *testing.T) {
	s := analyzeFixture(t, DefaultOptions())
	eq(t, "days", s.DayCount, 2)
	if len(s.Days) != 2 || s.Days[0].Date != "2026-11-22" || s.Days[1].Date != "2026-11-23" {
		t.Fatalf("days %+v", s.Days)
	}
	eq(t, "Nov 22", s.Days[0], DayRow{Date: "2026-11-22", Received: 6, Delivered: 6, Deferred: 2, Bounced: 1, Rejected: 16})
	eq(t, "Nov 23", s.Days[1], DayRow{Date: "2026-11-23", Received: 2, Delivered: 2})
	eq(t, "09h", s.Hours[9], DayRow{Received: 2, Delivered: 1, Deferred: 2})
	eq(t, "08h (RFC 3339 wall clock)", s.Hours[8].Received, 2)
	eq(t, "10h", s.Hours[10], DayRow{Received: 1, Delivered: 2, Bounced: 1})
	eq(t, "12h", s.Hours[12], DayRow{Received: 2, Delivered: 2, Rejected: 4})

	// Host/domain summary: remote.example had 2 defers and 1 delivery with
	// a 3630 s delay; sender domains are keyed by address domain, or by
	// client for the null sender.
	dom := map[string]DomainRow{}
	for _, r := range s.RecipientDomains {
		dom[r.Domain] = r
	}
	eq(t, "remote.example", dom["remote.example"], DomainRow{Domain: "remote.example", Count: 1, Bytes: 2000, Defers: 2, AvgDelay: 3630, MaxDelay: 3630})
	eq(t, "local.test count", dom["local.test"].Count, 3)
	eq(t, "first recipient domain", s.RecipientDomains[0].Domain, "local.test")
	snd := map[string]DomainRow{}
	for _, r := range s.SenderDomains {
		snd[r.Domain] = r
	}
	eq(t, "example.net", snd["example.net"].Bytes, 700100)
	eq(t, "null sender by client", snd["203.0.113.9"].Count, 1)
	eq(t, "top sender by count", s.SendersByCount[0], UserRow{"news@example.net", 2, 700100})
	eq(t, "smallest sender (submission port, conn_use)", s.SendersBySize[len(s.SendersBySize)-1], UserRow{"from=<>", 1, 500})
	found := false
	for _, r := range s.SendersByCount {
		found = found || r.Address == "Alice@example.com"
	}
	if !found {
		t.Errorf("Alice@example.com (local part kept, domain lower-cased) missing: %+v", s.SendersByCount)
	}
	eq(t, "no size", len(s.NoMsgSize), 1)
	eq(t, "no size qid", s.NoMsgSize[0], KeyValue{"B3", "bob@local.test"})
}

func findNode(nodes []Node, path ...string) *Node {
	for i := range nodes {
		if nodes[i].Key == path[0] {
			if len(path) == 1 {
				return &nodes[i]
			}
			return findNode(nodes[i].Children, path[1:]...)
		}
	}
	return nil
}

func TestFixtureProblemReports(t *testing.T) {
	s := analyzeFixture(t, DefaultOptions())
	check := func(name string, nodes []Node, want int64, path ...string) {
		t.Helper()
		n := findNode(nodes, path...)
		if n == nil {
			t.Errorf("%s: no %q in %+v", name, path, nodes)
			return
		}
		eq(t, name+" "+strings.Join(path, "/"), n.Count, want)
	}
	// Reasons are condensed exactly as pflogsumm does (checked against it).
	check("deferral", s.Deferrals, 2, "smtp", "25: Connection timed out")
	check("bounce", s.Bounces, 1, "mx.far.example[198.51.100.6]:25", "User unknown (in reply to RCPT TO command)")
	check("reject relay", s.Rejects, 2, "RCPT", "Relay access denied")
	check("reject relay client", s.Rejects, 1, "RCPT", "Relay access denied", "203.0.113.5")
	check("reject user unknown", s.Rejects, 1, "RCPT", "Recipient address rejected: User unknown in local recipient table", "nobody@local.test")
	check("reject dnsbl", s.Rejects, 1, "RCPT", "blocked using zen.spamhaus.org", "198.51.100.99")
	check("reject size", s.Rejects, 1, "MAIL", "5.3.4 Message size exceeds fixed limit", "198.51.100.98")
	check("reject cleanup", s.Rejects, 1, "cleanup", "header", "Subject: viagra")
	check("reject warning", s.RejectWarnings, 1, "RCPT", "cannot find your hostname", "198.51.100.97")
	check("cleanup warning", s.RejectWarnings, 1, "cleanup", "header", "X-Spam: yes")
	check("hold", s.Holds, 1, "RCPT", "Recipient address triggers HOLD action", "198.51.100.96")
	check("discard", s.Discards, 1, "RCPT", "Recipient address triggers DISCARD action", "198.51.100.95")
	check("smtp failure", s.SMTPFailures, 1, "connection refused", "mx.down.example")
	check("smtp failure (old format)", s.SMTPFailures, 1, "connection refused", "mx.old.example")
	check("smtp failures total", s.SMTPFailures, 2, "connection refused")
	check("qid-led reject", s.Rejects, 1, "CONNECT", "Client host rejected: Access denied", "198.51.100.93")
	check("milter-reject", s.Rejects, 1, "cleanup", "END-OF-MESSAGE", "from unknown[198.51.100.92]: 5.7.1 Spam detected")
	check("cleanup hold", s.Holds, 1, "cleanup", "header", "X-Hold: yes")
	check("cleanup discard", s.Discards, 1, "cleanup", "body", "spam spam")
	check("postfix-script fatal", s.Fatals, 1, "postfix-script", "the Postfix mail system is already running")
	check("warning", s.Warnings, 1, "smtpd", "unknown[203.0.113.7]: SASL LOGIN authentication failed: UGFzc3d...")
	check("fatal", s.Fatals, 1, "trivial-rewrite", "open database /etc/postfix/transport.db: No such file or directory")
	check("panic", s.Panics, 1, "qmgr", "myfree: corrupt or unallocated memory block")
	if len(s.Master) != 1 || s.Master[0] != (CountRow{"daemon started -- version 3.7.11, configuration /etc/postfix", 1}) {
		t.Errorf("master %+v", s.Master)
	}
}

// --smtpd-stats: the one connect/disconnect pair of smtpd[201] lasted 3 s.
func TestFixtureSMTPDStats(t *testing.T) {
	o := DefaultOptions()
	o.SMTPDStats = true
	d := analyzeFixture(t, o).SMTPD
	if d == nil {
		t.Fatal("no smtpd statistics")
	}
	eq(t, "connections", d.Connections, 1)
	eq(t, "total seconds", d.TotalSecs, 3)
	eq(t, "per hour 09", d.PerHour[9], ConnRow{Count: 1, Total: 3, Max: 3})
	eq(t, "domain", d.Domains[0], ConnRow{"example.com", 1, 3, 3})
}

func TestFixtureAbuse(t *testing.T) {
	ab := analyzeFixture(t, DefaultOptions()).Abuse
	eq(t, "auth failures", ab.AuthFailures, 7)
	eq(t, "top auth address", ab.AuthByAddress[0].Key, "203.0.113.7")
	eq(t, "top auth address failures", ab.AuthByAddress[0].Failures, 4)
	eq(t, "top auth user", ab.AuthByAddress[0].Users[0], CountRow{"bob", 3})
	eq(t, "subnet v4", ab.AuthBySubnet[0].Key, "203.0.113.0/24")
	eq(t, "subnet v4 failures", ab.AuthBySubnet[0].Failures, 5)
	eq(t, "subnet v4 addresses", ab.AuthBySubnet[0].Addresses, 2)
	eq(t, "subnet v6", ab.AuthBySubnet[1].Key, "2001:db8:1:2::/64")
	eq(t, "subnet v6 users", len(ab.AuthBySubnet[1].Users), 2)
	eq(t, "relay attempts", ab.RelayAttempts, 3)
	eq(t, "relay by client", ab.RelayByClient[0], CountRow{"203.0.113.5", 2})
	eq(t, "relay by domain", ab.RelayByDomain[0], CountRow{"target.example", 2})
	eq(t, "relay by domain 2", ab.RelayByDomain[1], CountRow{"other.example", 1})
	eq(t, "dnsbl lists", len(ab.DNSBL), 2)
	eq(t, "dnsbl 0", ab.DNSBL[0].Count, 1)
	eq(t, "NDNs", ab.NDNs, 1)
	eq(t, "NDN hour", ab.NDNPerHour[10], 1)
	eq(t, "backscatter", ab.Backscatter, 1)
	eq(t, "backscatter domain", ab.BackscatterDoms[0], CountRow{"victim.example", 1})
	// 5 auth failures, 3 relay attempts (two Postfix "Relay access
	// denied", one relayguard), 1 other rejection (User unknown): each
	// event once.
	eq(t, "top subnet", ab.TopSubnets[0], SubnetRow{Subnet: "203.0.113.0/24", AuthFailures: 5, Relay: 3, Rejects: 1, Total: 9})
	eq(t, "bans", ab.BanCount, 1)
	eq(t, "ban prefix", ab.Bans[0].Prefix, "203.0.113.0/24")
	eq(t, "ban reason", ab.Bans[0].Reason, "auth failures")
	eq(t, "egress", ab.EgressBlocks, 1)
	eq(t, "egress who", ab.Egress[0].Who, "www-data /usr/bin/php8.2 (uid 33)")
	eq(t, "accepted", ab.Accepted, 1)
	eq(t, "dovecot logins", ab.DovecotLogins, 1)
	eq(t, "postscreen", ab.Postscreen[0], CountRow{"DNSBL rank", 1})
	eq(t, "rule rejects", ab.RuleRejects[0], CountRow{"reject_rbl_client", 1})
}

// The text layout is pflogsumm's: check the Grand Totals block verbatim.
func TestFixtureTextLayout(t *testing.T) {
	s := analyzeFixture(t, DefaultOptions())
	var b bytes.Buffer
	if err := s.WriteText(&b, nil); err != nil {
		t.Fatal(err)
	}
	want := `
Grand Totals
------------
messages

      8   received
      8   delivered
      1   forwarded
      1   deferred  (2  deferrals)
      1   bounced
     10   rejected (50%)
      2   reject warnings
      2   held
      2   discarded (10%)

    688k  bytes received
    691k  bytes delivered
      5   senders
      4   sending hosts/domains
      6   recipients
      5   recipient hosts/domains

`
	if !strings.HasPrefix(b.String(), want) {
		t.Fatalf("text starts\n%s\nwant\n%s", b.String()[:min(len(b.String()), 800)], want)
	}
	for _, sec := range []string{"Per-Day Traffic Summary", "Per-Hour Traffic Daily Average",
		"Host/Domain Summary: Message Delivery \n", "Senders by message count", "message reject detail",
		"smtp delivery failures", "Fatal Errors", "Panics", "Master daemon messages", "Abuse Summary (relayguard)",
		"SMTP AUTH failures by subnet (/24, /64)", "DNSBL rejections by list"} {
		if !strings.Contains(b.String(), sec) {
			t.Errorf("text lacks %q", sec)
		}
	}
	if !strings.Contains(b.String(), "    Nov 22 2026         6          6          2          1         16 ") {
		t.Errorf("per-day row missing:\n%s", b.String())
	}
}

func TestOptionsLimitsAndDates(t *testing.T) {
	o := DefaultOptions()
	o.UserLimit, o.HostLimit, o.RejectDetail = 1, 1, 0
	o.From = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	s := analyzeFixture(t, o)
	eq(t, "received on the 23rd", s.Totals.Received, 2)
	eq(t, "senders limited", len(s.SendersByCount), 1)
	eq(t, "domains limited", len(s.RecipientDomains), 1)
	var b bytes.Buffer
	s.WriteText(&b, nil)
	if strings.Contains(b.String(), "message reject detail") {
		t.Error("reject detail shown with --reject-detail 0")
	}
	if !strings.Contains(b.String(), "top 1 Senders by message count") {
		t.Error("no 'top 1' title")
	}
}

// .gz and .xz inputs give the same report as the plain file, and files are
// read in chronological order whatever the order given.
func TestCompressedAndOrder(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile("testdata/fixture.log")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(raw), "\n")
	half := len(lines) / 2
	first, second := filepath.Join(dir, "maillog.1"), filepath.Join(dir, "maillog")
	os.WriteFile(first, []byte(strings.Join(lines[:half], "")), 0o644)
	os.WriteFile(second, []byte(strings.Join(lines[half:], "")), 0o644)
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadFiles(context.Background(), []string{second, first}, fixtureParser); err != nil {
		t.Fatal(err)
	}
	want := analyzeFixture(t, DefaultOptions()).Totals
	eq(t, "split files reversed", a.Summary().Totals, want)

	gz := filepath.Join(dir, "fixture.log.gz")
	xz := filepath.Join(dir, "fixture.log.xz")
	compress(t, "gzip", raw, gz)
	compress(t, "xz", raw, xz)
	for _, f := range []string{gz, xz} {
		a := NewAnalyzer(DefaultOptions())
		if err := a.ReadFiles(context.Background(), []string{f}, fixtureParser); err != nil {
			t.Fatal(err)
		}
		eq(t, f, a.Summary().Totals, want)
	}
	if err := NewAnalyzer(DefaultOptions()).ReadFiles(context.Background(), []string{filepath.Join(dir, "missing")}, fixtureParser); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	// A corrupt .xz is an error that names the file once.
	xzData, err := os.ReadFile(xz)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.log.xz")
	if err := os.WriteFile(bad, xzData[:len(xzData)-40], 0o644); err != nil {
		t.Fatal(err)
	}
	err = NewAnalyzer(DefaultOptions()).ReadFiles(context.Background(), []string{bad}, fixtureParser)
	if err == nil || strings.Count(err.Error(), bad) != 1 || !strings.Contains(err.Error(), "xz -dc") {
		t.Errorf("corrupt .xz: %v, want one error naming %s once", err, bad)
	}
}

func TestJournalJSON(t *testing.T) {
	in := `{"MESSAGE":"A1: client=mail.example.com[192.0.2.10]","SYSLOG_IDENTIFIER":"postfix/smtpd","SYSLOG_PID":"5","_HOSTNAME":"mx1","__REALTIME_TIMESTAMP":"1795428000000000"}
{"MESSAGE":"A1: from=<a@example.com>, size=42, nrcpt=1 (queue active)","SYSLOG_IDENTIFIER":"postfix/qmgr","_PID":"6","_HOSTNAME":"mx1","__REALTIME_TIMESTAMP":"1795428001000000"}
{"MESSAGE":[116,105,109,101,61,120,32,109,115,103,61,34,97,117,116,104,32,102,97,105,108,101,100,34,32,99,108,105,101,110,116,61,49,46,50,46,51,46,52],"SYSLOG_IDENTIFIER":"relayguard","__REALTIME_TIMESTAMP":"1795428002000000"}
`
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadJournalJSON(strings.NewReader(in), time.UTC); err != nil {
		t.Fatal(err)
	}
	s := a.Summary()
	eq(t, "received", s.Totals.Received, 1)
	eq(t, "bytes", s.Totals.BytesReceived, 42)
	eq(t, "auth failure from byte-array MESSAGE", s.Abuse.AuthFailures, 1)
	if err := NewAnalyzer(DefaultOptions()).ReadJournalJSON(strings.NewReader("{bad"), time.UTC); err == nil {
		t.Error("bad JSON accepted")
	}
}

func compress(t *testing.T, prog string, data []byte, dst string) {
	t.Helper()
	requireBinary(t, prog)
	cmd := exec.Command(prog, "-c")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", prog, err)
	}
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// requireBinary skips outside CI when a program is missing; under CI the
// package is installed (.ci/packages.d/report.txt), so a missing one fails.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// relayguard's own log files, in slog's text and JSON formats, are read
// directly (without a syslog prefix): the records are written by
// internal/maillog's writers, so the report reads what serve, the guard and
// egress watch really write.
func TestRelayguardLogFiles(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	fixed := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			at = at.Add(time.Second)
			return slog.Time(slog.TimeKey, at)
		}
		return a
	}
	var text, js bytes.Buffer
	ctx := context.Background()
	tm := maillog.New(slog.New(slog.NewTextHandler(&text, &slog.HandlerOptions{ReplaceAttr: fixed})))
	c7 := maillog.Conn{CID: "1", Client: netip.MustParseAddr("192.0.2.7"), Listener: "submission"}
	c8 := maillog.Conn{CID: "2", Client: netip.MustParseAddr("192.0.2.8"), Listener: "submission"}
	tm.AuthFailed(ctx, c7, "PLAIN", "bob", "invalid credentials")
	tm.AuthFailed(ctx, c8, "LOGIN", `b o"b`, "invalid credentials")
	tm.Banned(ctx, netip.MustParsePrefix("192.0.2.0/24"), at.Add(24*time.Hour), 1, "auth failures")
	jm := maillog.New(slog.New(slog.NewJSONHandler(&js, &slog.HandlerOptions{ReplaceAttr: fixed})))
	c9 := maillog.Conn{CID: "3", Client: netip.MustParseAddr("192.0.2.9"), Listener: "smtp"}
	jm.RelayDenied(ctx, c9, maillog.Refusal{Rule: "reject_unauth_destination", Code: "554 5.7.1", Rcpt: "x@victim.example", Text: "Relay access denied"})
	jm.EgressBlocked(ctx, maillog.Egress{UID: 1001, User: "mallory", Dst: netip.MustParseAddrPort("198.51.100.25:25"), PID: 9, Exe: "perl"})
	c10 := maillog.Conn{CID: "4", Client: netip.MustParseAddr("192.0.2.10"), Listener: "smtp"}
	jm.Rejected(ctx, c10, maillog.Refusal{Rule: "reject_rbl_client", Code: "554 5.7.1", Text: "Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org"})
	jm.Accepted(ctx, c7, maillog.Message{ID: "Q1", User: "bob", From: "bob@local.test", Nrcpt: 1, Size: 2048})
	jm.Delivered(ctx, maillog.Delivery{ID: "Q1", Rcpt: "carol@remote.example", Attempt: 1, Reply: "250 ok", Relay: "mx.remote.example"})

	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadLines(strings.NewReader(text.String()+js.String()), fixtureParser()); err != nil {
		t.Fatal(err)
	}
	sum := a.Summary()
	ab := sum.Abuse
	eq(t, "auth failures", ab.AuthFailures, 2)
	eq(t, "quoted user", ab.AuthBySubnet[0].Users[0].Key, `b o"b`)
	eq(t, "ban", ab.Bans[0].Prefix, "192.0.2.0/24")
	eq(t, "ban time from the record", ab.Bans[0].Time.Equal(time.Date(2026, 11, 23, 10, 0, 3, 0, time.UTC)), true)
	eq(t, "relay (JSON)", ab.RelayByDomain[0], CountRow{"victim.example", 1})
	eq(t, "egress (JSON, numeric uid)", ab.Egress[0].Who, "mallory perl (uid 1001)")
	eq(t, "dnsbl (JSON)", ab.DNSBL[0], CountRow{"zen.spamhaus.org", 1})
	eq(t, "received", sum.Totals.Received, 1)
	eq(t, "delivered", sum.Totals.Delivered, 1)
	eq(t, "bytes delivered", sum.Totals.BytesDelivered, 2048)
	eq(t, "rejected", sum.Totals.Rejected, 2)
	// smtpd's relay refusals, one per recipient tried, are one reason of
	// the reject detail, condensed as Postfix's are ("Relay access
	// denied"), not one row per recipient (found by review).
	var relays bytes.Buffer
	rm := maillog.New(slog.New(slog.NewTextHandler(&relays, &slog.HandlerOptions{ReplaceAttr: fixed})))
	for _, rcpt := range []string{"a@victim.example", "b@victim.example", "c@other.example"} {
		rm.RelayDenied(ctx, c9, maillog.Refusal{Rule: "reject_unauth_destination", Code: "554 5.7.1", Rcpt: rcpt, Text: "<" + rcpt + ">: Relay access denied"})
	}
	rm.RelayDenied(ctx, c9, maillog.Refusal{Rule: "reject_unauth_destination", Code: "554 5.7.1", Rcpt: "d@x.example", Text: "Relay access denied"})
	a = NewAnalyzer(DefaultOptions())
	if err := a.ReadLines(strings.NewReader(relays.String()), fixtureParser()); err != nil {
		t.Fatal(err)
	}
	rej := a.Summary().Rejects
	if n := findNode(rej, "relayguard", "Relay access denied", "192.0.2.9"); n == nil || n.Count != 4 || len(rej[0].Children) != 1 {
		t.Errorf("relay refusals in the reject detail: %+v", rej)
	}
	// A notice serve queued and delivered has its size: it is not among
	// the "Messages with no size data" (found by review).
	var dsn bytes.Buffer
	dm := maillog.New(slog.New(slog.NewTextHandler(&dsn, &slog.HandlerOptions{ReplaceAttr: fixed})))
	dm.DSNQueued(ctx, "Q2", "N1", "bob@local.test", 1, 1500)
	dm.Delivered(ctx, maillog.Delivery{ID: "N1", Rcpt: "bob@local.test", Attempt: 1, Reply: "250 delivered to Maildir", Relay: "/srv/mail/bob"})
	a = NewAnalyzer(DefaultOptions())
	if err := a.ReadLines(strings.NewReader(dsn.String()), fixtureParser()); err != nil {
		t.Fatal(err)
	}
	if s := a.Summary(); len(s.NoMsgSize) != 0 || s.Totals.BytesDelivered != 1500 {
		t.Errorf("delivered notice: no size data for %v, %d bytes delivered (want none, 1500)", s.NoMsgSize, s.Totals.BytesDelivered)
	}
	o := DefaultOptions()
	o.From = time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	a = NewAnalyzer(o)
	a.ReadLines(strings.NewReader(text.String()+js.String()), fixtureParser())
	eq(t, "records outside -d", a.Summary().Abuse.AuthFailures, 0)
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// Chunked reading: lines longer than a chunk, lines across chunk
// boundaries, a last line without newline, CRLF, and read errors.
func TestReadLinesChunks(t *testing.T) {
	raw, err := os.ReadFile("testdata/fixture.log")
	if err != nil {
		t.Fatal(err)
	}
	want := analyzeFixture(t, DefaultOptions()).Totals
	long := "Nov 22 09:00:00 mx1 postfix/smtpd[1]: warning: " + strings.Repeat("x", 3*chunkSize) + "\n"
	var in strings.Builder
	// Pad so that fixture lines straddle chunk boundaries.
	for in.Len() < chunkSize-100 {
		in.WriteString("Nov 22 08:00:00 mx1 kernel: padding padding padding padding\n")
	}
	in.WriteString(long)
	crlf := strings.ReplaceAll(strings.TrimSuffix(string(raw), "\n"), "\n", "\r\n") // no final newline
	in.WriteString(crlf)
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadLines(strings.NewReader(in.String()), fixtureParser()); err != nil {
		t.Fatal(err)
	}
	s := a.Summary()
	eq(t, "totals through chunks", s.Totals, want)
	if n := findNode(s.Warnings, "smtpd"); n == nil || n.Count != 3 {
		t.Errorf("long warning line not counted: %+v", s.Warnings)
	}
	boom := errors.New("disk on fire")
	err = NewAnalyzer(DefaultOptions()).ReadLines(&failingReader{strings.NewReader(string(raw)), boom}, fixtureParser())
	if !errors.Is(err, boom) {
		t.Errorf("read error lost: %v", err)
	}
}

// A queue ID is forgotten at "removed": a reused short queue ID counts as
// the new message it is.
func TestQueueIDReuse(t *testing.T) {
	msg := func(size int, to string) string {
		return fmt.Sprintf(`Nov 22 10:00:00 mx1 postfix/smtpd[1]: AB12: client=a.example.com[192.0.2.1]
Nov 22 10:00:01 mx1 postfix/qmgr[2]: AB12: from=<s@example.com>, size=%d, nrcpt=1 (queue active)
Nov 22 10:00:02 mx1 postfix/lmtp[3]: AB12: to=<%s>, relay=x[private/lmtp], delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (ok)
Nov 22 10:00:03 mx1 postfix/qmgr[2]: AB12: removed
`, size, to)
	}
	a := NewAnalyzer(DefaultOptions())
	a.ReadLines(strings.NewReader(msg(100, "a@local.test")+msg(200, "b@local.test")), fixtureParser())
	tt := a.Summary().Totals
	eq(t, "received", tt.Received, 2)
	eq(t, "bytes received", tt.BytesReceived, 300)
	eq(t, "bytes delivered", tt.BytesDelivered, 300)
	eq(t, "queue table empty", a.queue.len(), 0)
}

// sampleReader measures the live heap (after a GC) every few MiB read.
type sampleReader struct {
	r         io.Reader
	n, next   int
	base, max uint64
}

func (s *sampleReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += n
	if s.n >= s.next {
		s.next += 4 << 20
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		s.max = max(s.max, m.HeapAlloc-min(m.HeapAlloc, s.base))
	}
	return n, err
}

// While reading, the analyzer and its read-ahead batches must not keep the
// 1 MiB read chunks alive through some substring: the live heap stays far
// below the input size.
func TestReadLinesReleasesChunks(t *testing.T) {
	var in bytes.Buffer
	loggen.Write(&in, loggen.Options{Lines: 400000, Start: fixtureNow.AddDate(0, 0, -2), Seed: 3, Abuse: true})
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	sr := &sampleReader{r: bytes.NewReader(in.Bytes()), base: m.HeapAlloc}
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadLines(sr, fixtureParser()); err != nil {
		t.Fatal(err)
	}
	if sr.max > uint64(in.Len())/4 {
		t.Errorf("live heap reached %d MB while reading %d MB: read chunks are retained", sr.max>>20, in.Len()>>20)
	}
	if a.Summary().Totals.Received == 0 {
		t.Fatal("nothing counted")
	}
}

// A log that spans New Year keeps its days in order, in the right years.
func TestNewYearLog(t *testing.T) {
	in := `Dec 31 23:59:58 mx1 postfix/smtpd[1]: A: client=a.example[192.0.2.1]
Jan  1 00:00:01 mx1 postfix/smtpd[1]: B: client=a.example[192.0.2.1]
`
	a := NewAnalyzer(DefaultOptions())
	p := &logline.Parser{Loc: time.UTC, Now: func() time.Time { return time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC) }}
	a.ReadLines(strings.NewReader(in), p)
	s := a.Summary()
	if len(s.Days) != 2 || s.Days[0].Date != "2026-12-31" || s.Days[1].Date != "2027-01-01" {
		t.Fatalf("days %+v", s.Days)
	}
	var b bytes.Buffer
	s.WriteText(&b, nil)
	if !strings.Contains(b.String(), "    Dec 31 2026") || !strings.Contains(b.String(), "    Jan  1 2027") {
		t.Errorf("per-day table:\n%s", b.String())
	}
}
