package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// `relayguard policy --metrics` serves the metrics of the engine and of
// the policy front door from its own registry (they were registered on
// the global default one), and stops cleanly on SIGTERM.
//
// The collector settings it runs with are in its metrics: GOGC=400 and a
// soft memory limit of 512 MiB by default, the environment's own GOGC and
// GOMEMLIMIT when they are set.
func TestPolicyCommandMetrics(t *testing.T) {
	var env []string // without GOGC and GOMEMLIMIT
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			env = append(env, kv)
		}
	}
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"default", env, []string{"go_gc_gogc_percent 400\n", "go_gc_gomemlimit_bytes 5.36870912e+08\n"}},
		{"environment", append(env[:len(env):len(env)], "GOGC=150", "GOMEMLIMIT=1GiB"),
			[]string{"go_gc_gogc_percent 150\n", "go_gc_gomemlimit_bytes 1.073741824e+09\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) { policyCommandMetrics(t, tc.env, tc.want) })
	}
}

func policyCommandMetrics(t *testing.T, env, want []string) {
	bin := testBinary(t)
	dir := t.TempDir()
	metrics := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	cmd := exec.Command(bin, "policy", "--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "--listen", "127.0.0.1:0", "--metrics", metrics)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var out strings.Builder
	addrc := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`policy service listening.* address=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
		close(addrc)
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(30 * time.Second):
		t.Fatal("policy did not start")
	}
	if addr == "" {
		t.Fatal("policy exited before listening")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\nsender=a@remote.test\nrecipient=b@elsewhere.test\n\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(reply, "action=") {
		t.Fatalf("policy reply %q", reply)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range append([]string{"relayguard_policyd_requests_total", "relayguard_policy_decisions_total", "go_goroutines"}, want...) {
		if !strings.Contains(string(b), w) {
			t.Errorf("/metrics lacks %s:\n%s", w, b)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("policy after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Signal(os.Kill)
		t.Fatal("policy did not stop on SIGTERM")
	}
}
