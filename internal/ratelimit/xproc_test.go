package ratelimit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
)

// Two processes on one data directory (serve and the policy service)
// count the same sender's recipients through their own shared write
// transactions (store.SharedWriter: each holds the database's write lock
// up to CommitEvery): the limits still stop at exactly N, and no attempt
// is answered with an error (SQLITE_BUSY) instead of a count.
func TestRecipientsCountedExactlyAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("RG_XPROC_DIR"); dir != "" {
		xprocCount(t, dir, os.Getenv("RG_XPROC_NAME"))
		return
	}
	dir := t.TempDir()
	db, err := store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ratelimit.NewSQLStore(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	outs := make([][]byte, 2)
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestRecipientsCountedExactlyAcrossProcesses$", "-test.count=1")
			cmd.Env = append(os.Environ(), "RG_XPROC_DIR="+dir, fmt.Sprintf("RG_XPROC_NAME=p%d", p))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("process %d: %v\n%s", p, err, out)
			}
			outs[p] = out
		})
	}
	wg.Wait()
	total := map[string]int{}
	for _, out := range outs {
		var got map[string]int
		for _, l := range splitLines(string(out)) {
			if json.Unmarshal([]byte(l), &got) == nil && got != nil {
				break
			}
		}
		for k, n := range got {
			total[k] += n
		}
	}
	want := map[string]int{"ok": 60, "user_new_recipients_per_day": 40, "user_recipients_per_day": 100}
	t.Logf("per process: %s / %s", lastLine(outs[0]), lastLine(outs[1]))
	if fmt.Sprint(total) != fmt.Sprint(want) {
		t.Fatalf("outcomes of both processes %v, want %v\n%s\n%s", total, want, outs[0], outs[1])
	}
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := range len(s) {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// xprocCount is one process of the test: 10 sessions, 10 new recipients
// each, outcomes printed as a JSON line.
func xprocCount(t *testing.T, dir, name string) {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := ratelimit.NewSQLStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	lim := newDailyLimiter(t, st)
	// Both processes start counting at the same moment.
	os.WriteFile(filepath.Join(dir, "ready-"+name), nil, 0o644)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(dir, "ready-*")); len(m) == 2 {
			break
		}
	}
	got := countRecipients(ctx, lim, 10, func(g, i int) string { return fmt.Sprintf("%s-R%d-%d@remote.test", name, g, i) })
	lim.Flush()
	b, _ := json.Marshal(got)
	fmt.Printf("\n%s\n", b)
}

func lastLine(b []byte) string {
	for _, l := range splitLines(string(b)) {
		if len(l) > 0 && l[0] == '{' {
			return l
		}
	}
	return ""
}
