package policy

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/event"
)

// world is the test DNS: lists, sender domains, reverse DNS and SPF records.
func world(t *testing.T) *dnstest.Server {
	s := dnstest.Start(t)
	s.Add(t,
		// bl.test: a normal list with its test point; 127.0.0.5 listed.
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2",
		"5.0.0.127.bl.test. 300 IN A 127.0.0.2",
		// wl.test: an allowlist; 127.0.0.7 listed.
		"2.0.0.127.wl.test. 300 IN A 127.0.10.0",
		"7.0.0.127.wl.test. 300 IN A 127.0.15.3",
		// dbl.test: a domain list; spammer.test listed.
		"test.dbl.test. 300 IN A 127.0.1.2",
		"spammer.test.dbl.test. 300 IN A 127.0.1.2",
		// Sender domains.
		"mx.test. 300 IN MX 10 mail.mx.test.",
		"mail.mx.test. 300 IN A 192.0.2.25",
		"aonly.test. 300 IN A 192.0.2.26",
		"nullmx.test. 300 IN MX 0 .",
		"txtonly.test. 300 IN TXT \"hello\"",
		// Reverse DNS: 127.0.0.20 forward-confirmed, 127.0.0.21 PTR without
		// a matching A, 127.0.0.22 no PTR at all.
		"20.0.0.127.in-addr.arpa. 300 IN PTR good.rdns.test.",
		"good.rdns.test. 300 IN A 127.0.0.20",
		"21.0.0.127.in-addr.arpa. 300 IN PTR liar.rdns.test.",
		"liar.rdns.test. 300 IN A 192.0.2.99",
		// SPF (RFC 7208).
		"pass.spf.test. 300 IN TXT \"v=spf1 ip4:127.0.0.30 -all\"",
		"fail.spf.test. 300 IN TXT \"v=spf1 ip4:192.0.2.1 -all\"",
		"soft.spf.test. 300 IN TXT \"v=spf1 ip4:192.0.2.1 ~all\"",
		"neutral.spf.test. 300 IN TXT \"v=spf1 ?all\"",
		"perm.spf.test. 300 IN TXT \"v=spf1 ip4:300.0.0.1 frobnicate -all\"",
		"temp.spf.test. 300 IN TXT \"v=spf1 include:sf.test -all\"",
	)
	s.Wildcard("wild.test", "127.0.0.2")
	s.Dead("dead.test", true)
	s.ServFail("sf.test", true)
	s.ServFail("sfdomain.test", true)
	s.ServFail("23.0.0.127.in-addr.arpa", true)
	return s
}

type env struct {
	dns    *dnstest.Server
	eng    *Engine
	logs   *bytes.Buffer
	events *event.Recorder
}

func newEnv(t *testing.T, dns *dnstest.Server, edit func(c *config.Config)) *env {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = "mx.example.test"
	cfg.LocalDomains = []string{"example.test"}
	cfg.RelayDomains = []string{"relay.test", ".sub.test"}
	cfg.MyNetworks = []string{"10.0.0.0/8"}
	cfg.DNSBL.Resolvers = []string{dns.Addr}
	cfg.DNSBL.Timeout = config.Duration(3 * time.Second)
	cfg.DNSBL.HealthInterval = 0
	cfg.Policy.DNSTimeout = config.Duration(5 * time.Second)
	if edit != nil {
		edit(cfg)
	}
	if err := cfg.Finish(t.TempDir()); err != nil {
		t.Fatalf("config: %v", err)
	}
	res, err := dnsutil.New([]string{dns.Addr}, time.Second) // only dead lists wait for it
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dns: dns, logs: &bytes.Buffer{}, events: &event.Recorder{}}
	e.eng, err = New(cfg.Site, cfg.Policy, cfg.DNSBL, Deps{Resolver: res, Logger: slog.New(slog.NewTextHandler(e.logs, nil)),
		Events: e.events, Registerer: prometheus.NewRegistry(), Source: "test"})
	if err != nil {
		t.Fatalf("policy.New: %v", err)
	}
	return e
}

