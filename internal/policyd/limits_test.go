package policyd

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

// limitServer runs the policy server with the engine and the real limiter
// over a real SQLite database, and returns a connection to it.
func limitServer(t *testing.T, rl config.RateLimitConfig, action string) (*bufio.ReadWriter, *sql.DB, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.LocalDomains = []string{"example.test"}
	cfg.MyNetworks = []string{"10.9.0.0/16"}
	cfg.Delivery.RateLimits = rl
	cfg.Policy.LimitAction = action
	cfg.Policy.Access = []config.AccessTable{{Name: "t", Entries: []string{"192.0.2.66 REJECT go away"}}}
	cfg.Policy.RecipientRestrictions = []string{"check_client_access t", "permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination"}
	if err := cfg.Finish(dir); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	reg := prometheus.NewRegistry()
	eng, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Registerer: reg, Source: "policyd"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ratelimit.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(rl, st, ratelimit.Options{Log: log, Registerer: reg, Source: "policyd"})
	if err != nil {
		t.Fatal(err)
	}
	mynet := netip.MustParsePrefix("10.9.0.0/16")
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Engine: eng, Logger: log, Registerer: reg, Limits: &Limits{Limiter: lim, Trusted: mynet.Contains, Action: action}}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		db.Close()
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), db, logs
}

// authReq is a request of an authenticated client at stage for message
// instance inst.
func authReq(stage, inst, user, rcpt string, nrcpt int) map[string]string {
	r := req("192.0.2.10", rcpt)
	r["protocol_state"] = stage
	r["instance"] = inst
	r["sasl_method"] = "PLAIN"
	r["sasl_username"] = user
	r["sender"] = user + "@example.test"
	r["recipient_count"] = fmt.Sprint(nrcpt)
	return r
}

// Messages, not RCPT requests, are counted: three messages with three
// recipients each pass a limit of 3 messages per hour, the fourth message's
// every recipient is deferred naming the limit, and another user is not
// affected.
func TestPolicyLimitCountsMessagesAtRCPT(t *testing.T) {
	rw, _, logs := limitServer(t, config.RateLimitConfig{UserMessagesPerHour: 3}, config.LimitDeferIfPermit)
	for m := 1; m <= 4; m++ {
		for r := 1; r <= 3; r++ {
			got := ask(t, rw, authReq("RCPT", fmt.Sprintf("inst.%d", m), "bob", fmt.Sprintf("r%d@remote.test", r), r-1))
			switch {
			case m <= 3 && got != "action=OK":
				t.Fatalf("message %d rcpt %d: %q, want OK (permit_sasl_authenticated)", m, r, got)
			case m == 4 && (!strings.HasPrefix(got, "action=DEFER_IF_PERMIT 4.7.1 ") || !strings.Contains(got, "user_messages_per_hour = 3 per hour")):
				t.Fatalf("message 4 rcpt %d: %q, want DEFER_IF_PERMIT 4.7.1 naming user_messages_per_hour", r, got)
			}
		}
	}
	if got := ask(t, rw, authReq("RCPT", "inst.alice", "alice", "x@remote.test", 0)); got != "action=OK" {
		t.Errorf("another user: %q, want OK", got)
	}
	if !strings.Contains(logs.String(), "limit reached") || !strings.Contains(logs.String(), "delivery.rate_limits.user_messages_per_hour") {
		t.Errorf("the limit did not log:\n%s", logs.String())
	}
}

// With the check at END-OF-MESSAGE only, each message counts once with its
// recipient_count; a message checked at both RCPT and END-OF-MESSAGE still
// counts once; recipients per day count recipient_count at once.
func TestPolicyLimitAtEndOfMessage(t *testing.T) {
	rw, _, _ := limitServer(t, config.RateLimitConfig{UserMessagesPerHour: 2, UserRecipientsPerDay: 10}, config.LimitDefer)
	// Message 1: RCPT and END-OF-MESSAGE requests, one count.
	for _, r := range []map[string]string{authReq("RCPT", "i1", "carol", "a@remote.test", 0), authReq("END-OF-MESSAGE", "i1", "carol", "", 1)} {
		if got := ask(t, rw, r); got != "action=OK" && got != "action=DUNNO" {
			t.Fatalf("message 1 (%s): %q", r["protocol_state"], got)
		}
	}
	// Message 2: END-OF-MESSAGE only, 5 recipients (total 6 of 10).
	if got := ask(t, rw, authReq("END-OF-MESSAGE", "i2", "carol", "", 5)); got != "action=DUNNO" {
		t.Fatalf("message 2: %q, want DUNNO", got)
	}
	// Message 3 is over 2 messages per hour: 451 with the limit's name.
	got := ask(t, rw, authReq("END-OF-MESSAGE", "i3", "carol", "", 1))
	if !strings.HasPrefix(got, "action=451 4.7.1 ") || !strings.Contains(got, "user_messages_per_hour = 2 per hour") {
		t.Fatalf("message 3: %q, want 451 4.7.1 naming user_messages_per_hour", got)
	}
	// Recipients per day, counted in bulk for another user.
	if got := ask(t, rw, authReq("END-OF-MESSAGE", "j1", "dave", "", 11)); !strings.Contains(got, "user_recipients_per_day = 10 per day") {
		t.Fatalf("11 recipients at once: %q, want the recipients-per-day limit", got)
	}
}

