package logwatch

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
)

func newTestParser() *Parser {
	return &Parser{Lines: logline.Parser{
		Loc: time.UTC,
		Now: func() time.Time { return time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) },
	}}
}

func TestParseLines(t *testing.T) {
	type want struct {
		kind  event.Kind
		ip    string
		mech  string
		user  string
		rule  string
		det   string
		svc   string
		src   string
		tm    string // RFC 3339, "" = do not check
		match bool
	}
	tests := []struct {
		name string
		line string
		w    want
	}{
		// Postfix smtpd, traditional timestamps.
		{"sasl login", "Nov 23 10:15:01 mx1 postfix/smtpd[2231]: warning: unknown[212.70.149.4]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
			want{kind: event.AuthFailure, ip: "212.70.149.4", mech: "LOGIN", det: "UGFzc3dvcmQ6", svc: "smtp", src: "postfix", tm: "2026-11-23T10:15:01Z", match: true}},
		{"sasl plain submission", "Nov 23 10:15:02 mx1 postfix/submission/smtpd[2232]: warning: host.example.net[198.51.100.7]: SASL PLAIN authentication failed: ",
			want{kind: event.AuthFailure, ip: "198.51.100.7", mech: "PLAIN", svc: "submission", match: true}},
		{"sasl cram-md5 ipv6", "Nov 23 10:15:03 mx1 postfix/smtpd[2233]: warning: unknown[2001:db8:1::25]: SASL CRAM-MD5 authentication failed: authentication failure",
			want{kind: event.AuthFailure, ip: "2001:db8:1::25", mech: "CRAM-MD5", det: "authentication failure", match: true}},
		{"sasl digest-md5", "Nov  3 01:02:03 mx1 postfix/smtps/smtpd[1]: warning: unknown[203.0.113.9]: SASL DIGEST-MD5 authentication failed: authentication failure",
			want{kind: event.AuthFailure, ip: "203.0.113.9", mech: "DIGEST-MD5", svc: "smtps", tm: "2026-11-03T01:02:03Z", match: true}},
		{"relay denied", "Nov 23 10:16:00 mx1 postfix/smtpd[2240]: NOQUEUE: reject: RCPT from unknown[45.95.147.236]: 554 5.7.1 <spam@victim.example>: Relay access denied; from=<a@b.example> to=<spam@victim.example> proto=ESMTP helo=<WIN-QWERTY>",
			want{kind: event.RelayDenied, ip: "45.95.147.236", rule: "reject_unauth_destination", det: "spam@victim.example", match: true}},
		{"relay denied ipv6", "Nov 23 10:16:00 mx1 postfix/smtpd[2240]: NOQUEUE: reject: RCPT from unknown[2a0e:1c80:1::7]: 454 4.7.1 <x@y.example>: Relay access denied; from=<> to=<x@y.example> proto=SMTP helo=<x>",
			want{kind: event.RelayDenied, ip: "2a0e:1c80:1::7", match: true}},
		{"rbl", "Nov 23 10:17:00 mx1 postfix/smtpd[2241]: NOQUEUE: reject: RCPT from unknown[185.234.219.12]: 554 5.7.1 Service unavailable; Client host [185.234.219.12] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/185.234.219.12; from=<x@y.example> to=<u@ours.example> proto=ESMTP helo=<x>",
			want{kind: event.DNSBLReject, ip: "185.234.219.12", rule: "reject_rbl_client", det: "zen.spamhaus.org", match: true}},
		{"other reject", "Nov 23 10:17:01 mx1 postfix/smtpd[2241]: NOQUEUE: reject: RCPT from unknown[192.0.2.55]: 450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.55]; from=<x@y.example> to=<u@ours.example> proto=ESMTP helo=<x>",
			want{kind: event.Reject, ip: "192.0.2.55", rule: "rcpt", det: "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.55]", match: true}},
		{"lost after auth", "Nov 23 10:18:00 mx1 postfix/smtpd[2250]: lost connection after AUTH from unknown[141.98.10.60]",
			want{kind: event.LostAfterAuth, ip: "141.98.10.60", match: true}},
		{"pipelining", "Nov 23 10:18:01 mx1 postfix/smtpd[2251]: improper command pipelining after EHLO from unknown[80.94.95.81]: MAIL FROM:<a@b>\\r\\n",
			want{kind: event.ProtocolAbuse, ip: "80.94.95.81", rule: "pipelining", match: true}},
		{"non-smtp", "Nov 23 10:18:02 mx1 postfix/smtpd[2252]: warning: non-SMTP command from unknown[64.62.197.2]: GET / HTTP/1.1",
			want{kind: event.ProtocolAbuse, ip: "64.62.197.2", rule: "non_smtp_command", det: "GET / HTTP/1.1", match: true}},
		{"sasl success", "Nov 23 10:19:00 mx1 postfix/submission/smtpd[2260]: 4XyZ1p2q3r: client=laptop.example.org[198.51.100.20], sasl_method=PLAIN, sasl_username=alice@ours.example",
			want{kind: event.AuthSuccess, ip: "198.51.100.20", mech: "PLAIN", user: "alice@ours.example", svc: "submission", match: true}},
		{"postscreen pregreet", "Nov 23 10:20:00 mx1 postfix/postscreen[900]: PREGREET 11 after 0.21 from [193.32.162.27]:59874: EHLO User\\r\\n",
			want{kind: event.ProtocolAbuse, ip: "193.32.162.27", rule: "pregreet", match: true}},
		{"postscreen dnsbl", "Nov 23 10:20:01 mx1 postfix/postscreen[900]: DNSBL rank 3 for [2001:db8:bad::1]:42000",
			want{kind: event.DNSBLReject, ip: "2001:db8:bad::1", rule: "postscreen_dnsbl", det: "rank 3", match: true}},
		{"postscreen reject", "Nov 23 10:20:02 mx1 postfix/postscreen[900]: NOQUEUE: reject: RCPT from [89.248.165.3]:40312: 550 5.7.1 Service unavailable; client [89.248.165.3] blocked using b.barracudacentral.org; from=<a@b.example>, to=<c@d.example>, proto=ESMTP, helo=<x>",
			want{kind: event.DNSBLReject, ip: "89.248.165.3", det: "b.barracudacentral.org", match: true}},
		// RFC 3339 timestamps, with and without a colon in the offset.
		{"rfc3339 colon", "2026-11-23T10:15:01.123456+01:00 mx1 postfix/smtpd[2231]: warning: unknown[212.70.149.20]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
			want{kind: event.AuthFailure, ip: "212.70.149.20", tm: "2026-11-23T09:15:01.123456Z", match: true}},
		{"rfc3339 no colon", "2026-11-23T10:15:01+0100 mx1 postfix/smtpd[2231]: warning: unknown[212.70.149.36]: SASL PLAIN authentication failed: ",
			want{kind: event.AuthFailure, ip: "212.70.149.36", tm: "2026-11-23T09:15:01Z", match: true}},
		// RFC 5424 with <PRI>.
		{"rfc5424", "<22>1 2026-11-23T10:15:01.5Z mx1 postfix/smtpd 2231 - - warning: unknown[212.70.149.52]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
			want{kind: event.AuthFailure, ip: "212.70.149.52", tm: "2026-11-23T10:15:01.5Z", match: true}},
		// Dovecot.
		{"imap auth failed", "Nov 23 11:00:00 mx1 dovecot: imap-login: Disconnected (auth failed, 3 attempts in 12 secs): user=<bob>, method=PLAIN, rip=203.0.113.50, lip=192.0.2.1, TLS, session=<abcd>",
			want{kind: event.AuthFailure, ip: "203.0.113.50", user: "bob", mech: "PLAIN", svc: "imap", det: "3 attempts in 12 secs", src: "dovecot", match: true}},
		{"pop3 aborted ipv6", "Nov 23 11:00:01 mx1 dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<carol>, method=PLAIN, rip=2001:db8:77::9, lip=2001:db8::1, session=<x>",
			want{kind: event.AuthFailure, ip: "2001:db8:77::9", user: "carol", svc: "pop3", match: true}},
		{"submission-login 2.3", "Nov 23 11:00:02 mx1 dovecot: submission-login: Disconnected: Connection closed (auth failed, 2 attempts in 4 secs): user=<dave>, method=LOGIN, rip=198.51.100.66, lip=192.0.2.1, TLS, session=<y>",
			want{kind: event.AuthFailure, ip: "198.51.100.66", user: "dave", mech: "LOGIN", svc: "submission", match: true}},
		{"passwd-file unknown user", "Nov 23 11:00:03 mx1 dovecot: auth: passwd-file(admin,45.148.10.1,<sess1>): unknown user",
			want{kind: event.AuthFailure, ip: "45.148.10.1", user: "admin", rule: "passwd-file", det: "unknown user", match: true}},
		{"passwd-file mismatch", "Nov 23 11:00:04 mx1 dovecot: auth: passwd-file(bob,45.148.10.2): Password mismatch",
			want{kind: event.AuthFailure, ip: "45.148.10.2", user: "bob", det: "password mismatch", match: true}},
		{"pam worker", "Nov 23 11:00:05 mx1 dovecot: auth-worker(3141): pam(bob,2001:db8:5::5,<s>): pam_authenticate() failed: Authentication failure (Password mismatch?)",
			want{kind: event.AuthFailure, ip: "2001:db8:5::5", user: "bob", rule: "pam", det: "password mismatch", match: true}},
		{"imap login success", "Nov 23 11:01:00 mx1 dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=198.51.100.20, lip=192.0.2.1, mpid=4242, TLS, session=<z>",
			want{kind: event.LoginSuccess, ip: "198.51.100.20", user: "alice", svc: "imap", match: true}},
		// relayguard's own log, through syslog and bare (text and JSON).
		// Issue 12 items 6-8: Dovecot's own log file (log_path), client
		// port logging, server-side failures.
		{"dovecot log_path auth", `Dec 06 02:04:12 auth: Info: passwd-file(alice@example.test,192.0.2.50,<dq3LV2bN>): Password mismatch`,
			want{kind: event.AuthFailure, ip: "192.0.2.50", user: "alice@example.test", det: "password mismatch", src: "dovecot", match: true}},
		{"dovecot log_path login", `Dec 06 02:04:30 imap-login: Info: Disconnected: Connection closed (auth failed, 3 attempts in 18 secs): user=<alice@example.test>, method=PLAIN, rip=192.0.2.50, lip=192.0.2.1, session=<x>`,
			want{kind: event.AuthFailure, ip: "192.0.2.50", user: "alice@example.test", mech: "PLAIN", svc: "imap", det: "3 attempts in 18 secs", src: "dovecot", match: true}},
		{"sasl with client port", `Nov 23 10:15:05 mx1 postfix/smtpd[3000]: warning: unknown[192.0.2.42]:54279: SASL LOGIN authentication failed: UGFzc3dvcmQ6`,
			want{kind: event.AuthFailure, ip: "192.0.2.42", mech: "LOGIN", det: "UGFzc3dvcmQ6", svc: "smtp", src: "postfix", match: true}},
		{"auth server down", `Nov 23 10:15:05 mx1 postfix/smtpd[3000]: warning: unknown[192.0.2.42]: SASL PLAIN authentication failed: Connection lost to authentication server`, want{}},
		{"own auth failed", `Nov 23 12:00:00 mx1 relayguard[77]: time=2026-11-23T12:00:00.000Z level=WARN msg="auth failed" client=212.70.149.83 mechanism=PLAIN user=admin listener=submission`,
			want{kind: event.AuthFailure, ip: "212.70.149.83", mech: "PLAIN", user: "admin", svc: "submission", src: "relayguard-log", match: true}},
		{"own relay denied bare", `time=2026-11-23T12:00:01.5Z level=INFO msg="relay access denied" client=2001:db8::66 rcpt=x@y.example`,
			want{kind: event.RelayDenied, ip: "2001:db8::66", det: "x@y.example", tm: "2026-11-23T12:00:01.5Z", match: true}},
		{"own rejected json", `{"time":"2026-11-23T12:00:02Z","level":"INFO","msg":"rejected","client":"192.0.2.99","rule":"helo_invalid"}`,
			want{kind: event.Reject, ip: "192.0.2.99", rule: "helo_invalid", tm: "2026-11-23T12:00:02Z", match: true}},
		// Negative cases.
		{"connect", "Nov 23 10:15:05 mx1 postfix/smtpd[3000]: connect from unknown[212.70.149.4]", want{}},
		{"disconnect", "Nov 23 10:15:05 mx1 postfix/smtpd[3000]: disconnect from unknown[212.70.149.4] ehlo=1 auth=0/1 quit=1 commands=2/3", want{}},
		{"lost after RCPT", "Nov 23 10:15:05 mx1 postfix/smtpd[3000]: lost connection after RCPT from unknown[212.70.149.4]", want{}},
		{"sasl text in other program", "Nov 23 10:15:05 mx1 cron[1]: warning: unknown[212.70.149.4]: SASL LOGIN authentication failed: x", want{}},
		{"bad address", "Nov 23 10:15:05 mx1 postfix/smtpd[1]: warning: unknown[999.1.1.1]: SASL LOGIN authentication failed: x", want{}},
		{"dovecot no rip", "Nov 23 11:00:00 mx1 dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, session=<abcd>", want{}},
		{"dovecot other auth", "Nov 23 11:00:00 mx1 dovecot: auth: passwd-file(bob,1.2.3.4): lookup failed", want{}},
		{"own egress blocked", `Nov 23 12:00:02 mx1 relayguard[88]: time=2026-11-23T12:00:02Z level=WARN msg="egress blocked" uid=2000 user=www-data dst=[2001:db8::25]:25 src_port=40112 pid=4242 exe=/usr/bin/perl cmdline="perl spam.pl"`,
			want{kind: event.EgressBlocked, ip: "2001:db8::25", user: "www-data", rule: "egress", det: "uid=2000 dst=[2001:db8::25]:25 exe=/usr/bin/perl", src: "kernel", match: true}},
		{"own log other msg", `time=2026-11-23T12:00:00Z level=INFO msg="message accepted" client=192.0.2.1`, want{}},
		{"garbage", "hello world", want{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := newTestParser().Parse(tc.line)
			if ok != tc.w.match {
				t.Fatalf("match = %v, want %v (event %+v)", ok, tc.w.match, e)
			}
			if !ok {
				return
			}
			if e.Kind != tc.w.kind {
				t.Errorf("kind = %q, want %q", e.Kind, tc.w.kind)
			}
			if e.IP != netip.MustParseAddr(tc.w.ip) {
				t.Errorf("ip = %s, want %s", e.IP, tc.w.ip)
			}
			check := func(field, got, want string) {
				if want != "" && got != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}
			check("mechanism", e.Mechanism, tc.w.mech)
			check("user", e.User, tc.w.user)
			check("rule", e.Rule, tc.w.rule)
			check("detail", e.Detail, tc.w.det)
			check("service", e.Service, tc.w.svc)
			check("source", e.Source, tc.w.src)
			if e.Time.IsZero() {
				t.Errorf("time is zero")
			}
			if tc.w.tm != "" {
				want, _ := time.Parse(time.RFC3339Nano, tc.w.tm)
				if !e.Time.Equal(want) {
					t.Errorf("time = %s, want %s", e.Time.UTC().Format(time.RFC3339Nano), tc.w.tm)
				}
			}
		})
	}
}

