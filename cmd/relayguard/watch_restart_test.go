package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// TestWatchJournalctlRestarted: the journal source's journalctl killed
// (the OOM killer, an operator's pkill) is started again after the last
// entry read, and the failures logged meanwhile ban the attacker. The
// source stopped for good before ("watch: journal source stopped ...
// signal: terminated"): watch ran on, reading nothing and banning nobody.
// The journal is a real one: systemd-journal-remote writes the entries to
// a journal file, and the journalctl watch runs (through a wrapper first
// in PATH that adds --file) is the real one.
func TestWatchJournalctlRestarted(t *testing.T) {
	t.Parallel()
	remote := "/lib/systemd/systemd-journal-remote"
	for _, p := range []string{remote, "journalctl"} {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal(err)
			}
			t.Skip(err)
		}
	}
	journalctl, _ := exec.LookPath("journalctl")
	bin := testBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	jf := filepath.Join(dir, "mail.journal")
	n := 0
	failures := func(ip string, k int) {
		t.Helper()
		var export strings.Builder
		for range k {
			n++
			fmt.Fprintf(&export, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=mx1\nSYSLOG_IDENTIFIER=postfix/submission/smtpd\n_PID=7\nMESSAGE=warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n\n",
				time.Now().UnixMicro(), n, ip)
		}
		cmd := exec.Command(remote, "-o", jf, "-")
		cmd.Stdin = strings.NewReader(export.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
		}
	}
	failures("192.0.2.200", 4) // before watch starts: not read (-n 0)
	wrappers := filepath.Join(dir, "bin")
	os.Mkdir(wrappers, 0o755)
	starts := filepath.Join(dir, "journalctl.args")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\nexec %q --file=%q \"$@\"\n", starts, journalctl, jf)
	if err := os.WriteFile(filepath.Join(wrappers, "journalctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte("[guard]\nmaxretry = 4\nfindtime = \"1h\"\nsubnet = []\njournal = true\n[firewall]\nbackend = \"none\"\n"), 0o644)
	cmd := exec.Command(bin, "--config", conf, "--data-dir", data, "--create-data-dir", "watch")
	cmd.Env = append(os.Environ(), "PATH="+wrappers+":"+os.Getenv("PATH"))
	_, stop := startLogged(t, cmd)
	defer stop()
	bans := func() string {
		out, err := exec.Command(bin, "--config", conf, "--data-dir", data, "ban", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ban list: %v\n%s", err, out)
		}
		return string(out)
	}
	// journalctl: the child of watch's (the wrapper execs it).
	child := func() int {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", cmd.Process.Pid))
		for _, task := range tasks {
			var pid int
			if c, _ := os.ReadFile(task); len(c) > 0 {
				fmt.Sscan(string(c), &pid)
				return pid
			}
		}
		return 0
	}
	counted := func(ip string) int {
		db, err := store.OpenSQLite(context.Background(), data)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var k int
		db.QueryRow(`SELECT count(*) FROM guard_failures WHERE ip = ?`, ip).Scan(&k)
		return k
	}
	waitUntil(t, "journalctl to follow the journal", func() bool {
		b, _ := os.ReadFile(starts)
		return child() != 0 && len(b) > 0
	})
	failures("198.51.100.9", 2)
	waitUntil(t, "two failures counted", func() bool { return counted("198.51.100.9") == 2 })
	if err := syscall.Kill(child(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	failures("198.51.100.9", 2)
	waitUntil(t, "the failures logged after journalctl was killed to ban", func() bool { return strings.Contains(bans(), "198.51.100.9/32") })
	b, _ := os.ReadFile(starts)
	if runs := strings.Split(strings.TrimSpace(string(b)), "\n"); len(runs) != 2 || !strings.Contains(runs[1], "--after-cursor") {
		t.Errorf("journalctl runs: %q; want a second, after the last entry read", runs)
	}
	if strings.Contains(bans(), "192.0.2.200") {
		t.Error("entries from before watch started were read")
	}
}
