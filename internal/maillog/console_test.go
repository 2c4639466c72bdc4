package maillog

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/event"
)

func init() {
	roundTrips = append(roundTrips,
		struct {
			kind  Kind
			write func(context.Context, *Logger)
			want  Record
		}{KindConsoleAction, func(ctx context.Context, m *Logger) {
			m.ConsoleAction(ctx, ConsoleAct{Admin: "ops, token 7", Client: netip.MustParseAddr("2001:db8::5"), Action: "unban",
				Target: "198.51.100.0/24", Reason: `false positive: "office" NAT`, Err: "guard: 198.51.100.0/24 is not banned"})
		}, Record{Level: slog.LevelWarn, User: "ops, token 7", Client: netip.MustParseAddr("2001:db8::5"), Action: "unban",
			Text: "198.51.100.0/24", Reason: `false positive: "office" NAT`, Err: "guard: 198.51.100.0/24 is not banned"}},
	)
}

// A failed console login is an auth failure of the console's listener,
// read back as the guard's event: watch following serve's log bans a
// console brute force as serve does. The admin name tried is not a mail
// account and stays out of the event. An action is no event about a client.
func TestConsoleRecordsAsEvents(t *testing.T) {
	client := netip.MustParseAddr("198.51.100.9")
	var buf bytes.Buffer
	m := New(slog.New(slog.NewTextHandler(&buf, nil)))
	ctx := context.Background()
	m.AuthFailed(ctx, Conn{Client: client, Listener: ConsoleListener}, "password", "ops", "invalid credentials")
	m.ConsoleAction(ctx, ConsoleAct{Admin: "ops", Client: client, Action: "queue.release", Target: "A1"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	r, ok := Parse(lines[0])
	if !ok {
		t.Fatalf("not parsed: %q", lines[0])
	}
	e, ok := r.Event()
	if !ok || e.Kind != event.AuthFailure || e.IP != client || e.Service != ConsoleListener || e.User != "" {
		t.Errorf("failed console login: event %+v, %v", e, ok)
	}
	r, ok = Parse(lines[1])
	if !ok || r.Kind != KindConsoleAction || r.Level != slog.LevelInfo || r.Err != "" {
		t.Fatalf("action record %+v, %v from %q", r, ok, lines[1])
	}
	if _, ok := r.Event(); ok {
		t.Error("a console action became a guard event")
	}
}
