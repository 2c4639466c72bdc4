package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/redistest"
)

// TestWatchBansOnFullDisk: with its data directory's file system full (a
// 4 MB tmpfs in a mount namespace the test creates, filled after watch
// started), watch still counts an attacker's failures (in memory while the
// database cannot be written) and puts the ban into the firewall
// (nftables, in a network namespace of its own). It banned nobody: every
// failure was "guard: failure counter unavailable: database or disk is
// full", so filling the disk (a spool on the same file system) opened the
// door to password guessing. And the position of the log file, which
// cannot be saved either, was logged as failing 20 times a second.
func TestWatchBansOnFullDisk(t *testing.T) {
	t.Parallel()
	hosttest.NeedRoot(t, "unshare", "mount", "nft", "dd")
	bin := testBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	logPath := filepath.Join(dir, "mail.log")
	os.WriteFile(logPath, nil, 0o644)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nmaxretry = 3\nsubnet = []\nfiles = [%q]\n[firewall]\nbackend = \"nftables\"\n", logPath)), 0o644)
	// The script runs inside the namespaces; it waits for each step by
	// polling (at most 30 s each) and prints the firewall's sets.
	script := fmt.Sprintf(`set -u
mount -t tmpfs -o size=4m tmpfs %[1]q || exit 1
%[2]q --config %[3]q --data-dir %[1]q watch > %[4]q 2>&1 &
W=$!
wait_for() { i=0; while ! eval "$1"; do i=$((i+1)); [ $i -gt 300 ] && return 1; sleep 0.1; done; }
wait_for 'grep -q "logwatch: following" %[4]q' || { echo "watch did not start"; kill $W; exit 1; }
dd if=/dev/zero of=%[1]q/fill bs=64k 2>/dev/null
echo "disk: $(df --output=avail %[1]q | tail -n 1 | tr -d " ")"
for i in 1 2 3; do echo "$(date '+%%b %%e %%H:%%M:%%S') mx postfix/smtpd[1]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6" >> %[5]q; done
wait_for 'nft list ruleset | grep -q 203.0.113.9' || echo "no ban in the firewall"
nft list ruleset | grep elements
sleep 2 # (the position is saved every second: some saves fail)
kill $W; wait $W
`, data, bin, conf, filepath.Join(dir, "watch.log"), logPath)
	out, err := exec.Command("unshare", "-m", "-n", "sh", "-c", script).CombinedOutput()
	logged, _ := os.ReadFile(filepath.Join(dir, "watch.log"))
	if err != nil {
		t.Fatalf("%v\n%s\nwatch's log:\n%s", err, out, logged)
	}
	if !strings.Contains(string(out), "disk: 0") {
		t.Fatalf("the disk was not full:\n%s", out)
	}
	if !strings.Contains(string(out), "203.0.113.9") || strings.Contains(string(out), "no ban") {
		t.Errorf("no ban in the firewall with the disk full:\n%s\nwatch's log:\n%s", out, logged)
	}
	// The file's position cannot be saved either: said once (then once a
	// minute), not at every 50 ms poll into the full disk.
	n := 0
	for _, l := range strings.Split(string(logged), "\n") {
		if strings.Contains(l, "save position") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d lines about saving the position, want 1:\n%s", n, logged)
	}
}

// TestWatchSharesBanOnFullDisk: with [store] url (Redis) and the data
// directory's disk full, the ban watch decides still reaches Redis, and so
// the other servers. The shared store wrote nothing when the local
// database refused the ban first.
func TestWatchSharesBanOnFullDisk(t *testing.T) {
	t.Parallel()
	hosttest.NeedRoot(t, "unshare", "mount", "dd", "redis-cli")
	srv := redistest.Start(t)
	bin := testBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	logPath := filepath.Join(dir, "mail.log")
	os.WriteFile(logPath, nil, 0o644)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[store]\nurl = %q\n[guard]\nmaxretry = 3\nsubnet = []\nfiles = [%q]\n[firewall]\nbackend = \"none\"\n", srv.URL(), logPath)), 0o644)
	script := fmt.Sprintf(`set -u
mount -t tmpfs -o size=4m tmpfs %[1]q || exit 1
%[2]q --config %[3]q --data-dir %[1]q watch > %[4]q 2>&1 &
W=$!
wait_for() { i=0; while ! eval "$1"; do i=$((i+1)); [ $i -gt 300 ] && return 1; sleep 0.1; done; }
wait_for 'grep -q "shared store synchronised" %[4]q' || { echo "watch did not start"; kill $W; exit 1; }
dd if=/dev/zero of=%[1]q/fill bs=64k 2>/dev/null
echo "disk: $(df --output=avail %[1]q | tail -n 1 | tr -d " ")"
for i in 1 2 3; do echo "$(date '+%%b %%e %%H:%%M:%%S') mx postfix/smtpd[1]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6" >> %[5]q; done
wait_for 'grep -q "msg=banned" %[4]q' || echo "not banned"
wait_for 'redis-cli -u %[6]q HEXISTS relayguard:bans 203.0.113.9/32 | grep -q 1' || echo "not in Redis"
kill $W; wait $W
`, data, bin, conf, filepath.Join(dir, "watch.log"), logPath, srv.URL())
	out, err := exec.Command("unshare", "-m", "sh", "-c", script).CombinedOutput()
	logged, _ := os.ReadFile(filepath.Join(dir, "watch.log"))
	if err != nil {
		t.Fatalf("%v\n%s\nwatch's log:\n%s", err, out, logged)
	}
	if !strings.Contains(string(out), "disk: 0") {
		t.Fatalf("the disk was not full:\n%s", out)
	}
	if strings.Contains(string(out), "not banned") || strings.Contains(string(out), "not in Redis") {
		t.Errorf("the ban did not reach Redis with the disk full:\n%s\nwatch's log:\n%s", out, logged)
	}
}