// A file spanning New Year: December lines belong to the year before the
// January ones.
func TestParseNewYear(t *testing.T) {
	p := &Parser{Lines: logline.Parser{Loc: time.UTC, Now: func() time.Time { return time.Date(2027, 1, 1, 0, 5, 0, 0, time.UTC) }}}
	lines := []string{
		"Dec 31 23:59:58 mx1 postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x",
		"Jan  1 00:00:02 mx1 postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x",
	}
	want := []time.Time{time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 2, 0, time.UTC)}
	for i, l := range lines {
		e, ok := p.Parse(l)
		if !ok || !e.Time.Equal(want[i]) {
			t.Errorf("line %d: ok=%v time=%s, want %s", i, ok, e.Time, want[i])
		}
	}
}

func BenchmarkParse(b *testing.B) {
	lines := []string{
		"Nov 23 10:15:01 mx1 postfix/smtpd[2231]: warning: unknown[212.70.149.4]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
		"Nov 23 10:15:05 mx1 postfix/smtp[3000]: 4XyZ1p2q3r: to=<u@example.org>, relay=mx.example.org[192.0.2.10]:25, delay=0.5, dsn=2.0.0, status=sent (250 ok)",
		"Nov 23 10:17:00 mx1 postfix/smtpd[2241]: NOQUEUE: reject: RCPT from unknown[185.234.219.12]: 554 5.7.1 Service unavailable; Client host [185.234.219.12] blocked using zen.spamhaus.org; from=<x@y.example> to=<u@ours.example> proto=ESMTP helo=<x>",
	}
	p := newTestParser()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Parse(lines[i%len(lines)])
	}
}