func rcpt(ip, helo, from, to string) *Request {
	return &Request{Stage: StageRcpt, ClientAddress: netip.MustParseAddr(ip), Helo: helo, Sender: from, Recipient: to}
}

func expect(t *testing.T, name string, v Verdict, action Action, code int, rule string, text ...string) {
	t.Helper()
	if v.Action != action || v.Code != code || v.Rule != rule {
		t.Errorf("%s: got %v %d rule=%q %q, want %v %d rule=%q", name, v.Action, v.Code, v.Rule, v.Text, action, code, rule)
	}
	for _, s := range text {
		if !strings.Contains(v.Text, s) {
			t.Errorf("%s: text %q does not contain %q", name, v.Text, s)
		}
	}
	if (action == Reject || action == Defer) && !strings.Contains(v.Text, "(rule "+rule+")") {
		t.Errorf("%s: reply text %q does not name the rule", name, v.Text)
	}
}

func TestDefaultsMakeNoDNSQuery(t *testing.T) {
	dns := world(t)
	e := newEnv(t, dns, nil) // default restriction lists, no zones
	before := dns.Queries.Load()
	expect(t, "relay", e.eng.Check(context.Background(), rcpt("127.0.0.5", "x", "a@b.test", "v@elsewhere.test")),
		Reject, 554, "reject_unauth_destination", "Relay access denied")
	expect(t, "local", e.eng.Check(context.Background(), rcpt("127.0.0.5", "x", "a@b.test", "v@example.test")), Dunno, 0, "")
	if n := dns.Queries.Load() - before; n != 0 {
		t.Errorf("default configuration sent %d DNS queries", n)
	}
	if ev := e.events.Snapshot(); len(ev) != 1 || ev[0].Kind != event.RelayDenied || ev[0].Rule != "reject_unauth_destination" {
		t.Errorf("events = %+v, want one relay_denied", ev)
	}
}

func TestRelayDecision(t *testing.T) {
	e := newEnv(t, world(t), nil)
	ctx := context.Background()
	for _, tc := range []struct {
		ip, user, to string
		want         Action
		rule         string
	}{
		{"10.1.2.3", "", "v@elsewhere.test", Permit, "permit_mynetworks"},
		{"192.0.2.9", "alice", "v@elsewhere.test", Permit, "permit_sasl_authenticated"},
		{"192.0.2.9", "", "v@relay.test", Dunno, ""},
		{"192.0.2.9", "", "v@a.sub.test", Dunno, ""},
		{"192.0.2.9", "", "v@EXAMPLE.test.", Dunno, ""},
		{"192.0.2.9", "", "postmaster", Dunno, ""},
		{"192.0.2.9", "", "v%elsewhere.test@example.test", Reject, "reject_unauth_destination"},
		{"192.0.2.9", "", "elsewhere.test!v@example.test", Reject, "reject_unauth_destination"},
		{"192.0.2.9", "", "v@[192.0.2.1]", Reject, "reject_unauth_destination"},
		{"192.0.2.9", "", "v@sub.test", Reject, "reject_unauth_destination"},
	} {
		req := rcpt(tc.ip, "h.test", "s@x.test", tc.to)
		req.SASLUsername = tc.user
		v := e.eng.Check(ctx, req)
		if v.Action != tc.want || v.Rule != tc.rule {
			t.Errorf("%s from %s user %q: %v rule %q (%s), want %v %q", tc.to, tc.ip, tc.user, v.Action, v.Rule, v.Text, tc.want, tc.rule)
		}
	}
}

