package timerslack

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
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

// TestSetUnprivilegedAlreadySet: a process without CAP_SYS_NICE started
// with the slack (as under a unit's TimerSlackNSec=; here inherited from
// its parent) gets no error from Set; asking for another slack, it is
// refused for the other threads, by name.
func TestSetUnprivilegedAlreadySet(t *testing.T) {
	if want := os.Getenv("RG_SLACK_CHILD"); want != "" {
		d, _ := time.ParseDuration(want)
		if n, err := Set(d); err != nil || n < 1 {
			t.Fatalf("Set(%v) as uid %d: %d threads, %v", d, os.Geteuid(), n, err)
		}
		if _, err := Set(d + time.Microsecond); err == nil || !strings.Contains(err.Error(), "timerslack_ns") {
			t.Fatalf("Set of another slack as uid %d: %v, want a refusal naming the file", os.Geteuid(), err)
		}
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run a child as another user")
		}
		t.Skip("needs root to run a child as another user")
	}
	const want = 900 * time.Microsecond
	// The child inherits the slack of the thread that starts it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, err := Set(want); err != nil {
		t.Fatal(err)
	}
	// A copy of the test binary that nobody may run (go test's build
	// directory is its owner's only).
	dir, err := os.MkdirTemp("", "timerslack")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "timerslack.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cmd := exec.Command(bin, "-test.run=^TestSetUnprivilegedAlreadySet$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "RG_SLACK_CHILD="+want.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
}
