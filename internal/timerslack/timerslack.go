// Package timerslack sets the timer slack of every thread of this
// process (prctl(2) PR_SET_TIMERSLACK, through /proc/self/task/TID/
// timerslack_ns: proc(5)).
//
// Why a daemon wants it: Go's runtime has a monitor thread (sysmon) that,
// while any goroutine runs, sleeps 20 µs at a time (nanosleep) to retake
// processors from system calls. On a milter, which runs in short bursts for
// every event Postfix sends, those wake-ups were a third of its context
// switches and an eighth of its CPU under Postfix (docs/benchmarks/
// containment.md, round 5). A larger slack lets the kernel coalesce them:
// each such sleep lasts up to the slack. Timers of the process may fire up
// to the slack late.
//
// The slack is a per-thread attribute, inherited by the threads a thread
// creates, and the runtime's threads exist before main: so each existing
// thread is set, and the threads created later inherit it. Reading or
// setting another thread's slack needs CAP_SYS_NICE (root has it); without
// it, Set sets what it may and says what it could not. A systemd unit's
// TimerSlackNSec= gives the whole process the slack from its start instead
// (then Set, unprivileged, finds its own thread has it and is content).
package timerslack

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Set gives every thread of the process the timer slack d. It returns how
// many threads it knows have it, and an error naming the first thread it
// could not set (the others are still set). A thread that already has d is
// left alone. Without CAP_SYS_NICE another thread's slack can be neither
// read nor written; then, when the calling thread already has d, the
// process was started with it (a unit's TimerSlackNSec=, inherited by
// every thread from exec) and that is no error.
func Set(d time.Duration) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	own, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	val := []byte(strconv.FormatInt(d.Nanoseconds(), 10))
	have := 0
	done := map[string]bool{}
	var first error
	// Threads may start while the list is read: read it again until a
	// pass finds none new.
	for {
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return len(done), fmt.Errorf("timerslack: %w", err)
		}
		fresh := 0
		for _, t := range tids {
			if done[t.Name()] {
				continue
			}
			done[t.Name()] = true
			fresh++
			p := "/proc/" + t.Name() + "/timerslack_ns"
			if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == string(val) {
				have++
				continue
			}
			err := os.WriteFile(p, val, 0)
			switch {
			case err == nil:
				have++
			case !errors.Is(err, os.ErrNotExist) && first == nil: // not: the thread ended
				first = fmt.Errorf("timerslack: %s: %w", p, err)
			}
		}
		if fresh == 0 {
			break
		}
	}
	if errors.Is(first, os.ErrPermission) && int64(own) == d.Nanoseconds() {
		first = nil
	}
	return have, first
}

// Of returns the timer slack of each thread of process pid (0: this
// process), by thread id.
func Of(pid int) (map[int]time.Duration, error) {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	tids, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("timerslack: %w", err)
	}
	out := map[int]time.Duration{}
	for _, t := range tids {
		b, err := os.ReadFile("/proc/" + t.Name() + "/timerslack_ns")
		if err != nil {
			continue // the thread ended
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("timerslack: /proc/%s/timerslack_ns: %w", t.Name(), err)
		}
		tid, _ := strconv.Atoi(t.Name())
		out[tid] = time.Duration(ns)
	}
	return out, nil
}
