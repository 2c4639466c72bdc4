package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonsSurviveSIGHUP: policy, milter and watch cannot reload, and Go's
// default for SIGHUP ends a process (exit 129): a `kill -HUP` meant as a
// reload stopped the service silently. Each daemon is started as systemd
// starts it, sent SIGHUP twice, must say in its log that nothing changed,
// keep working (watch still counts a failure written after the signal), and
// then exit 0 on SIGTERM — which it cannot if the SIGHUP had killed it.
func TestDaemonsSurviveSIGHUP(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	os.WriteFile(logPath, nil, 0o644)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nmaxretry = 1\nfindtime = \"1h\"\nsubnet = []\nfiles = [%q]\n[firewall]\nbackend = \"none\"\n", logPath)), 0o644)
	for _, d := range []struct {
		name  string
		args  []string
		ready string
	}{
		{"policy", []string{"policy", "--listen", "127.0.0.1:0"}, "policy service listening"},
		{"milter", []string{"milter", "--listen", "127.0.0.1:0"}, "milter listening"},
		{"watch", []string{"watch"}, "logwatch: following"},
	} {
		t.Run(d.name, func(t *testing.T) {
			data := filepath.Join(dir, "data-"+d.name)
			cmd := exec.Command(bin, append([]string{"--config", conf, "--data-dir", data, "--create-data-dir"}, d.args...)...)
			out := &syncBuffer{}
			cmd.Stderr = out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					cmd.Process.Kill()
					cmd.Wait()
				}
				if t.Failed() {
					t.Logf("%s's output:\n%s", d.name, out)
				}
			})
			waitUntil(t, d.name+" to start", func() bool { return strings.Contains(out.String(), d.ready) })
			for i := 0; i < 2; i++ {
				if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, "the SIGHUP to be logged", func() bool {
					return strings.Count(out.String(), "SIGHUP ignored") == i+1
				})
			}
			if d.name == "watch" {
				line := fmt.Sprintf("%s mx1 postfix/submission/smtpd[%d]: warning: unknown[198.51.100.31]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
					time.Now().Format(time.Stamp), os.Getpid())
				appendLines(t, logPath, line)
				waitUntil(t, "watch to ban after the SIGHUP", func() bool { return strings.Contains(out.String(), "198.51.100.31") })
			}
			cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%s after SIGHUP and SIGTERM: %v (want exit 0)", d.name, err)
			}
		})
	}
}