func TestClientAndSenderChecks(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.Policy.HeloRestrictions = []string{"reject_invalid_helo_hostname", "reject_non_fqdn_helo"}
		c.Policy.SenderRestrictions = []string{"reject_non_fqdn_sender", "reject_unknown_sender_domain"}
		c.Policy.ConnectRestrictions = []string{"check_client_access blocked", "reject_unknown_client_hostname"}
		c.Policy.Access = []config.AccessTable{{Name: "blocked", Entries: []string{
			"127.0.0.40/32 REJECT go away", "127.0.0.41 451 4.7.9 slow down", "127.0.0.42 OK", "127.0.0.0/30 DUNNO"}}}
	})
	ctx := context.Background()
	st := func(stage Stage, ip, helo, from string) Verdict {
		return e.eng.Check(ctx, &Request{Stage: stage, ClientAddress: netip.MustParseAddr(ip), Helo: helo, Sender: from})
	}
	expect(t, "fqdn helo", st(StageHelo, "192.0.2.1", "mail.example.test", ""), Dunno, 0, "")
	expect(t, "literal helo", st(StageHelo, "192.0.2.1", "[192.0.2.1]", ""), Dunno, 0, "")
	expect(t, "bare helo", st(StageHelo, "192.0.2.1", "localhost", ""), Reject, 504, "reject_non_fqdn_helo", "need fully-qualified hostname")
	expect(t, "invalid helo", st(StageHelo, "192.0.2.1", "bad_host!.test", ""), Reject, 501, "reject_invalid_helo_hostname")
	expect(t, "bare ip helo", st(StageHelo, "192.0.2.1", "192.0.2.1", ""), Reject, 501, "reject_invalid_helo_hostname")
	expect(t, "bad literal", st(StageHelo, "192.0.2.1", "[300.1.1.1]", ""), Reject, 501, "reject_invalid_helo_hostname")

	expect(t, "mx sender", st(StageMail, "192.0.2.1", "h.test", "a@mx.test"), Dunno, 0, "")
	expect(t, "a-only sender", st(StageMail, "192.0.2.1", "h.test", "a@aonly.test"), Dunno, 0, "")
	expect(t, "null sender", st(StageMail, "192.0.2.1", "h.test", ""), Dunno, 0, "")
	expect(t, "non-fqdn sender", st(StageMail, "192.0.2.1", "h.test", "a@localhost"), Reject, 504, "reject_non_fqdn_sender")
	expect(t, "unknown domain", st(StageMail, "192.0.2.1", "h.test", "a@nowhere.test"), Reject, 550, "reject_unknown_sender_domain", "Domain not found")
	expect(t, "no address records", st(StageMail, "192.0.2.1", "h.test", "a@txtonly.test"), Reject, 550, "reject_unknown_sender_domain")
	v := st(StageMail, "192.0.2.1", "h.test", "a@nullmx.test")
	expect(t, "null MX", v, Reject, 550, "reject_unknown_sender_domain", "null MX")
	if v.Enhanced != "5.7.27" {
		t.Errorf("null MX enhanced code %q, want 5.7.27 (RFC 7505)", v.Enhanced)
	}
	// A malformed domain cannot exist: 550, not a 450 retried forever.
	expect(t, "malformed domain", st(StageMail, "192.0.2.1", "h.test", "a@bad..name.test"), Reject, 550, "reject_unknown_sender_domain", "Domain not found")
	v = st(StageMail, "192.0.2.1", "h.test", "a@sfdomain.test")
	expect(t, "SERVFAIL sender domain", v, Defer, 450, "reject_unknown_sender_domain", "temporary")
	if !v.IfPermit {
		t.Errorf("DNS failure on sender domain should be defer_if_permit")
	}

	expect(t, "table reject", st(StageConnect, "127.0.0.40", "", ""), Reject, 554, "check_client_access", "go away")
	v = st(StageConnect, "127.0.0.41", "", "")
	expect(t, "table 451", v, Defer, 451, "check_client_access", "slow down")
	if v.Enhanced != "4.7.9" {
		t.Errorf("table enhanced code %q", v.Enhanced)
	}
	expect(t, "table OK", st(StageConnect, "127.0.0.42", "", ""), Permit, 0, "check_client_access")
	expect(t, "fcrdns ok", st(StageConnect, "127.0.0.20", "", ""), Dunno, 0, "")
	expect(t, "fcrdns mismatch", st(StageConnect, "127.0.0.21", "", ""), Reject, 550, "reject_unknown_client_hostname", "cannot find your hostname")
	expect(t, "no ptr", st(StageConnect, "127.0.0.22", "", ""), Reject, 550, "reject_unknown_client_hostname")
	expect(t, "ptr servfail", st(StageConnect, "127.0.0.23", "", ""), Defer, 450, "reject_unknown_client_hostname", "temporary")
	// Postfix passes the verified name: trusted, no lookup.
	before := e.dns.Queries.Load()
	req := &Request{Stage: StageConnect, ClientAddress: netip.MustParseAddr("127.0.0.22"), ClientName: "mail.example.test"}
	expect(t, "name given", e.eng.Check(ctx, req), Dunno, 0, "")
	if e.dns.Queries.Load() != before {
		t.Errorf("a client name given by Postfix was looked up again")
	}
}