// Postfix delivery lines become delivered / delivery_failed with the queue
// id and the recipient (the accounts' bad-recipients signal); deferrals,
// local deliveries and other programs are nothing; the SASL success line
// carries its queue id.
func TestParseDeliveryLines(t *testing.T) {
	p := newTestParser()
	for _, tc := range []struct {
		line       string
		kind       event.Kind
		qid, rcpt  string
		shouldMiss bool
	}{
		{line: "Nov 23 10:20:00 mx1 postfix/smtp[2300]: 4XyZ1p2q3r: to=<friend@remote.example>, relay=mx.remote.example[198.51.100.25]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as ABC)",
			kind: event.Delivered, qid: "4XyZ1p2q3r", rcpt: "friend@remote.example"},
		{line: "Nov 23 10:20:01 mx1 postfix/smtp[2301]: 4XyZ1p2q3r: to=<dead@remote.example>, relay=mx.remote.example[198.51.100.25]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.1.1, status=bounced (host mx.remote.example[198.51.100.25] said: 550 5.1.1 <dead@remote.example>: Recipient address rejected: User unknown (in reply to RCPT TO command))",
			kind: event.DeliveryFailed, qid: "4XyZ1p2q3r", rcpt: "dead@remote.example"},
		{line: "Nov 23 10:20:02 mx1 postfix/lmtp[2302]: 5AbC: to=<bob@ours.example>, relay=mail[private/dovecot-lmtp], delay=0.1, dsn=2.0.0, status=sent (250 2.0.0 Saved)",
			kind: event.Delivered, qid: "5AbC", rcpt: "bob@ours.example"},
		{line: "Nov 23 10:20:03 mx1 postfix/smtp[2303]: 6DeF: to=<slow@remote.example>, relay=none, delay=30, dsn=4.4.1, status=deferred (connect to mx.remote.example[198.51.100.25]:25: Connection timed out)", shouldMiss: true},
		{line: "Nov 23 10:20:04 mx1 postfix/local[2304]: 7GhI: to=<root@mx1.ours.example>, relay=local, delay=0, dsn=2.0.0, status=sent (delivered to mailbox)", shouldMiss: true},
	} {
		e, ok := p.Parse(tc.line)
		if tc.shouldMiss {
			if ok {
				t.Errorf("%q: got %+v, want no event", tc.line, e)
			}
			continue
		}
		if !ok || e.Kind != tc.kind || e.QueueID != tc.qid || e.Detail != tc.rcpt || e.IP.IsValid() {
			t.Errorf("%q: got %+v %v", tc.line, e, ok)
		}
	}
	e, ok := p.Parse("Nov 23 10:19:00 mx1 postfix/submission/smtpd[2260]: 4XyZ1p2q3r: client=laptop.example.org[198.51.100.20], sasl_method=PLAIN, sasl_username=alice@ours.example")
	if !ok || e.QueueID != "4XyZ1p2q3r" || e.User != "alice@ours.example" {
		t.Errorf("sasl success line: %+v %v", e, ok)
	}
}

