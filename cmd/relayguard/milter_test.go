package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/milter"
	"github.com/relayguard/relayguard/internal/timerslack"
)

// TestMilterTimerSlack: `relayguard milter`, started as root as the bench
// and a root service start it, runs every one of its threads — the Go
// runtime's monitor thread among them, started before main — with
// milter.TimerSlack, not the kernel's default of 50 µs.
func TestMilterTimerSlack(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CAP_SYS_NICE) for the milter to set its threads' slack")
		}
		t.Skip("needs root (CAP_SYS_NICE) for the milter to set its threads' slack")
	}
	bin := testBinary(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte("[firewall]\nbackend = \"none\"\n"), 0o644)
	cmd := exec.Command(bin, "--config", conf, "--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "milter", "--listen", "unix:"+filepath.Join(dir, "m.sock"))
	out := &syncBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	waitUntil(t, "the milter to listen", func() bool { return strings.Contains(out.String(), "milter listening") })
	slack, err := timerslack.Of(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(slack) < 2 {
		t.Fatalf("%d threads listed, want the runtime's several", len(slack))
	}
	for tid, d := range slack {
		if d != milter.TimerSlack {
			t.Errorf("thread %d: timer slack %v, want %v", tid, d, milter.TimerSlack)
		}
	}
	if strings.Contains(out.String(), "timer slack not set") {
		t.Errorf("the milter says it could not set the slack:\n%s", out)
	}
}
