package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

// Recipients counted by 20 concurrent sessions share commits on SQLite
// (SQLStore.Recipient's group commit) and are still counted one by one:
// of 200 new recipients against 100 per day and 60 new per day, exactly
// 60 pass, 40 meet the new-recipient limit and 100 the daily total, and
// a recipient seen before is not new; the counters hold every attempt.
func TestConcurrentRecipientsCountedExactly(t *testing.T) {
	ctx := context.Background()
	lim := newDailyLimiter(t, openSQLStore(t))
	got := countRecipients(ctx, lim, 20, func(g, i int) string { return fmt.Sprintf("R%d-%d@remote.test", g, i) })
	want := map[string]int{"ok": 60, "user_new_recipients_per_day": 40, "user_recipients_per_day": 100}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
	u, err := lim.Usage(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(u) != "[{user_recipients_per_day 100 24h0m0s 200} {user_new_recipients_per_day 60 24h0m0s 100}]" {
		t.Fatalf("usage %v", u)
	}
}

// newDailyLimiter is the limiter the exact-count tests share: bob may
// send to 100 recipients a day, 60 of them new.
func newDailyLimiter(t *testing.T, st ratelimit.Store) *ratelimit.Limiter {
	t.Helper()
	lim, err := ratelimit.New(config.RateLimitConfig{UserRecipientsPerDay: 100, UserNewRecipientsPerDay: 60}, st,
		ratelimit.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

// countRecipients runs sessions concurrent sessions of bob's, each asking
// for 10 recipients rcpt(session, i), and counts the outcomes: "ok", the
// name of the limit met, or the error's text.
func countRecipients(ctx context.Context, lim *ratelimit.Limiter, sessions int, rcpt func(g, i int) string) map[string]int {
	bob := ratelimit.Sender{User: "bob"}
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for g := range sessions {
		wg.Go(func() {
			for i := range 10 {
				err := lim.Rcpt(ctx, bob, rcpt(g, i))
				var le *ratelimit.LimitError
				k := "ok"
				if errors.As(err, &le) {
					k = le.Limit
				} else if err != nil {
					k = err.Error()
				}
				mu.Lock()
				got[k]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return got
}

// A recipient refused by either limit is not recorded as seen (it is
// new again next time), and one refused by the daily total adds nothing
// to the new-recipient count; a recipient that passed is not new again.
func TestRefusedRecipientNotSeen(t *testing.T) {
	ctx := context.Background()
	st := openSQLStore(t)
	lim, err := ratelimit.New(config.RateLimitConfig{UserRecipientsPerDay: 4, UserNewRecipientsPerDay: 1}, st,
		ratelimit.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	bob := ratelimit.Sender{User: "bob"}
	limitOf := func(rcpt string) string {
		err := lim.Rcpt(ctx, bob, rcpt)
		var le *ratelimit.LimitError
		if errors.As(err, &le) {
			return le.Limit
		}
		if err != nil {
			t.Fatal(err)
		}
		return "ok"
	}
	for i, c := range []struct{ rcpt, want string }{
		{"a@remote.test", "ok"},
		{"b@remote.test", "user_new_recipients_per_day"},
		{"b@remote.test", "user_new_recipients_per_day"}, // still new
		{"a@remote.test", "ok"},                          // seen: not new
		{"c@remote.test", "user_recipients_per_day"},     // 5th of the day
	} {
		if got := limitOf(c.rcpt); got != c.want {
			t.Fatalf("step %d (%s): %s, want %s", i, c.rcpt, got, c.want)
		}
	}
	for rcpt, want := range map[string]bool{"a@remote.test": true, "b@remote.test": false, "c@remote.test": false} {
		if seen, err := st.Seen(ctx, "bob", rcpt); err != nil || seen != want {
			t.Fatalf("seen %s: %v %v, want %v", rcpt, seen, err, want)
		}
	}
	u, err := lim.Usage(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(u) != "[{user_recipients_per_day 4 24h0m0s 5} {user_new_recipients_per_day 1 24h0m0s 3}]" {
		t.Fatalf("usage %v", u)
	}
}

// BenchmarkRecipients: one recipient's counting on SQLite, 20 sessions.
//
//	go test -run '^$' -bench Recipients ./internal/ratelimit
func BenchmarkRecipients(b *testing.B) {
	ctx := context.Background()
	lim, err := ratelimit.New(config.RateLimitConfig{UserRecipientsPerDay: 1 << 30, UserNewRecipientsPerDay: 1 << 30}, openSQLStore(b),
		ratelimit.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	var n sync.Mutex
	i := 0
	b.SetParallelism(10)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Lock()
			i++
			r := fmt.Sprintf("r%d@remote.test", i)
			n.Unlock()
			if err := lim.Rcpt(ctx, ratelimit.Sender{User: fmt.Sprintf("u%d", i%50)}, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