func TestRBLRulesAndWarnIfReject(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.Policy.RecipientRestrictions = []string{"reject_unauth_destination", "warn_if_reject reject_rhsbl_helo dbl.test",
			"reject_rbl_client bl.test=127.0.0.[2..11]", "reject_rhsbl_sender dbl.test", "reject_rbl_client sf.test"}
	})
	ctx := context.Background()
	v := e.eng.Check(ctx, rcpt("127.0.0.5", "h.test", "a@mx.test", "u@example.test"))
	expect(t, "listed", v, Reject, 554, "reject_rbl_client", "Client host [127.0.0.5] blocked using bl.test")
	v = e.eng.Check(ctx, rcpt("127.0.0.9", "h.test", "a@spammer.test", "u@example.test"))
	expect(t, "rhsbl sender", v, Reject, 554, "reject_rhsbl_sender", "<a@spammer.test>", "dbl.test")
	// Clean everywhere except sf.test which fails: a 451, never a pass.
	v = e.eng.Check(ctx, rcpt("127.0.0.9", "h.test", "a@mx.test", "u@example.test"))
	expect(t, "servfail list", v, Defer, 451, "reject_rbl_client", "temporary failure", "sf.test")
	// The HELO is listed but only warned about; bl.test still decides.
	v = e.eng.Check(ctx, rcpt("127.0.0.5", "spammer.test", "a@mx.test", "u@example.test"))
	expect(t, "warn then reject", v, Reject, 554, "reject_rbl_client")
	if !strings.Contains(e.logs.String(), `msg="policy warn"`) || !strings.Contains(e.logs.String(), "reject_rhsbl_helo") {
		t.Errorf("warn_if_reject not logged:\n%s", e.logs.String())
	}
	evs := e.events.Snapshot()
	if len(evs) == 0 || evs[0].Kind != event.DNSBLReject {
		t.Errorf("first event %+v, want dnsbl_reject", evs)
	}
}

func TestWarnOnlyPrependsHeader(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.Policy.RecipientRestrictions = []string{"warn_if_reject reject_rbl_client bl.test"}
	})
	v := e.eng.Check(context.Background(), rcpt("127.0.0.5", "h.test", "a@mx.test", "u@example.test"))
	if v.Action != Dunno || !strings.HasPrefix(v.Prepend, "X-Relayguard-Warn: reject_rbl_client would reject") {
		t.Errorf("warn-only verdict %+v", v)
	}
}

