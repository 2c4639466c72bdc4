package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"
)

// syncBuffer is a log destination read while goroutines write.
type syncBuffer = hosttest.LogBuffer

// TestWatchReconcilesFirewall runs `relayguard watch` with the nftables
// enforcer inside a network namespace the test creates. On start the
// kernel's set is made equal to the ban store (a stray element goes, a
// missing ban comes back); when the operator deletes relayguard's table
// behind its back, the next ban's failure makes watch set the table up
// again with every ban in force.
func TestWatchReconcilesFirewall(t *testing.T) {
	for _, b := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(b); err != nil || os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI: needs root and %s", b)
			}
			t.Skipf("needs root and %s", b)
		}
	}
	bin := testBinary(t)
	dir := t.TempDir()
	ns := fmt.Sprintf("rgwatch%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	in := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	logPath := filepath.Join(dir, "mail.log")
	os.WriteFile(logPath, nil, 0o644)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nmaxretry = 1\nsubnet = []\nfiles = [%q]\n[firewall]\nbackend = \"nftables\"\n", logPath)), 0o644)
	rg := func(args ...string) string {
		t.Helper()
		return in(append([]string{bin, "--config", conf, "--data-dir", filepath.Join(dir, "data"), "--create-data-dir"}, args...)...)
	}
	set := func(name string) string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "set", "inet", "relayguard", name).CombinedOutput()
		return string(out)
	}

	// The kernel disagrees with the store before watch starts.
	rg("ban", "add", "203.0.113.0/24", "--for", "2h")
	rg("firewall", "setup")
	in("nft", "delete", "element", "inet", "relayguard", "ban4", "{ 203.0.113.0/24 }")
	in("nft", "add", "element", "inet", "relayguard", "ban4", "{ 192.0.2.99 timeout 1h }")

	cmd := exec.Command("ip", "netns", "exec", ns, bin, "--config", conf, "--data-dir", filepath.Join(dir, "data"), "watch")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("watch's output:\n%s", stderr)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; ban4:\n%s", what, set("ban4"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("the start reconcile", func() bool {
		s := set("ban4")
		return strings.Contains(s, "203.0.113.0/24") && !strings.Contains(s, "192.0.2.99")
	})
	waitFor("the follower to start", func() bool { return strings.Contains(stderr.String(), "logwatch: following") })

	// The operator flushes relayguard's table; watch does not notice until
	// it next writes to the kernel.
	in("nft", "delete", "table", "inet", "relayguard")
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%s mx1 postfix/smtpd[1]: warning: unknown[198.51.100.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n", time.Now().Format(time.Stamp))
	f.Close()
	waitFor("the table set up again with both bans", func() bool {
		s := set("ban4")
		return strings.Contains(s, "203.0.113.0/24") && strings.Contains(s, "198.51.100.9")
	})
	if out := in("nft", "list", "chain", "inet", "relayguard", "input"); !strings.Contains(out, "ip saddr @ban4") || !strings.Contains(out, "drop") {
		t.Fatalf("the drop rules were not set up again:\n%s", out)
	}
}
