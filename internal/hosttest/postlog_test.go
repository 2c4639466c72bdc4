package hosttest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestPostfixLogBurstNeverBlocks: a burst of 2,000 log records sent at
// once to a test Postfix's log socket, without waiting, is all queued (no
// sender would block) and all written to its log; Postfix's own lines
// reach the log too, and the instance stops. With postlogd's socket on a
// host whose net.unix.max_dgram_qlen is 10 (this one's, and every new
// network namespace's), the 11th record of a burst had to wait for
// postlogd — and postlogd, logging to its own socket while it starts,
// waited for ever: smtpd, the master and `postfix stop` behind it.
func TestPostfixLogBurstNeverBlocks(t *testing.T) {
	p := StartPostfix(t, PostfixConfig{Listen: "127.0.0.1:0"})
	sock := filepath.Join(p.QueueDir, "public", PostlogService)
	const n = 2000
	blocked := 0
	for i := range n {
		// One socket per record, as each Postfix process has its own.
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		rec := fmt.Appendf(nil, "Dec  6 10:00:00 mx rgtest/burst[1]: record %d of the burst", i)
		err = syscall.Sendto(fd, rec, syscall.MSG_DONTWAIT, &syscall.SockaddrUnix{Name: sock})
		syscall.Close(fd)
		if errors.Is(err, syscall.EAGAIN) {
			blocked++
			continue
		}
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if blocked > 0 {
		t.Errorf("%d of %d log records would have blocked their sender", blocked, n)
	}
	WaitLog := func(what string, cond func([]byte) bool) {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if b, _ := os.ReadFile(p.Log); cond(b) {
				return
			}
		}
		t.Fatalf("the log %s lacks %s", p.Log, what)
	}
	WaitLog("every record of the burst", func(b []byte) bool { return bytes.Count(b, []byte("rgtest/burst[1]: record ")) == n })
	WaitLog("Postfix's own start line", func(b []byte) bool { return bytes.Contains(b, []byte("postfix/master[")) })
	if err := StopPostfix(p.Etc, p.QueueDir); err != nil {
		t.Errorf("stop: %v", err)
	}
	if _, err := net.Dial("unix", filepath.Join(p.QueueDir, "public", "pickup")); err == nil {
		t.Errorf("Postfix still serves after StopPostfix")
	}
}
