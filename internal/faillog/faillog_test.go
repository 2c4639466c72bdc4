package faillog

import (
	"io/fs"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"
)

// Log: the first failure, then a line per change of error or per
// minute with the count since the last line, and one when it works again.
func TestOncePerStateChange(t *testing.T) {
	var logs hosttest.LogBuffer
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f := New(slog.New(slog.NewTextHandler(&logs, nil)), "spool: journal retirement", "tried again every 100ms")
	f.now = func() time.Time { return now }
	enospc := &fs.PathError{Op: "write", Path: "/spool/tmp/a.msg", Err: syscall.ENOSPC}
	step := func(d time.Duration, err error) {
		now = now.Add(d)
		if err == nil {
			f.OK()
		} else {
			f.Fail(err, "segment", "seg-1")
		}
	}
	f.OK() // nothing failed: no line
	for range 300 {
		step(100*time.Millisecond, enospc) // 30 s
	}
	if n := len(logs.Lines()); n != 1 {
		t.Fatalf("30 s of failures every 100 ms: %d lines, want 1\n%s", n, logs.String())
	}
	for range 301 {
		step(100*time.Millisecond, enospc) // past a minute since the first line
	}
	got := logs.Lines("still failing")
	if len(got) != 1 || !strings.Contains(got[0], "failures=600") || !strings.Contains(got[0], "for=1m0s") {
		t.Fatalf("after a minute: %q, want one line counting 600 failures", got)
	}
	step(100*time.Millisecond, &fs.PathError{Op: "write", Path: "/spool/tmp/b.msg", Err: syscall.ENOSPC}) // same kind
	step(100*time.Millisecond, &fs.PathError{Op: "fsync", Path: "/spool/msg", Err: syscall.EIO})
	if got := logs.Lines("another error"); len(got) != 1 || !strings.Contains(got[0], "input/output error") || !strings.Contains(got[0], "failures=2") {
		t.Fatalf("a new kind of error: %q", got)
	}
	step(time.Second, nil)
	step(time.Second, nil)
	if got := logs.Lines("works again"); len(got) != 1 || !strings.Contains(got[0], "failures=603") {
		t.Fatalf("recovery: %q\n%s", got, logs.String())
	}
	step(time.Second, enospc)
	if n := len(logs.Lines()); n != 5 {
		t.Fatalf("a new run of failures: %d lines in all, want 5\n%s", n, logs.String())
	}
}

// Two errors that alternate at every try are each logged once, then only
// with the minute's line, not one line per try.
func TestAlternatingKindsDoNotFlood(t *testing.T) {
	var logs hosttest.LogBuffer
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f := New(slog.New(slog.NewTextHandler(&logs, nil)), "store: shared transaction", "tried again with the next write")
	f.now = func() time.Time { return now }
	enospc := &fs.PathError{Op: "write", Path: "/var/lib/relayguard/state.db-wal", Err: syscall.ENOSPC}
	eio := &fs.PathError{Op: "fsync", Path: "/var/lib/relayguard/state.db", Err: syscall.EIO}
	for i := range 700 { // 70 s of tries every 100 ms, the kinds alternating
		now = now.Add(100 * time.Millisecond)
		if i%2 == 0 {
			f.Fail(enospc)
		} else {
			f.Fail(eio)
		}
	}
	// The first (ENOSPC), EIO once as another error, then the minute's line.
	if n := len(logs.Lines()); n != 3 {
		t.Fatalf("alternating errors for 70 s: %d lines, want 3\n%s", n, logs.String())
	}
	if got := logs.Lines("another error"); len(got) != 1 || !strings.Contains(got[0], "input/output error") {
		t.Fatalf("the second kind: %q", got)
	}
	if got := logs.Lines("still failing"); len(got) != 1 || !strings.Contains(got[0], "failures=600") {
		t.Fatalf("the minute's line: %q\n%s", got, logs.String())
	}
	f.OK()
	f.Fail(eio) // a new run: its first line, then ENOSPC is new again
	f.Fail(enospc)
	if n := len(logs.Lines()); n != 6 {
		t.Fatalf("after recovery, a new run: %d lines, want 6\n%s", n, logs.String())
	}
}
