package report

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/maillog"
)

// The same local user is one row whether its mail went through sendmail
// (the milter's accepted and held messages) or it tried port 25 itself
// (egress blocks); a login is a row of its own.
func TestSendersByActor(t *testing.T) {
	var buf bytes.Buffer
	ctx := context.Background()
	m := maillog.New(slog.New(slog.NewTextHandler(&buf, nil)))
	for range 3 {
		m.Milter(ctx, maillog.MilterDecision{ID: "A1", User: "www-data", UID: 33, Nrcpt: 1, Action: maillog.MilterAccept})
	}
	for range 2 {
		m.Milter(ctx, maillog.MilterDecision{ID: "A2", User: "www-data", UID: 33, Nrcpt: 1, Action: maillog.MilterQuarantine,
			Rule: "delivery.rate_limits.local_messages_per_hour"})
	}
	m.EgressBlocked(ctx, maillog.Egress{UID: 33, User: "www-data", Dst: netip.MustParseAddrPort("198.51.100.25:25"), PID: 9, Exe: "/usr/bin/php"})
	m.Milter(ctx, maillog.MilterDecision{User: "bob", UID: -1, Client: netip.MustParseAddr("192.0.2.7"), Action: maillog.MilterReject, Rule: "header_from_binding"})
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadLines(strings.NewReader(buf.String()), fixtureParser()); err != nil {
		t.Fatal(err)
	}
	sum := a.Summary()
	want := []ActorRow{{Who: "www-data (uid 33)", Accepted: 3, Held: 2, EgressBlocks: 1}, {Who: "bob", Refused: 1}}
	if len(sum.Abuse.Actors) != 2 || sum.Abuse.Actors[0] != want[0] || sum.Abuse.Actors[1] != want[1] {
		t.Fatalf("actors %+v, want %+v", sum.Abuse.Actors, want)
	}
	var text bytes.Buffer
	if err := sum.WriteText(&text, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "relayguard senders by local user or login") || !strings.Contains(text.String(), "www-data (uid 33)") {
		t.Errorf("text report lacks the senders table:\n%s", text.String())
	}
}
