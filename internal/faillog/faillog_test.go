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
