package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// watchProc is a running `relayguard watch`.
type watchProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
}

func startWatch(t *testing.T, bin, conf, data string) *watchProc {
	t.Helper()
	cmd := exec.Command(bin, "--config", conf, "--data-dir", data, "--create-data-dir", "watch")
	w := &watchProc{cmd: cmd, stderr: &syncBuffer{}}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("watch's output:\n%s", w.stderr)
		}
	})
	waitUntil(t, "watch to follow the log", func() bool { return strings.Contains(w.stderr.String(), "logwatch: following") })
	return w
}

// stop ends watch as systemd does (SIGTERM) and waits for it.
func (w *watchProc) stop(t *testing.T) {
	t.Helper()
	w.cmd.Process.Signal(os.Interrupt)
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("watch exited with %v:\n%s", err, w.stderr)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

// TestWatchCountsSurviveRestart: with maxretry = 4, an attacker fails three
// times, `watch` is restarted (as by an upgrade or a reboot), and the fourth
// failure bans it: the failure counts are kept in the database (issue 12
// item 12), not in the process's memory. A second address whose three
// failures were counted before the restart and that fails no more is not
// banned.
func TestWatchCountsSurviveRestart(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "mail.log")
	os.WriteFile(logPath, nil, 0o644)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nmaxretry = 4\nfindtime = \"1h\"\nsubnet = []\nfiles = [%q]\n[firewall]\nbackend = \"none\"\n", logPath)), 0o644)
	failure := func(ip string) string {
		return fmt.Sprintf("%s mx1 postfix/submission/smtpd[%d]: warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
			time.Now().Format(time.Stamp), os.Getpid(), ip)
	}
	bans := func() string {
		out, err := exec.Command(bin, "--config", conf, "--data-dir", data, "ban", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ban list: %v\n%s", err, out)
		}
		return string(out)
	}
	counted := func(ip string) int {
		db, err := store.OpenSQLite(context.Background(), data)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM guard_failures WHERE ip = ?`, ip).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	w := startWatch(t, bin, conf, data)
	appendLines(t, logPath, failure("198.51.100.9"), failure("198.51.100.9"), failure("198.51.100.9"),
		failure("203.0.113.77"), failure("203.0.113.77"), failure("203.0.113.77"))
	waitUntil(t, "three failures of each address counted", func() bool {
		return counted("198.51.100.9") == 3 && counted("203.0.113.77") == 3
	})
	w.stop(t)
	if b := bans(); strings.Contains(b, "198.51.100.9") {
		t.Fatalf("banned after three failures with maxretry = 4:\n%s", b)
	}

	w = startWatch(t, bin, conf, data)
	appendLines(t, logPath, failure("198.51.100.9"))
	waitUntil(t, "the fourth failure to ban", func() bool { return strings.Contains(bans(), "198.51.100.9/32") })
	if b := bans(); strings.Contains(b, "203.0.113.77") {
		t.Fatalf("an address with three failures was banned:\n%s", b)
	}
	if !strings.Contains(w.stderr.String(), "4 failures in 1h0m0s") {
		t.Errorf("the ban does not say it counted four failures:\n%s", w.stderr)
	}
	w.stop(t)
}
