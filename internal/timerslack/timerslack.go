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
// thread is set, and the threads created later inherit it. Setting another
// thread's slack needs CAP_SYS_NICE (root has it); without it, Set sets
// what it may and says what it could not. A systemd unit's TimerSlackNSec=
// gives the whole process the slack from its start instead.
package timerslack

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Set gives every thread of the process the timer slack d. It returns how
// many threads it set, and an error naming the first thread it could not
// set (the others are still set).
func Set(d time.Duration) (int, error) {
	val := []byte(strconv.FormatInt(d.Nanoseconds(), 10))
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
			if err := os.WriteFile(p, val, 0); err != nil && !errors.Is(err, os.ErrNotExist) && first == nil {
				first = fmt.Errorf("timerslack: %s: %w", p, err)
			}
		}
		if fresh == 0 {
			break
		}
	}
	return len(done), first
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
