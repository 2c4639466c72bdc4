package queue

// What the intake journal does when the disk fails it: how a failed write
// or fdatasync gives its segment back (instead of opening a new segment
// file for every failed commit), and how the maintainer's failures are
// logged (without a line every 100 ms tick while a disk is full).

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// takeBack leaves no record in the bytes [from, to) of sg written by a
// failed write or a failed fdatasync, so that the segment takes the next
// records at from: the part inside the preallocated length is zeroed (no
// new space needed), the part past it is truncated away. If that fails
// too, the segment is broken: nothing more is appended to it (the next
// record opens a new segment). Called with j.mu held.
func (j *journal) takeBack(sg *segment, from, to int64) {
	if to <= from {
		return
	}
	var err error
	if z := min(to, sg.alloc); z > from {
		_, err = sg.f.WriteAt(make([]byte, z-from), from)
	}
	if err == nil && to > sg.alloc {
		err = sg.f.Truncate(max(from, sg.alloc))
	}
	if err != nil {
		sg.broken = true
		j.s.log.Warn("spool: journal segment not reusable after a failed write: the next commit opens a new one", "segment", sg.path, "err", err)
	}
}

// rewind takes back everything written to sg after the last successful
// fdatasync, after one failed: a failed fdatasync may have lost any of
// the pages written since (and a later one may succeed without writing
// them), so a record appended after them could be unreachable at a
// replay. Every commit appended meanwhile fails (commit checks sg.gen);
// what was synced before stays. Called with j.mu held.
func (j *journal) rewind(sg *segment) {
	j.takeBack(sg, sg.synced, sg.size)
	sg.size = sg.synced
	sg.gen++
}

// failLog logs the recurring failure of one of the journal's background
// tasks (retirement, rotation, tombstones), tried again at every tick:
// the first failure, a failure of another kind at once, else one line at
// most every `every` with the number of failures since the last line;
// and one line when the task succeeds again.
type failLog struct {
	log   *slog.Logger
	what  string
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

func newFailLog(log *slog.Logger, what string) *failLog {
	return &failLog{log: log, what: what, every: failLogEvery, now: time.Now}
}

// failKind is what makes two failures the same for failLog: the system
// error (ENOSPC, EIO) when there is one, else the text.
func failKind(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
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
		f.log.Error(f.what+" failed: tried again every 100ms, logged again if the error changes and at most once a minute while it lasts",
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
