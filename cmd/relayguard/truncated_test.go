package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLogTruncatedWhileRead: a plain log truncated while report or watch
// --replay reads it (logrotate's copytruncate of the live mail.log, an
// operator's "> mail.log") is an error naming the file, or what was read
// is counted; the process does not die. Both map a plain file
// (unix.Mmap); a page past the new end of the file is a SIGBUS, and the Go
// runtime's "unexpected fault address ... fatal error: fault" with every
// goroutine's stack was all the operator got (exit 2).
func TestLogTruncatedWhileRead(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	var b strings.Builder
	for i := range 400000 {
		fmt.Fprintf(&b, "Dec  4 10:%02d:%02d mx1 postfix/smtpd[%d]: warning: unknown[203.0.113.%d]: SASL LOGIN authentication failed: authentication failure\n",
			i/60%60, i%60, 1000+i%5000, i%250)
	}
	text := b.String()
	for _, args := range [][]string{{"report"}, {"--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "watch", "--replay"}} {
		name := strings.Join(args, " ")
		path := filepath.Join(dir, "mail.log")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, append(args, path)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Truncated once the file is mapped: from then on its pages are
		// read through the mapping.
		maps := fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid)
		for {
			m, err := os.ReadFile(maps)
			if err != nil || strings.Contains(string(m), path) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if strings.Contains(stderr.String(), "SIGBUS") || strings.Contains(stderr.String(), "fatal error") {
			t.Errorf("%s: the log truncated while read killed the process (%v):\n%.600s", name, err, stderr.String())
			continue
		}
		// Read whole before the truncation reached it, or an error that
		// names the file and says what happened.
		if err != nil && (!strings.Contains(stderr.String(), path) || !strings.Contains(stderr.String(), "shrank while it was read")) {
			t.Errorf("%s: %v, and the error does not name %s as truncated:\n%.600s", name, err, path, stderr.String())
		}
		t.Logf("%s: %v: %.300s", name, err, stderr.String())
	}
}