func TestDNSBLScore(t *testing.T) {
	dns := world(t)
	e := newEnv(t, dns, func(c *config.Config) {
		c.DNSBL.Zones = []string{"bl.test*2", "wl.test=127.0.[0..255].[1..3]*-5", "wild.test*3", "dead.test*1"}
		c.DNSBL.DomainZones = []string{"dbl.test=127.0.1.[2..99]*1"}
		c.DNSBL.RejectThreshold = 3
		c.DNSBL.AllowThreshold = -3
		c.Policy.RecipientRestrictions = []string{"dnsbl_score", "reject"}
	})
	ctx := context.Background()
	// Before any health check the dead list is unknown: a client whose
	// score could reach the threshold with it gets a 451, not a pass.
	e.eng.DNSBL().CheckHealth(ctx)
	for _, h := range e.eng.DNSBL().HealthReport() {
		want := map[string]string{"bl.test": "healthy", "wl.test": "healthy", "wild.test": "lists-everything", "dead.test": "dead", "dbl.test": "healthy"}[h.Zone]
		if h.State.String() != want {
			t.Errorf("%s: %v, want %s", h.Zone, h.State, want)
		}
	}
	v := e.eng.Check(ctx, rcpt("127.0.0.5", "h.test", "a@spammer.test", "u@example.test"))
	expect(t, "score 3", v, Reject, 554, "dnsbl_score", "DNSBL score 3", "bl.test*2", "dbl.test*1")
	// Listed once (score 2 < 3): no reject; the score goes into a header,
	// and the next rule decides.
	v = e.eng.Check(ctx, &Request{Stage: StageRcpt, ClientAddress: netip.MustParseAddr("127.0.0.5")})
	expect(t, "score 2 falls through", v, Reject, 554, "reject")
	// Allowlisted: permit before the final reject.
	v = e.eng.Check(ctx, rcpt("127.0.0.7", "h.test", "a@mx.test", "u@example.test"))
	expect(t, "allowlisted", v, Permit, 0, "dnsbl_score")
}

func TestDNSBLScoreDefersWhenAListFails(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.DNSBL.Zones = []string{"bl.test*2", "dead.test*2"}
		c.DNSBL.RejectThreshold = 3
		c.Policy.RecipientRestrictions = []string{"dnsbl_score"}
	})
	ctx := context.Background()
	// No health check yet: dead.test times out. 2 + 2 could reach 3: defer.
	v := e.eng.Check(ctx, rcpt("127.0.0.5", "h.test", "", "u@example.test"))
	expect(t, "unknown list", v, Defer, 451, "dnsbl_score", "dead.test")
	// A clean client could reach only 2: the failure cannot change it.
	v = e.eng.Check(ctx, rcpt("127.0.0.9", "h.test", "", "u@example.test"))
	expect(t, "clean despite failure", v, Dunno, 0, "")
	// After the health check marks it dead, it is skipped.
	e.eng.DNSBL().CheckHealth(ctx)
	v = e.eng.Check(ctx, rcpt("127.0.0.5", "h.test", "", "u@example.test"))
	if v.Action != Dunno || !strings.Contains(v.Prepend, "score=2") {
		t.Errorf("dead list skipped: %+v", v)
	}
}

func TestSPF(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.Policy.SenderRestrictions = []string{"check_spf"}
		c.Policy.SPF.PermError = "reject"
	})
	ctx := context.Background()
	mail := func(ip, from string) Verdict {
		return e.eng.Check(ctx, &Request{Stage: StageMail, ClientAddress: netip.MustParseAddr(ip), Helo: "h.test", Sender: from})
	}
	header := func(name string, v Verdict, result string) {
		t.Helper()
		if v.Action != Dunno || !strings.HasPrefix(v.Prepend, "Received-SPF: "+result+" ") {
			t.Errorf("%s: %+v, want Dunno with Received-SPF: %s", name, v, result)
		}
	}
	v := mail("127.0.0.30", "a@pass.spf.test")
	header("pass", v, "pass")
	// RFC 7208 §9.1: key-value values are dot-atoms or quoted-strings;
	// an address has an "@" and is quoted.
	if want := `Received-SPF: pass (matched ip) client-ip=127.0.0.30; envelope-from="a@pass.spf.test"; helo=h.test;`; v.Prepend != want {
		t.Errorf("Received-SPF header\n got %s\nwant %s", v.Prepend, want)
	}
	if got := kvValue(`we"ird\x y`); got != `"we\"ird\\x y"` {
		t.Errorf("kvValue quoting: %s", got)
	}
	v = mail("127.0.0.31", "a@fail.spf.test")
	expect(t, "fail", v, Reject, 550, "check_spf", "SPF fail")
	if v.Enhanced != "5.7.23" {
		t.Errorf("fail enhanced %q, want 5.7.23 (RFC 7372)", v.Enhanced)
	}
	header("softfail", mail("127.0.0.31", "a@soft.spf.test"), "softfail")
	header("neutral", mail("127.0.0.31", "a@neutral.spf.test"), "neutral")
	header("none", mail("127.0.0.31", "a@mx.test"), "none")
	v = mail("127.0.0.31", "a@temp.spf.test")
	expect(t, "temperror", v, Defer, 451, "check_spf", "SPF temporary error")
	if v.Enhanced != "4.7.24" {
		t.Errorf("temperror enhanced %q, want 4.7.24", v.Enhanced)
	}
	v = mail("127.0.0.31", "a@perm.spf.test")
	expect(t, "permerror", v, Reject, 550, "check_spf", "SPF permanent error")
	if v.Enhanced != "5.7.24" {
		t.Errorf("permerror enhanced %q, want 5.7.24", v.Enhanced)
	}
}