// A Parser told which kinds its caller keeps skips the lines that can only
// give others, and parses the rest as before.
func TestParserWant(t *testing.T) {
	lines := []string{
		"Nov 23 10:00:00 mx1 postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
		"Nov 23 10:00:01 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.2]: 554 5.7.1 <a@b.example>: Relay access denied; from=<x@y.example> to=<a@b.example> proto=ESMTP helo=<h>",
		"Nov 23 10:00:02 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.3]: 554 5.7.1 Service unavailable; Client host [192.0.2.3] blocked using zen.spamhaus.org; from=<x@y.example> to=<a@b.example> proto=ESMTP helo=<h>",
		"Nov 23 10:00:03 mx1 postfix/postscreen[2]: NOQUEUE: reject: RCPT from [192.0.2.4]:5000: 550 5.7.1 Service unavailable; client [192.0.2.4] blocked using zen.spamhaus.org; from=<x@y.example>, to=<a@b.example>, proto=ESMTP, helo=<h>",
		"Nov 23 10:00:04 mx1 postfix/smtp[3]: 4AB12: to=<a@b.example>, relay=mx.b.example[192.0.2.9]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
	}
	kinds := func(want func(event.Kind) bool) string {
		p := &Parser{Want: want}
		var got []string
		for _, l := range lines {
			if e, ok := p.Parse(l); ok {
				got = append(got, string(e.Kind))
			}
		}
		return strings.Join(got, " ")
	}
	all := "auth_failure relay_denied dnsbl_reject dnsbl_reject delivered"
	if got := kinds(nil); got != all {
		t.Errorf("every kind: %s, want %s", got, all)
	}
	if got := kinds(func(k event.Kind) bool { return k == event.AuthFailure }); got != "auth_failure" {
		t.Errorf("auth failures only: %s", got)
	}
	// A wanted kind of a group: the group's lines are parsed (the caller
	// drops the other kinds).
	if got := kinds(func(k event.Kind) bool { return k == event.RelayDenied || k == event.Delivered }); got != all {
		t.Errorf("relay and delivered wanted: %s, want %s", got, all)
	}
}

