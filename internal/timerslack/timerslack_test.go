package timerslack

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestSetEveryThread: after Set, every thread of the process has the slack,
// and so do the threads the runtime starts afterwards (inherited).
func TestSetEveryThread(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CAP_SYS_NICE) to set other threads' slack")
		}
		t.Skip("needs root (CAP_SYS_NICE) to set other threads' slack")
	}
	before, err := Of(0)
	if err != nil {
		t.Fatal(err)
	}
	const want = 700 * time.Microsecond
	n, err := Set(want)
	if err != nil {
		t.Fatal(err)
	}
	if n < len(before) {
		t.Fatalf("Set set %d threads, the process had %d", n, len(before))
	}
	// New threads: goroutines locked to their threads while others block.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			runtime.LockOSThread()
			<-release
		})
	}
	time.Sleep(50 * time.Millisecond)
	after, err := Of(0)
	close(release)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) <= len(before) {
		t.Logf("no new thread started (%d before, %d after)", len(before), len(after))
	}
	for tid, d := range after {
		if d != want {
			t.Errorf("thread %d: slack %v, want %v", tid, d, want)
		}
	}
	if len(after) == 0 {
		t.Fatal("no thread listed")
	}
}

// TestOfOtherProcess reads another process's threads (the slack systemd's
// TimerSlackNSec= or Set gave it).
func TestOfOtherProcess(t *testing.T) {
	m, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(m) == 0 {
		t.Fatal("no thread of this process listed")
	}
	if _, err := Of(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
