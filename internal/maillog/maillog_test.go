package maillog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	ip   = netip.MustParseAddr("192.0.2.7")
	ip6  = netip.MustParseAddr("2001:db8::7")
	conn = Conn{CID: "3f2a01", Client: ip, Listener: "submission"}
)

// roundTrips holds one case per Kind: what the writer is called with and
// the Record the parser must give back.
var roundTrips = []struct {
	kind  Kind
	write func(context.Context, *Logger)
	want  Record
}{
	{KindConnected, func(ctx context.Context, m *Logger) { m.Connected(ctx, conn, true) },
		Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission"}},
	{KindDisconnected, func(ctx context.Context, m *Logger) {
		m.Disconnected(ctx, conn, Session{Helo: "mx.example", TLS: true, User: "bob", Messages: 2, BadCmds: 1, AuthFails: 3, Duration: 1500 * time.Millisecond})
	}, Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission", Helo: "mx.example", TLS: true, User: "bob",
		Messages: 2, BadCmds: 1, AuthFails: 3, Duration: 1500 * time.Millisecond}},
	{KindAuthOK, func(ctx context.Context, m *Logger) { m.AuthOK(ctx, conn, "PLAIN", "bob@example.org") },
		Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission", Mech: "PLAIN", User: "bob@example.org"}},
	{KindAuthFailed, func(ctx context.Context, m *Logger) {
		m.AuthFailed(ctx, Conn{Client: ip6, Listener: "smtp"}, "LOGIN", `we "ird" user=x`, "invalid credentials")
	}, Record{Level: slog.LevelWarn, Client: ip6, Listener: "smtp", Mech: "LOGIN", User: `we "ird" user=x`, Reason: "invalid credentials"}},
	{KindAccepted, func(ctx context.Context, m *Logger) {
		m.Accepted(ctx, conn, Message{ID: "A1B2C3", User: "bob", From: "bob@example.org", Nrcpt: 3, Size: 12345})
	}, Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission", ID: "A1B2C3", User: "bob", From: "bob@example.org", Nrcpt: 3, Size: 12345}},
	{KindRejected, func(ctx context.Context, m *Logger) {
		m.Rejected(ctx, conn, Refusal{Rule: "dnsbl:zen.example", Code: "554 5.7.1", Rcpt: "a@example.org", Text: "Service unavailable; listed"})
	}, Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission", Rule: "dnsbl:zen.example", Code: "554 5.7.1", Rcpt: "a@example.org", Text: "Service unavailable; listed"}},
	{KindRelayDenied, func(ctx context.Context, m *Logger) {
		m.RelayDenied(ctx, conn, Refusal{Rule: "reject_unauth_destination", Code: "554 5.7.1", Rcpt: "x@elsewhere.example", Text: "Relay access denied"})
	}, Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission", Rule: "reject_unauth_destination", Code: "554 5.7.1", Rcpt: "x@elsewhere.example", Text: "Relay access denied"}},
	{KindLimitReached, func(ctx context.Context, m *Logger) { m.LimitReached(ctx, conn, "limits.max_recipients", 100) },
		Record{Level: slog.LevelWarn, CID: "3f2a01", Client: ip, Listener: "submission", Limit: "limits.max_recipients", Value: "100"}},
	{KindLimitReached, func(ctx context.Context, m *Logger) {
		m.SendLimitReached(ctx, Conn{Client: ip, Listener: "postfix"}, "delivery.rate_limits.user_messages_per_hour", 200, "bob", "bob@example.org")
	}, Record{Level: slog.LevelWarn, Client: ip, Listener: "postfix", Limit: "delivery.rate_limits.user_messages_per_hour", Value: "200", User: "bob", From: "bob@example.org"}},
	{KindLimitReached, func(ctx context.Context, m *Logger) {
		m.SendLimitReached(ctx, Conn{}, "delivery.rate_limits.uid_messages_per_hour", 50, "www-data", "www-data@example.org")
	}, Record{Level: slog.LevelWarn, Limit: "delivery.rate_limits.uid_messages_per_hour", Value: "50", User: "www-data", From: "www-data@example.org"}},
	{KindNonSMTP, func(ctx context.Context, m *Logger) { m.NonSMTP(ctx, conn, "GET / HTTP/1.1") },
		Record{Level: slog.LevelWarn, CID: "3f2a01", Client: ip, Listener: "submission", Text: "GET / HTTP/1.1"}},
	{KindLostConnection, func(ctx context.Context, m *Logger) { m.LostConnection(ctx, conn, "AUTH") },
		Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission", After: "AUTH"}},
	{KindTLSFailed, func(ctx context.Context, m *Logger) {
		m.TLSFailed(ctx, conn, errors.New("remote error: tls: bad certificate"))
	},
		Record{Level: slog.LevelInfo, CID: "3f2a01", Client: ip, Listener: "submission", Err: "remote error: tls: bad certificate"}},
	{KindDelivered, func(ctx context.Context, m *Logger) {
		m.Delivered(ctx, Delivery{ID: "A1B2C3", Rcpt: "c@example.net", Attempt: 1, Reply: "250 2.0.0 ok", Relay: "mx.example.net[198.51.100.2]:25"})
	}, Record{Level: slog.LevelInfo, ID: "A1B2C3", Rcpt: "c@example.net", Attempt: 1, Reply: "250 2.0.0 ok", Relay: "mx.example.net[198.51.100.2]:25"}},
	{KindDeferred, func(ctx context.Context, m *Logger) {
		m.Deferred(ctx, Delivery{ID: "A1B2C3", Rcpt: "c@example.net", Attempt: 2, Reply: "451 4.7.1 greylisted", RetryIn: 15 * time.Minute})
	}, Record{Level: slog.LevelInfo, ID: "A1B2C3", Rcpt: "c@example.net", Attempt: 2, Reply: "451 4.7.1 greylisted", RetryIn: 15 * time.Minute}},
	{KindBounced, func(ctx context.Context, m *Logger) {
		m.Bounced(ctx, Delivery{ID: "A1B2C3", Rcpt: "c@example.net", Attempt: 1, Reply: "550 5.1.1 no such user", Reason: "failed permanently"})
	}, Record{Level: slog.LevelWarn, ID: "A1B2C3", Rcpt: "c@example.net", Attempt: 1, Reply: "550 5.1.1 no such user", Reason: "failed permanently"}},
	{KindHeld, func(ctx context.Context, m *Logger) { m.Held(ctx, "A1B2C3", "bob", "account suspended") },
		Record{Level: slog.LevelWarn, ID: "A1B2C3", User: "bob", Reason: "account suspended"}},
	{KindDSNQueued, func(ctx context.Context, m *Logger) { m.DSNQueued(ctx, "A1B2C3", "D4E5F6", "bob@example.org", 2, 1834) },
		Record{Level: slog.LevelInfo, ID: "A1B2C3", DSNID: "D4E5F6", Rcpt: "bob@example.org", Nrcpt: 2, Size: 1834}},
	{KindBanned, func(ctx context.Context, m *Logger) {
		m.Banned(ctx, netip.MustParsePrefix("192.0.2.0/24"), time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC), 2, "auth_failure from 192.0.2.7 via postfix")
	}, Record{Level: slog.LevelWarn, Prefix: netip.MustParsePrefix("192.0.2.0/24"), Until: time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC), Count: 2, Reason: "auth_failure from 192.0.2.7 via postfix"}},
	{KindUnbanned, func(ctx context.Context, m *Logger) {
		m.Unbanned(ctx, netip.MustParsePrefix("2001:db8::/64"), "expired")
	},
		Record{Level: slog.LevelInfo, Prefix: netip.MustParsePrefix("2001:db8::/64"), Reason: "expired"}},
	{KindPolicyVerdict, func(ctx context.Context, m *Logger) {
		m.PolicyVerdict(ctx, Verdict{Rule: "reject_unauth_destination", Action: "reject", Code: "554", Text: "5.7.1 Relay access denied", Stage: "RCPT",
			Client: ip, Helo: "x", From: "a@b.example", Rcpt: "c@d.example", User: "", QueueID: "Q1"}, false)
	}, Record{Level: slog.LevelInfo, Rule: "reject_unauth_destination", Action: "reject", Code: "554", Text: "5.7.1 Relay access denied", Stage: "RCPT",
		Client: ip, Helo: "x", From: "a@b.example", Rcpt: "c@d.example", ID: "Q1"}},
	{KindPolicyWarn, func(ctx context.Context, m *Logger) {
		m.PolicyVerdict(ctx, Verdict{Rule: "reject_rbl_client", Action: "reject", Code: "554", Stage: "CONNECT", Client: ip}, true)
	}, Record{Level: slog.LevelWarn, Rule: "reject_rbl_client", Action: "reject", Code: "554", Stage: "CONNECT", Client: ip}},
	{KindEgressBlocked, func(ctx context.Context, m *Logger) {
		m.EgressBlocked(ctx, Egress{UID: 33, User: "www-data", Dst: netip.MustParseAddrPort("198.51.100.9:25"), SrcPort: 40000, PID: 1234,
			Exe: "/usr/bin/php8.2", Cmdline: "php /var/www/x.php", Cwd: "/var/www", PPID: 1, Parent: "php-fpm: pool www"})
	}, Record{Level: slog.LevelWarn, UID: 33, User: "www-data", Dst: netip.MustParseAddrPort("198.51.100.9:25"), SrcPort: 40000, PID: 1234,
		Exe: "/usr/bin/php8.2", Cmdline: "php /var/www/x.php", Cwd: "/var/www", PPID: 1, Parent: "php-fpm: pool www"}},
	{KindEgressAlert, func(ctx context.Context, m *Logger) {
		m.EgressAlert(ctx, Egress{UID: 1001, User: "eve", Dst: netip.MustParseAddrPort("[2001:db8::25]:587"), Reason: "process gone"}, 50, time.Minute)
	}, Record{Level: slog.LevelWarn, UID: 1001, User: "eve", Dst: netip.MustParseAddrPort("[2001:db8::25]:587"), Reason: "process gone", Count: 50, Duration: time.Minute}},
}

func TestRoundTripEveryRecord(t *testing.T) {
	covered := map[Kind]bool{}
	for _, format := range []string{"text", "json"} {
		for _, tc := range roundTrips {
			covered[tc.kind] = true
			var buf bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			if format == "json" {
				h = slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			}
			// Extra attributes from a logger's With must not disturb the reading.
			m := New(slog.New(h).With("component", "test"))
			before := time.Now().Add(-time.Second)
			tc.write(context.Background(), m)
			line := buf.String()
			if strings.Count(line, "\n") != 1 {
				t.Fatalf("%s/%s: want one line, got %q", format, tc.kind, line)
			}
			if !IsRecord(line) {
				t.Errorf("%s/%s: IsRecord false for %q", format, tc.kind, line)
			}
			got, ok := Parse(line)
			if !ok {
				t.Fatalf("%s/%s: Parse failed on %q", format, tc.kind, line)
			}
			if got.Time.Before(before) || got.Time.After(time.Now().Add(time.Second)) {
				t.Errorf("%s/%s: time %v not now", format, tc.kind, got.Time)
			}
			want := tc.want
			want.Kind, want.Time = tc.kind, got.Time
			if want.UID == 0 && tc.kind != KindEgressBlocked && tc.kind != KindEgressAlert {
				want.UID = -1
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s/%s: round trip\n line %s\n got  %+v\n want %+v", format, tc.kind, line, got, want)
			}
		}
	}
	for _, k := range Kinds {
		if !covered[k] {
			t.Errorf("no round-trip case for %q", k)
		}
	}
}

func TestParseRefusesWhatIsNotARecord(t *testing.T) {
	for _, s := range []string{
		"",
		`time=2026-03-01T10:00:00Z level=INFO msg="guard: sync" err=x`,
		`{"time":"2026-03-01T10:00:00Z","level":"INFO","msg":"something else"}`,
		`postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed`,
		`time=2026-03-01T10:00:00Z level=INFO msg="auth failed`, // cut off
		`{"time":"2026-03-01T10:00:00Z","msg":`,
	} {
		if r, ok := Parse(s); ok {
			t.Errorf("Parse(%q) = %+v, want false", s, r)
		}
	}
}

func TestParseOlderMessages(t *testing.T) {
	r, ok := Parse(`time=2026-03-01T10:00:00Z level=WARN msg="queue: delivery expired" id=X rcpt=a@b attempt=9 reply="451 x" lifetime=120h0m0s`)
	if !ok || r.Kind != KindBounced || r.Reason != "expired" || r.ID != "X" {
		t.Fatalf("old expired record: %+v %v", r, ok)
	}
	r, ok = Parse(`time=2026-03-01T10:00:00Z level=INFO msg="ban expired" prefix=192.0.2.0/24`)
	if !ok || r.Kind != KindUnbanned || r.Prefix.String() != "192.0.2.0/24" {
		t.Fatalf("old ban expired record: %+v %v", r, ok)
	}
}

func TestJSONEscapes(t *testing.T) {
	r, ok := Parse(`{"time":"2026-03-01T10:00:00Z","level":"WARN","msg":"auth failed","grp":{"a":"}","b":[1,2]},"client":"192.0.2.7","user":"b\u00f6b \"x\"\n\ud83d\ude00","mechanism":null}`)
	if !ok || r.User != "böb \"x\"\n😀" || r.Client != ip || r.Mech != "" {
		t.Fatalf("got %+v %v", r, ok)
	}
}

func TestEvent(t *testing.T) {
	var buf bytes.Buffer
	m := New(slog.New(slog.NewTextHandler(&buf, nil)))
	m.AuthFailed(context.Background(), conn, "PLAIN", "bob", "invalid credentials")
	r, _ := Parse(buf.String())
	e, ok := r.Event()
	if !ok || e.Kind != "auth_failure" || e.IP != ip || e.User != "bob" || e.Service != "submission" || e.Source != Source {
		t.Fatalf("event %+v %v", e, ok)
	}
	buf.Reset()
	m.Delivered(context.Background(), Delivery{ID: "X", Rcpt: "a@b"})
	r, _ = Parse(buf.String())
	if _, ok := r.Event(); ok {
		t.Fatal("a delivery is not a guard event")
	}
}

func TestNilLoggerDiscards(t *testing.T) {
	var m *Logger
	m.AuthFailed(context.Background(), conn, "PLAIN", "x", "y")
	New(nil).Banned(context.Background(), netip.MustParsePrefix("192.0.2.0/24"), time.Now(), 1, "x")
}
