package maillog

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/relayguard/relayguard/internal/event"
)

func init() {
	roundTrips = append(roundTrips,
		struct {
			kind  Kind
			write func(context.Context, *Logger)
			want  Record
		}{KindMilter, func(ctx context.Context, m *Logger) {
			m.Milter(ctx, MilterDecision{ID: "4XyZ1", User: "www-data", UID: 33, From: "www-data@example.org", Nrcpt: 2,
				Action: MilterQuarantine, Rule: "delivery.rate_limits.local_messages_per_hour", Text: "local user www-data (uid 33) exceeded its limit"})
		}, Record{Level: slog.LevelWarn, ID: "4XyZ1", User: "www-data", UID: 33, From: "www-data@example.org", Nrcpt: 2,
			Action: MilterQuarantine, Rule: "delivery.rate_limits.local_messages_per_hour", Text: "local user www-data (uid 33) exceeded its limit"}},
		struct {
			kind  Kind
			write func(context.Context, *Logger)
			want  Record
		}{KindAccountSignal, func(ctx context.Context, m *Logger) {
			m.AccountSignal(ctx, "bob", "login_spread", "9 networks within 1h0m0s: 10.1.0.0/16, 10.2.0.0/16")
		}, Record{Level: slog.LevelWarn, User: "bob", Rule: "login_spread", Reason: "9 networks within 1h0m0s: 10.1.0.0/16, 10.2.0.0/16"}},
		struct {
			kind  Kind
			write func(context.Context, *Logger)
			want  Record
		}{KindAccountSuspended, func(ctx context.Context, m *Logger) {
			m.AccountSuspended(ctx, "bob", "login_spread", "9 networks", "mx1 (milter)")
		}, Record{Level: slog.LevelWarn, User: "bob", Rule: "login_spread", Reason: "9 networks", Text: "mx1 (milter)"}},
		struct {
			kind  Kind
			write func(context.Context, *Logger)
			want  Record
		}{KindAccountUnsuspended, func(ctx context.Context, m *Logger) { m.AccountUnsuspended(ctx, "bob", "mx1 (user)") },
			Record{Level: slog.LevelInfo, User: "bob", Text: "mx1 (user)"}},
	)
}

// A milter record is an event about the same actor whether it is a login
// or a local user: accepted messages are message_submitted, limits
// rate_limited.
func TestMilterEvents(t *testing.T) {
	client := netip.MustParseAddr("192.0.2.9")
	for _, tc := range []struct {
		d    MilterDecision
		kind event.Kind
		ok   bool
	}{
		{MilterDecision{User: "bob", UID: -1, Client: client, Action: MilterAccept}, event.MessageSubmitted, true},
		{MilterDecision{User: "www-data", UID: 33, Action: MilterQuarantine, Rule: "delivery.rate_limits.local_messages_per_hour"}, event.RateLimited, true},
		{MilterDecision{User: "bob", UID: -1, Client: client, Action: MilterReject, Rule: "header_from_binding"}, event.Reject, true},
		{MilterDecision{User: "bob", UID: -1, Client: client, Action: MilterTempfail, Rule: "account_suspended"}, "", false},
	} {
		var buf lineBuffer
		New(slog.New(slog.NewTextHandler(&buf, nil))).Milter(context.Background(), tc.d)
		r, ok := Parse(buf.String())
		if !ok {
			t.Fatalf("parse %q", buf.String())
		}
		e, ok := r.Event()
		if ok != tc.ok || e.Kind != tc.kind || ok && (e.User != tc.d.User || e.IP != tc.d.Client) {
			t.Errorf("%+v: event %+v %v, want kind %q %v", tc.d, e, ok, tc.kind, tc.ok)
		}
		if ok && tc.d.UID >= 0 && e.Detail != "uid=33" {
			t.Errorf("local user's event detail %q, want uid=33", e.Detail)
		}
	}
}

type lineBuffer struct{ b []byte }

func (w *lineBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
func (w *lineBuffer) String() string              { return string(w.b) }