// A Dovecot login summary stands for at most MaxAttempts attempts: the
// count is the log's text, and a forged "999999991 attempts" (logger -t
// dovecot) made the pairing loop once per attempt under its lock.
func TestDovecotAttemptsBounded(t *testing.T) {
	for _, c := range []struct {
		n    string
		want int
	}{{"3", 3}, {"1000", 1000}, {"1001", MaxAttempts}, {"999999991", MaxAttempts}, {"999999999999999999", MaxAttempts}, {"9999999999999999999", MaxAttempts}} {
		line := "Dec  4 00:35:54 mx1 dovecot: pop3-login: Disconnected (auth failed, " + c.n + " attempts in 2 secs): user=<bob>, method=PLAIN, rip=96.87.32.137, lip=192.0.2.10"
		e, ok := (&Parser{}).Parse(line)
		if !ok || e.Kind != event.AuthFailure || e.Attempts != c.want || e.IP.String() != "96.87.32.137" {
			t.Errorf("%s attempts: %v %s %d %s, want an auth failure of %d attempts from 96.87.32.137", c.n, ok, e.Kind, e.Attempts, e.IP, c.want)
		}
	}
	// Paired and counted whole: one such line is MaxAttempts failures.
	sink := &countingSink{n: map[netip.Addr]int{}}
	e, _ := (&Parser{}).Parse("Dec  4 00:35:54 mx1 dovecot: pop3-login: Disconnected (auth failed, 999999991 attempts in 2 secs): user=<bob>, method=PLAIN, rip=96.87.32.137, lip=192.0.2.10")
	NewOnce(sink).Publish(context.Background(), e)
	if n := sink.n[netip.MustParseAddr("96.87.32.137")]; n != MaxAttempts {
		t.Fatalf("%d failures published, want %d", n, MaxAttempts)
	}
}