func TestDeferIfPermitYieldsToLaterReject(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.Policy.SenderRestrictions = []string{"reject_unknown_sender_domain", "reject_rbl_client bl.test", "permit"}
	})
	ctx := context.Background()
	v := e.eng.Check(ctx, &Request{Stage: StageMail, ClientAddress: netip.MustParseAddr("127.0.0.5"), Sender: "a@sfdomain.test"})
	expect(t, "later reject wins", v, Reject, 554, "reject_rbl_client")
	v = e.eng.Check(ctx, &Request{Stage: StageMail, ClientAddress: netip.MustParseAddr("127.0.0.9"), Sender: "a@sfdomain.test"})
	expect(t, "permit becomes defer", v, Defer, 450, "reject_unknown_sender_domain")
}

func TestConfigErrorsNameTheInput(t *testing.T) {
	for _, tc := range []struct {
		edit func(c *config.Config)
		want string
	}{
		{func(c *config.Config) { c.Policy.RecipientRestrictions = []string{"reject_everything"} }, `"reject_everything"`},
		{func(c *config.Config) { c.Policy.RecipientRestrictions = []string{"reject_rbl_client"} }, "reject_rbl_client"},
		{func(c *config.Config) { c.Policy.ConnectRestrictions = []string{"check_client_access nope"} }, `"nope"`},
		{func(c *config.Config) { c.DNSBL.Zones = []string{"zen.spamhaus.org=127.0.0.[9..2]"} }, "127.0.0.[9..2]"},
		{func(c *config.Config) { c.Policy.SPF.PermError = "explode" }, `"explode"`},
	} {
		cfg := config.Default()
		tc.edit(cfg)
		err := cfg.Finish(t.TempDir())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v does not name %s", err, tc.want)
		}
	}
}

func TestPostfixStageNames(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.Policy.HeloRestrictions = []string{"reject"}
		c.Policy.EndOfDataRestrictions = []string{"defer"}
	})
	ctx := context.Background()
	for _, st := range []Stage{"HELO", "EHLO", "helo"} {
		expect(t, string(st), e.eng.Check(ctx, &Request{Stage: st, ClientAddress: netip.MustParseAddr("192.0.2.1")}), Reject, 554, "reject")
	}
	expect(t, "END-OF-MESSAGE", e.eng.Check(ctx, &Request{Stage: "END-OF-MESSAGE"}), Defer, 450, "defer")
	expect(t, "VRFY", e.eng.Check(ctx, &Request{Stage: "VRFY"}), Dunno, 0, "")
}

