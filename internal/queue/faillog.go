package queue

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// failLog logs a failure that is tried again and again — the journal's
// background tasks (retirement, rotation, tombstones) at every 100 ms
// tick, the scheduler's saves of delivery rounds (saveRound) — without a
// line per try: the first failure, a failure of another kind at once, else
// one line at most every `every` with the number of failures since the
// last line; and one line when the task succeeds again.
type failLog struct {
	log   *slog.Logger
	what  string // what fails: "spool: journal retirement"
	retry string // how it is tried again, for the first line
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	failing bool
	kind    string    // the kind of the last failure logged
	first   time.Time // when this run of failures began
	logged  time.Time // when its last line was written
	since   int       // failures not logged since then
	total   int       // failures in this run
}

// failLogEvery is how often a failure that goes on is logged again.
const failLogEvery = time.Minute

func newFailLog(log *slog.Logger, what, retry string) *failLog {
	return &failLog{log: log, what: what, retry: retry, every: failLogEvery, now: time.Now}
}

// failKind is what makes two failures the same for failLog: the system
// error (ENOSPC, EIO) when there is one, else the text of the innermost
// wrapped error (the outer ones name a file that changes at every try).
func failKind(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	for u := errors.Unwrap(err); u != nil; u = errors.Unwrap(err) {
		err = u
	}
	return err.Error()
}

// fail records a failure and logs it when it is the first of a run, of a
// new kind, or the first after `every`.
func (f *failLog) fail(err error, attrs ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now, kind := f.now(), failKind(err)
	f.total++
	switch {
	case !f.failing:
		f.failing, f.first = true, now
		f.log.Error(f.what+" failed: "+f.retry+"; logged again if the error changes and at most once a minute while it lasts",
			append(attrs, "err", err)...)
	case kind != f.kind:
		f.log.Error(f.what+" failing with another error", append(attrs, "err", err, "failures", f.since+1)...)
	case now.Sub(f.logged) >= f.every:
		f.log.Error(f.what+" still failing", append(attrs, "err", err, "failures", f.since+1, "for", now.Sub(f.first).Round(time.Second))...)
	default:
		f.since++
		return
	}
	f.kind, f.logged, f.since = kind, now, 0
}

// ok records a success: after failures, one line says the task works
// again, how often and how long it failed.
func (f *failLog) ok() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failing {
		return
	}
	f.log.Info(f.what+" works again", "failures", f.total, "after", f.now().Sub(f.first).Round(time.Millisecond))
	f.failing, f.since, f.total, f.kind = false, 0, 0, ""
}
