package milter_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

// The milter's counts are shared with another process on its database
// (as serve or the policy service count bob's mail sent elsewhere): bob
// may send 4 messages an hour; the milter counts one through Postfix,
// another process then counts 2 more, and Postfix's next message is the
// 4th (accepted) and the one after it refused — a milter trusting its own
// copy of the counts across the other's write would have let both pass.
func TestSubmissionLimitSharedWithAnotherProcess(t *testing.T) {
	hosttest.NeedPostfix(t)
	dc := hosttest.StartDovecot(t, hosttest.DovecotConfig{Users: map[string]string{"bob": "bob-pw"}})
	h := startMilterHost(t, `
[delivery.rate_limits]
user_messages_per_hour = 4
`, dc.PostfixSASL())
	client := netip.MustParseAddr("198.51.100.21")
	h.n.AddClient(t, client)
	ctx := context.Background()
	send := func() error {
		return h.n.Submit(ctx, client, "192.0.2.1:25", hosttest.Message{User: "bob", Password: "bob-pw", From: "bob@example.test",
			To: []string{"friend@remote.test"}, Header: "From: bob@example.test\r\nTo: friend@remote.test\r\nSubject: hi\r\n"})
	}
	if err := send(); err != nil {
		t.Fatalf("1st message: %v", err)
	}

	// The other process: this test, on the milter's database.
	db, err := store.OpenSQLite(ctx, filepath.Join(h.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := ratelimit.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ratelimit.New(config.RateLimitConfig{UserMessagesPerHour: 4}, st, ratelimit.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := other.Message(ctx, ratelimit.Sender{User: "bob", From: "bob@example.test"}, 1); err != nil {
			t.Fatalf("the other process's message %d: %v", i+2, err)
		}
	}
	other.Flush()

	if err := send(); err != nil {
		t.Fatalf("4th message: %v", err)
	}
	var se *gosmtp.SMTPError
	if err := send(); !errors.As(err, &se) || se.Code != 451 || !strings.Contains(se.Message, "user_messages_per_hour = 4 per hour") {
		t.Fatalf("5th message: %v, want 451 naming user_messages_per_hour", err)
	}
}