// TestRHSBLSkipsAddressesAndBadNames: "HELO 192.0.2.1" and a sender
// domain that is an address are not domain-list queries; they neither
// defer the client nor touch the list's health (Spamhaus DBL answers
// 127.0.1.255 to them).
func TestRHSBLSkipsAddressesAndBadNames(t *testing.T) {
	dns := world(t)
	dns.Add(t, "192.0.2.1.dbl.test. 300 IN A 127.0.1.255")
	e := newEnv(t, dns, func(c *config.Config) {
		c.Policy.RecipientRestrictions = []string{"reject_rhsbl_helo dbl.test", "reject_rhsbl_sender dbl.test"}
	})
	ctx := context.Background()
	before := dns.Queries.Load()
	for _, tc := range []struct{ helo, from string }{
		{"192.0.2.1", "a@192.0.2.1"}, {"[192.0.2.1]", "a@[192.0.2.1]"}, {"bad..name", "a@bad..name"},
	} {
		v := e.eng.Check(ctx, rcpt("127.0.0.9", tc.helo, tc.from, "u@example.test"))
		expect(t, "helo "+tc.helo, v, Dunno, 0, "")
	}
	if n := dns.Queries.Load() - before; n != 0 {
		t.Errorf("%d DNS queries for address-shaped names", n)
	}
	for _, h := range e.eng.DNSBL().HealthReport() {
		if h.State.Disabled() {
			t.Errorf("%s disabled by a client's HELO: %v %s", h.Zone, h.State, h.Detail)
		}
	}
	// A listed HELO name is still refused.
	v := e.eng.Check(ctx, rcpt("127.0.0.9", "spammer.test", "a@mx.test", "u@example.test"))
	expect(t, "listed helo", v, Reject, 554, "reject_rhsbl_helo", "spammer.test", "dbl.test")
}

// TestDNSBLScoreFailedAllowlistDefers: a client over the threshold whose
// allowlist could not be asked is deferred, not rejected: the allowlist's
// negative weight might have kept it under the threshold.
func TestDNSBLScoreFailedAllowlistDefers(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.DNSBL.Zones = []string{"bl.test*3", "sf.test*-5"}
		c.DNSBL.RejectThreshold = 3
		c.Policy.RecipientRestrictions = []string{"dnsbl_score"}
	})
	ctx := context.Background()
	v := e.eng.Check(ctx, rcpt("127.0.0.5", "h.test", "", "u@example.test"))
	expect(t, "listed, allowlist failed", v, Defer, 451, "dnsbl_score", "temporary failure", "sf.test")
	if !v.IfPermit {
		t.Errorf("a failed list should give defer_if_permit: %+v", v)
	}
	// Even the allowlist's weight could not save a score of 9: reject.
	e2 := newEnv(t, world(t), func(c *config.Config) {
		c.DNSBL.Zones = []string{"bl.test*9", "sf.test*-5"}
		c.DNSBL.RejectThreshold = 3
		c.Policy.RecipientRestrictions = []string{"dnsbl_score"}
	})
	v = e2.eng.Check(ctx, rcpt("127.0.0.5", "h.test", "", "u@example.test"))
	expect(t, "listed beyond any allowlist", v, Reject, 554, "dnsbl_score", "DNSBL score 9")
}

// TestFCrDNSFamilyFailureIsTemporary: reject_unknown_client_hostname
// confirms a client's reverse name with the records of the client's own
// family. An A SERVFAIL for an IPv4 client is a 450 even though the name's
// AAAA records answer (they could never confirm it).
func TestFCrDNSFamilyFailureIsTemporary(t *testing.T) {
	dns := world(t)
	dns.Add(t,
		"24.0.0.127.in-addr.arpa. 300 IN PTR half.rdns.test.",
		"half.rdns.test. 300 IN AAAA 2001:db8::24",
		"25.0.0.127.in-addr.arpa. 300 IN PTR dual.rdns.test.",
		"dual.rdns.test. 300 IN A 127.0.0.25",
		"dual.rdns.test. 300 IN AAAA 2001:db8::25",
	)
	dns.ServFailType("half.rdns.test", 1)  // A
	dns.ServFailType("dual.rdns.test", 28) // AAAA
	e := newEnv(t, dns, func(c *config.Config) {
		c.Policy.ConnectRestrictions = []string{"reject_unknown_client_hostname"}
	})
	ctx := context.Background()
	conn := func(ip string) Verdict {
		return e.eng.Check(ctx, &Request{Stage: StageConnect, ClientAddress: netip.MustParseAddr(ip), ClientName: "unknown"})
	}
	expect(t, "A SERVFAIL, AAAA answers", conn("127.0.0.24"), Defer, 450, "reject_unknown_client_hostname", "temporary")
	// The AAAA failure does not matter to an IPv4 client confirmed by A.
	expect(t, "A confirms, AAAA SERVFAIL", conn("127.0.0.25"), Dunno, 0, "")
}

