// Package faillog logs a failure that is tried again and again — the
// spool journal's background tasks at every 100 ms tick, the scheduler's
// saves of delivery rounds, the state store's shared transactions on a
// full disk — without a line per try: the first failure, a failure of a
// kind not yet seen in this run at once, else one line at most every
// minute with the number of failures since the last line; and one line
// when the task succeeds again. Two errors that alternate (ENOSPC on one
// file, EIO on another) are each logged once, then with the minute's line.
package faillog

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Every is how often a failure that goes on is logged again.
const Every = time.Minute

// maxKinds bounds the kinds of error remembered in one run of failures:
// past it, a kind not remembered waits for the minute's line too.
const maxKinds = 8

// Log is one task's failure log; safe for concurrent use.
type Log struct {
	what  string // what fails: "spool: journal retirement"
	retry string // how it is tried again, for the first line
	every time.Duration
	now   func() time.Time

	// on is failing, read without the lock: OK, called after every
	// success of a hot path (a send limit's count), costs an atomic load.
	on atomic.Bool

	mu      sync.Mutex
	log     *slog.Logger
	failing bool
	kind    string    // the kind of the last failure logged
	kinds   []string  // the kinds logged in this run (at most maxKinds)
	first   time.Time // when this run of failures began
	logged  time.Time // when its last line was written
	since   int       // failures not logged since then
	total   int       // failures in this run
}

// New returns the failure log of the task what ("spool: journal
// retirement"), retried as retry says ("tried again every 100ms"); a nil
// log is slog.Default() at the time of each line.
func New(log *slog.Logger, what, retry string) *Log {
	return &Log{log: log, what: what, retry: retry, every: Every, now: time.Now}
}

// SetLogger sets where the lines go from now on.
func (f *Log) SetLogger(l *slog.Logger) {
	f.mu.Lock()
	f.log = l
	f.mu.Unlock()
}

func (f *Log) logger() *slog.Logger {
	if f.log == nil {
		return slog.Default()
	}
	return f.log
}

// kindOf is what makes two failures the same: the system error (ENOSPC,
// EIO) when there is one, else the text of the innermost wrapped error
// (the outer ones name a file that changes at every try).
func kindOf(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	for u := errors.Unwrap(err); u != nil; u = errors.Unwrap(err) {
		err = u
	}
	return err.Error()
}

// Fail records a failure and logs it when it is the first of a run, of a
// new kind, or the first after a minute.
func (f *Log) Fail(err error, attrs ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now, kind := f.now(), kindOf(err)
	f.total++
	switch {
	case !f.failing:
		f.failing, f.first = true, now
		f.on.Store(true)
		f.logger().Error(f.what+" failed: "+f.retry+"; logged again if the error changes and at most once a minute while it lasts",
			append(attrs, "err", err)...)
	case kind != f.kind && f.newKind(kind):
		f.logger().Error(f.what+" failing with another error", append(attrs, "err", err, "failures", f.since+1)...)
	case now.Sub(f.logged) >= f.every:
		f.logger().Error(f.what+" still failing", append(attrs, "err", err, "failures", f.since+1, "for", now.Sub(f.first).Round(time.Second))...)
	default:
		f.since++
		return
	}
	f.kind, f.logged, f.since = kind, now, 0
	if len(f.kinds) < maxKinds && !slices.Contains(f.kinds, kind) {
		f.kinds = append(f.kinds, kind)
	}
}

// newKind reports whether kind was not yet logged in this run and there
// is room to remember it.
func (f *Log) newKind(kind string) bool {
	return len(f.kinds) < maxKinds && !slices.Contains(f.kinds, kind)
}

// OK records a success: after failures, one line says the task works
// again, how often and how long it failed.
func (f *Log) OK() {
	if !f.on.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failing {
		return
	}
	f.logger().Info(f.what+" works again", "failures", f.total, "after", f.now().Sub(f.first).Round(time.Millisecond))
	f.failing, f.since, f.total, f.kind, f.kinds = false, 0, 0, "", f.kinds[:0]
	f.on.Store(false)
}
