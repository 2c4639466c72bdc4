package ratelimit_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

// The tests of this file run this process's counting (ratelimit.SQLStore,
// its copy of the counters kept across transactions) against other
// processes on the same database file: a child of the test binary, started
// with RG_XPROC_ROLE.
func TestMain(m *testing.M) {
	switch os.Getenv("RG_XPROC_ROLE") {
	case "raw":
		rawWriter(os.Getenv("RG_XPROC_DIR"))
		os.Exit(0)
	case "dies":
		diesInTransaction(os.Getenv("RG_XPROC_DIR"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child starts the test binary as role on dir, with pipes to its stdin
// and stdout; it is killed when the test ends.
func child(t *testing.T, role, dir string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "RG_XPROC_ROLE="+role, "RG_XPROC_DIR="+dir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, in, bufio.NewReader(out)
}

// ask sends one command line to a child and returns its answer line.
func ask(t *testing.T, in io.Writer, out *bufio.Reader, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(in, cmd); err != nil {
		t.Fatal(err)
	}
	l, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("child answering %q: %v", cmd, err)
	}
	return strings.TrimSpace(l)
}

// rawWriter is another writer of the counters that is not this code (an
// older relayguard, or an operator with sqlite3): plain statements in its
// own transactions, one per command line read from stdin:
//
//	add USER START    one more message of USER in the hour from START
//	unsee USER RCPT   forget that USER has sent to RCPT
func rawWriter(dir string) {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer db.Close()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var res string
		switch {
		case len(f) == 3 && f[0] == "add":
			start, _ := strconv.ParseInt(f[2], 10, 64)
			var n int64
			err = db.QueryRowContext(ctx, `INSERT INTO ratelimit_counters (key, window_start, expires, count) VALUES (?, ?, ?, 1)
ON CONFLICT (key, window_start) DO UPDATE SET count = count + 1 RETURNING count`,
				"user_messages_per_hour\x00"+f[1], start, start+3600).Scan(&n)
			res = strconv.FormatInt(n, 10)
		case len(f) == 3 && f[0] == "sneak":
			// As a writer that bypasses the triggers (dropped and put
			// back around its write, in its transaction).
			start, _ := strconv.ParseInt(f[2], 10, 64)
			var tx *sql.Tx
			if tx, err = db.BeginTx(ctx, nil); err == nil {
				for _, q := range []string{
					`DROP TRIGGER ratelimit_counters_update`,
					`UPDATE ratelimit_counters SET count = count + 1 WHERE key = 'user_messages_per_hour' || char(0) || '` + f[1] + `' AND window_start = ` + strconv.FormatInt(start, 10),
					`CREATE TRIGGER ratelimit_counters_update AFTER UPDATE ON ratelimit_counters BEGIN UPDATE ratelimit_gen SET gen = random() WHERE id = 1; END`,
				} {
					if _, err = tx.ExecContext(ctx, q); err != nil {
						break
					}
				}
				if err == nil {
					err = tx.Commit()
				} else {
					tx.Rollback()
				}
			}
			res = "ok"
		case len(f) == 3 && f[0] == "unsee":
			_, err = db.ExecContext(ctx, `DELETE FROM ratelimit_seen WHERE user = ? AND rcpt = ?`, f[1], f[2])
			res = "ok"
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err != nil {
			res = "error: " + err.Error()
		}
		fmt.Println(res)
	}
}

// sharedDatabase is the counters in a fresh database file in dir, which
// the test's children open too.
func sharedDatabase(t *testing.T) (dir string, db *sql.DB, st *ratelimit.SQLStore) {
	t.Helper()
	dir = t.TempDir()
	db, err := store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err = ratelimit.NewSQLStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return dir, db, st
}

// fixedLimiter is a limiter over st whose clock stands still at now.
func fixedLimiter(t *testing.T, st ratelimit.Store, cfg config.RateLimitConfig, now time.Time) *ratelimit.Limiter {
	t.Helper()
	lim, err := ratelimit.New(cfg, st, ratelimit.Options{Registerer: prometheus.NewRegistry(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

func limitName(err error) string {
	var le *ratelimit.LimitError
	switch {
	case errors.As(err, &le):
		return le.Limit
	case err != nil:
		return err.Error()
	}
	return "ok"
}

// Another process writes the counters between two transactions of this
// one, with plain statements (not this code): each of this process's
// counts includes the other's, and the limit bites at exactly its
// maximum — a copy trusted across the other's write would have let this
// process send its whole budget again. A seen record the other deletes
// makes the recipient new again here.
func TestCountsExactWithAWriterBetweenTransactions(t *testing.T) {
	ctx := context.Background()
	dir, _, st := sharedDatabase(t)
	now := time.Date(2026, 12, 6, 18, 20, 0, 0, time.UTC)
	lim := fixedLimiter(t, st, config.RateLimitConfig{UserMessagesPerHour: 10, UserNewRecipientsPerDay: 100}, now)
	_, in, out := child(t, "raw", dir)
	bob := ratelimit.Sender{User: "bob", From: "bob@example.test"}
	hour := strconv.FormatInt(now.Truncate(time.Hour).Unix(), 10)

	var steps []string
	accepted := 0
	for i := range 8 {
		err := lim.Message(ctx, bob, 1)
		lim.Flush()
		steps = append(steps, limitName(err))
		if err == nil {
			accepted++
		}
		if i < 5 {
			steps = append(steps, "other:"+ask(t, in, out, "add bob "+hour))
		}
	}
	// Ours 1, the other's 2, ours 3 ... the other's 10; every later one
	// of ours is over the limit.
	want := "ok other:2 ok other:4 ok other:6 ok other:8 ok other:10 user_messages_per_hour user_messages_per_hour user_messages_per_hour"
	if got := strings.Join(steps, " "); got != want {
		t.Fatalf("steps:\n%s\nwant:\n%s", got, want)
	}
	u, err := lim.Usage(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(u[0]); got != "{user_messages_per_hour 10 1h0m0s 13}" {
		t.Fatalf("usage %s, want 13 counted (10 accepted, 3 refused)", got)
	}

	seenSteps := func() []string {
		var s []string
		for range 2 {
			lim.Rcpt(ctx, bob, "carol@remote.test")
			lim.Flush()
			u, err := lim.Usage(ctx, "bob")
			if err != nil {
				t.Fatal(err)
			}
			s = append(s, fmt.Sprint(u[1].Used))
		}
		return s
	}
	first := seenSteps() // new, then seen (from this process's copy)
	if a := ask(t, in, out, "unsee bob carol@remote.test"); a != "ok" {
		t.Fatal(a)
	}
	second := seenSteps() // new again, then seen
	if got := fmt.Sprint(first, second); got != "[1 1] [2 2]" {
		t.Fatalf("new recipients counted %s, want [1 1] [2 2]", got)
	}
	if n := ratelimit.Mismatches(st); n != 0 {
		t.Fatalf("%d cached counts were not the database's", n)
	}

	// A writer that bypasses the triggers is not seen in time (the limit
	// of the scheme: this process's next count is one short), but its
	// write is not lost, and the count after it is exact again: the
	// totals written at the commit are the database's, and the copy is
	// dropped.
	if a := ask(t, in, out, "sneak bob "+hour); a != "ok" {
		t.Fatal(a)
	}
	var after []string
	for range 2 {
		u, err := lim.Usage(ctx, "bob") // adds nothing: the copy's count
		if err != nil {
			t.Fatal(err)
		}
		lim.Message(ctx, bob, 1)
		lim.Flush()
		after = append(after, fmt.Sprint(u[0].Used))
	}
	u, err = lim.Usage(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	after = append(after, fmt.Sprint(u[0].Used))
	if got := strings.Join(after, " "); got != "13 15 16" {
		t.Fatalf("counts around a write without the triggers: %s, want 13 15 16", got)
	}
	if n := ratelimit.Mismatches(st); n != 1 {
		t.Fatalf("%d mismatches noticed, want 1", n)
	}
}

// diesInTransaction counts 2 messages of bob and commits them, then 5
// more in a transaction it keeps open (holding the database's write
// lock), says "ready" and waits to be killed.
func diesInTransaction(dir string) {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	st, err := ratelimit.NewSQLStore(ctx, db)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	start := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	for range 2 {
		st.Add(ctx, "user_messages_per_hour\x00bob", start, time.Hour, 1)
	}
	st.Flush()
	for range 5 {
		st.Add(ctx, "user_messages_per_hour\x00bob", start, time.Hour, 1)
	}
	store.SharedWriter(db).Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// And one written by a statement: in the database's pages, not
		// committed.
		if _, err := tx.ExecContext(ctx, `UPDATE ratelimit_counters SET count = count + 100`); err != nil {
			fmt.Println("error:", err)
			return err
		}
		fmt.Println("ready")
		select {}
	})
}

// A process killed in the middle of a transaction (holding the write
// lock, with counts in memory and a statement's write not committed)
// leaves exactly what it committed: this process, whose copy was taken
// before, counts the dead process's 2 committed messages and none of the
// rest. Its own transaction rolled back (an operation failing in the
// shared transaction) leaves nothing either: the counts made in it are
// not trusted afterwards.
func TestCountsExactAfterAProcessDiesInATransaction(t *testing.T) {
	ctx := context.Background()
	dir, db, st := sharedDatabase(t)
	start := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	add := func() int64 {
		t.Helper()
		n, err := st.Add(ctx, "user_messages_per_hour\x00bob", start, time.Hour, 1)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var got []int64
	for range 3 {
		got = append(got, add())
	}
	st.Flush()
	cmd, _, out := child(t, "dies", dir)
	if l, err := out.ReadString('\n'); err != nil || strings.TrimSpace(l) != "ready" {
		t.Fatalf("child: %q %v", l, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	got = append(got, add(), add())
	st.Flush()

	// Two more in a transaction that an operation's failure rolls back.
	got = append(got, add(), add())
	if err := store.SharedWriter(db).Do(ctx, func(context.Context, *sql.Tx) error { return errors.New("the disk is gone") }); err == nil {
		t.Fatal("failed operation: no error")
	}
	got = append(got, add())
	st.Flush()
	if fmt.Sprint(got) != "[1 2 3 6 7 8 9 8]" {
		t.Fatalf("counts %v, want [1 2 3 6 7 8 9 8]: ours, the dead process's 2 committed, none of its uncommitted 105, none of our rolled-back 2", got)
	}
	if n := ratelimit.Mismatches(st); n != 0 {
		t.Fatalf("%d cached counts were not the database's", n)
	}
}