// TestWarnActionNamesItsRule: an access table's WARN is logged with the
// rule that matched, and evaluation goes on.
func TestWarnActionNamesItsRule(t *testing.T) {
	e := newEnv(t, world(t), func(c *config.Config) {
		c.Policy.ConnectRestrictions = []string{"check_client_access watch", "reject"}
		c.Policy.Access = []config.AccessTable{{Name: "watch", Entries: []string{"127.0.0.43 WARN suspicious neighbour"}}}
	})
	v := e.eng.Check(context.Background(), &Request{Stage: StageConnect, ClientAddress: netip.MustParseAddr("127.0.0.43")})
	expect(t, "warn then reject", v, Reject, 554, "reject")
	var warn string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, "policy warn") {
			warn = l
		}
	}
	if !strings.Contains(warn, "rule=check_client_access") || !strings.Contains(warn, "suspicious neighbour") {
		t.Errorf("WARN log line %q does not name rule check_client_access and its text\n%s", warn, e.logs.String())
	}
}

func TestParseActionEnhancedCodes(t *testing.T) {
	for _, tc := range []struct {
		in        string
		action    Action
		code      int
		enh, text string
		ifPermit  bool
	}{
		{"REJECT 5.7.9 go away", Reject, 554, "5.7.9", "go away", false},
		{"REJECT go away", Reject, 554, "5.7.1", "go away", false},
		{"REJECT 4.7.9 wrong class", Reject, 554, "5.7.1", "4.7.9 wrong class", false},
		{"DEFER 4.3.2 busy", Defer, 450, "4.3.2", "busy", false},
		{"DEFER_IF_PERMIT 4.7.26 greylisted", Defer, 450, "4.7.26", "greylisted", true},
		{"REJECT", Reject, 554, "5.7.1", "Access denied", false},
		{"550 5.7.25 no rDNS", Reject, 550, "5.7.25", "no rDNS", false},
	} {
		v, err := ParseAction(tc.in)
		if err != nil || v.Action != tc.action || v.Code != tc.code || v.Enhanced != tc.enh || v.Text != tc.text || v.IfPermit != tc.ifPermit {
			t.Errorf("ParseAction(%q) = %+v, %v; want %v %d %s %q ifpermit=%v", tc.in, v, err, tc.action, tc.code, tc.enh, tc.text, tc.ifPermit)
		}
	}
	if _, err := ParseAction("FROB x"); err == nil || !strings.Contains(err.Error(), `"FROB"`) {
		t.Errorf("bad action: %v, want an error naming it", err)
	}
}

// TestErrorCodeAnswerIsTemporary: an error code (127.255.255.254) for one
// client is what `dnsbl check` calls "could not ask" (exit 2): the policy
// answers a temporary failure, not a pass, and does not switch the list
// off for everyone (issue 13 item 6: one rule, dnsbl.Classify).
func TestErrorCodeAnswerIsTemporary(t *testing.T) {
	dns := world(t)
	dns.Add(t, "9.0.0.127.bl.test. 300 IN A 127.255.255.254")
	e := newEnv(t, dns, func(c *config.Config) {
		c.Policy.RecipientRestrictions = []string{"reject_rbl_client bl.test"}
	})
	ctx := context.Background()
	v := e.eng.Check(ctx, rcpt("127.0.0.9", "h.test", "a@mx.test", "u@example.test"))
	expect(t, "error code", v, Defer, 451, "reject_rbl_client", "temporary failure", "bl.test")
	if !v.IfPermit {
		t.Errorf("error code: %+v, want defer_if_permit", v)
	}
	v = e.eng.Check(ctx, rcpt("127.0.0.5", "h.test", "a@mx.test", "u@example.test"))
	expect(t, "listed client after the error code", v, Reject, 554, "reject_rbl_client", "blocked using bl.test")
}