// limit_action = hold answers HOLD with the limit's name; the null sender
// of an authenticated client has its own, lower cap.
func TestPolicyLimitHoldAndNullSender(t *testing.T) {
	rw, _, _ := limitServer(t, config.RateLimitConfig{UserMessagesPerHour: 100, UserNullSenderMessagesPerHour: 1}, config.LimitHold)
	bounce := func(inst string) string {
		r := authReq("RCPT", inst, "erin", "victim@remote.test", 0)
		r["sender"] = ""
		return ask(t, rw, r)
	}
	if got := bounce("n1"); got != "action=OK" {
		t.Fatalf("first null-sender message: %q", got)
	}
	got := bounce("n2")
	if !strings.HasPrefix(got, "action=HOLD ") || !strings.Contains(got, "user_null_sender_messages_per_hour = 1 per hour") {
		t.Fatalf("second null-sender message: %q, want HOLD naming user_null_sender_messages_per_hour", got)
	}
	if got := ask(t, rw, authReq("RCPT", "n3", "erin", "friend@remote.test", 0)); got != "action=OK" {
		t.Errorf("a normal message after the null-sender cap: %q", got)
	}
}

// Trusted (mynetworks) clients are limited per address; unauthenticated
// strangers are not counted at all; a message the restriction lists reject
// is not counted.
func TestPolicyLimitTrustedAndUncounted(t *testing.T) {
	rw, _, _ := limitServer(t, config.RateLimitConfig{IPMessagesPerHour: 1, UserMessagesPerHour: 1}, config.LimitDeferIfPermit)
	trusted := func(inst string) string {
		r := req("10.9.1.1", "x@remote.test")
		r["instance"] = inst
		return ask(t, rw, r)
	}
	if got := trusted("t1"); got != "action=OK" {
		t.Fatalf("trusted 1: %q", got)
	}
	if got := trusted("t2"); !strings.Contains(got, "ip_messages_per_hour = 1 per hour") {
		t.Fatalf("trusted 2: %q, want ip_messages_per_hour", got)
	}
	for i := 0; i < 3; i++ {
		r := req("198.51.100.7", "u@example.test")
		r["instance"] = fmt.Sprint("s", i)
		if got := ask(t, rw, r); got != "action=DUNNO" {
			t.Fatalf("stranger to a local domain: %q, want DUNNO", got)
		}
	}
	// Rejected by check_client_access: three times, never counted...
	for i := 0; i < 3; i++ {
		r := authReq("RCPT", fmt.Sprint("r", i), "frank", "x@remote.test", 0)
		r["client_address"] = "192.0.2.66"
		if got := ask(t, rw, r); !strings.HasPrefix(got, "action=554") && !strings.HasPrefix(got, "action=REJECT") && !strings.Contains(got, "go away") {
			t.Fatalf("rejected client: %q", got)
		}
	}
	// ...so frank's first real message passes.
	if got := ask(t, rw, authReq("RCPT", "ok1", "frank", "x@remote.test", 0)); got != "action=OK" {
		t.Errorf("frank's first counted message: %q, want OK", got)
	}
}

// The state store failing is a temporary failure, never a pass.
func TestPolicyLimitStoreDown(t *testing.T) {
	rw, db, _ := limitServer(t, config.RateLimitConfig{UserMessagesPerHour: 100}, config.LimitHold)
	db.Close()
	got := ask(t, rw, authReq("RCPT", "d1", "gina", "x@remote.test", 0))
	if !strings.HasPrefix(got, "action=451 4.3.0 ") {
		t.Fatalf("store down: %q, want 451 4.3.0", got)
	}
}
