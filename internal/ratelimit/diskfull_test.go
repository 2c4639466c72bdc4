package ratelimit_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

// The database's file system full: a shared transaction's commit fails,
// and with it every count made in it. The counts answered before that
// commit are lost (as in a crash), but the limit must not stop holding:
// bob, limited to 5 messages an hour, asks 30 times on a full disk and
// gets at most 5 passes (before the fix: 30, each transaction's counts
// lost after its answers, and the next one reading 0 again). Once space
// is back, counting is exact again. The lost transactions are logged once
// for the run (not once per deferred message), and the recovery once.
func TestLimitHeldWhenTheDiskIsFull(t *testing.T) {
	hosttest.OnSmallTmpfs(t, "2m", func(t *testing.T, mnt string) {
		ctx := context.Background()
		st := openSQLStoreIn(t, filepath.Join(mnt, "data"))
		var logs hosttest.LogBuffer
		st.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
		now := time.Date(2026, 12, 6, 18, 30, 0, 0, time.UTC)
		lim := fixedLimiter(t, st, config.RateLimitConfig{UserMessagesPerHour: 5}, now)
		bob := ratelimit.Sender{User: "bob", From: "bob@example.test", Listener: "submission"}
		filler := hosttest.FillUp(t, mnt)
		passed, failed := 0, 0
		for i := range 30 {
			err := lim.Message(ctx, bob, 1)
			switch {
			case err == nil:
				passed++
			case limitName(err) == "user_messages_per_hour":
			default:
				failed++
			}
			if i%3 == 2 {
				st.Flush() // a commit, as CommitEvery makes one
			}
		}
		st.Flush()
		if passed > 5 {
			t.Fatalf("disk full: %d of 30 messages passed a limit of 5 an hour (%d deferred as state unavailable)", passed, failed)
		}
		if failed == 0 {
			t.Fatal("disk full: no count failed")
		}
		if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
			t.Errorf("disk full: %d error lines for %d lost operations, want 1 (the first; then once a minute):\n%s", n, failed, logs.String())
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		// Space back: the next commit holds, and what passed is what is counted
		// from then on (the counts of lost transactions are not there).
		var got []string
		for range 7 {
			got = append(got, limitName(lim.Message(ctx, bob, 1)))
			st.Flush()
		}
		ok := 0
		for _, g := range got {
			if g == "ok" {
				ok++
			}
		}
		t.Logf("disk full: %d passed, %d deferred; space back: %v", passed, failed, got)
		if n := strings.Count(logs.String(), "works again"); n != 1 {
			t.Errorf("space back: %d recovery lines, want 1:\n%s", n, logs.String())
		}
		if ok > 5 || ok < 5-passed || got[len(got)-1] != "user_messages_per_hour" {
			t.Fatalf("space back: %v after %d passed on the full disk", got, passed)
		}
	})
}

// The limiter's own line for a count the store could not keep: on a full
// disk every message and recipient is deferred, and each was logged
// ("ratelimit: store", one ERROR line per deferred request: a policy service
// under load wrote hundreds a second). The failure is logged once for the
// run (then at most once a minute), and once when counting works again.
func TestStoreFailureLoggedOncePerRun(t *testing.T) {
	hosttest.OnSmallTmpfs(t, "2m", func(t *testing.T, mnt string) {
		ctx := context.Background()
		st := openSQLStoreIn(t, filepath.Join(mnt, "data"))
		st.SetLogger(slog.New(slog.DiscardHandler)) // (the store's own lines: TestLimitHeldWhenTheDiskIsFull)
		var logs hosttest.LogBuffer
		now := time.Date(2026, 12, 6, 18, 30, 0, 0, time.UTC)
		lim, err := ratelimit.New(config.RateLimitConfig{UserMessagesPerHour: 1000, UserRecipientsPerDay: 1000, UserNewRecipientsPerDay: 1000},
			st, ratelimit.Options{Registerer: prometheus.NewRegistry(), Now: func() time.Time { return now },
				Log: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		bob := ratelimit.Sender{User: "bob", From: "bob@example.test", Listener: "submission"}
		filler := hosttest.FillUp(t, mnt)
		failed := 0
		for i := range 30 {
			if lim.Message(ctx, bob, 1) != nil {
				failed++
			}
			if lim.Rcpt(ctx, bob, fmt.Sprintf("r%d@example.net", i)) != nil {
				failed++
			}
			st.Flush()
		}
		if failed < 20 {
			t.Fatalf("disk full: only %d of 60 counts failed", failed)
		}
		if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
			t.Errorf("disk full: %d error lines for %d deferred counts, want 1 (then once a minute):\n%s", n, failed, logs.String())
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := lim.Message(ctx, bob, 1); err != nil {
				t.Fatalf("space back: message %d: %v", i, err)
			}
			st.Flush()
		}
		if n := strings.Count(logs.String(), "works again"); n != 1 {
			t.Errorf("space back: %d recovery lines, want 1:\n%s", n, logs.String())
		}
		if strings.Count(logs.String(), "level=ERROR") != 1 {
			t.Errorf("space back: error lines after recovery:\n%s", logs.String())
		}
	})
}
