package ratelimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

// The generation's row deleted by hand (an operator resetting every
// ratelimit_ table with sqlite3) while a process counts: before, every
// count failed from then on ("reading the counters' generation: no rows")
// and all authenticated mail was deferred until a restart. Now the row is
// put back with a new value, the copy is read again, and the counts go on
// exact, the other writer's changes included.
func TestCountsAfterTheGenerationRowIsDeleted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openSQLStoreIn(t, dir)
	now := time.Date(2026, 12, 6, 18, 30, 0, 0, time.UTC)
	lim := fixedLimiter(t, st, config.RateLimitConfig{UserMessagesPerHour: 5}, now)
	bob := ratelimit.Sender{User: "bob", From: "bob@example.test", Listener: "submission"}
	var got []string
	send := func() {
		got = append(got, limitName(lim.Message(ctx, bob, 1)))
		st.Flush()
	}
	send()
	send()
	// Another writer (its own connection, as sqlite3 would be): the
	// generation's row gone, and one more message of bob's counted.
	other, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, q := range []string{
		`DELETE FROM ratelimit_gen`,
		`UPDATE ratelimit_counters SET count = count + 1 WHERE key = 'user_messages_per_hour' || char(0) || 'bob'`,
	} {
		if _, err := other.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for range 4 {
		send()
	}
	// 2 ours, 1 the other's, then 2 more pass and the 6th is refused.
	want := "[ok ok ok ok user_messages_per_hour user_messages_per_hour]"
	if s := fmt.Sprint(got); s != want {
		t.Fatalf("messages: %s, want %s", s, want)
	}
}
