package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startServe runs `relayguard serve` with args and waits until the output
// has said that wantLines listeners (SMTP and admin) are up and then its
// last start-up notice (how to add a user).
func startServe(t *testing.T, cmd *exec.Cmd, wantLines int) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	out := &strings.Builder{}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		n, up := 0, false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "relayguard: ") && strings.Contains(sc.Text(), "listening on") || strings.Contains(sc.Text(), "admin/metrics on") {
				n++
			}
			// Start's last notice, after every listener's: waiting for
			// the listeners alone let TestServeEmbeddedDefaults read the
			// output before this line was there (CI at c0d49f5).
			if strings.HasPrefix(sc.Text(), "relayguard: add a user with:") && n >= wantLines && !up {
				up = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not come up:\n%s", out.String())
	}
	return cmd, out
}

func banner(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestServeEmbeddedDefaults is the README's first command: serve with no
// config file listens where the README says, makes a certificate, serves
// metrics, and stops cleanly on SIGTERM.
func TestServeEmbeddedDefaults(t *testing.T) {
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"127.0.0.1:2525", "127.0.0.1:5587", "127.0.0.1:5465", "127.0.0.1:9025"} {
		if c, err := net.DialTimeout("tcp", p, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s is already in use; the default-config test needs the default ports", p)
		}
	}
	// No --config and no --data-dir: state goes to ./relayguard-data.
	serve := exec.Command(bin, "serve")
	serve.Dir = t.TempDir()
	cmd, out := startServe(t, serve, 4)
	if _, err := os.Stat(filepath.Join(serve.Dir, "relayguard-data", "tls", "cert.pem")); err != nil {
		t.Errorf("no self-signed certificate under ./relayguard-data: %v", err)
	}
	c, err := net.Dial("tcp", "127.0.0.1:2525")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b := banner(t, c); !strings.HasPrefix(b, "220 ") {
		t.Fatalf("MX banner %q", b)
	}
	tc, err := tls.Dial("tcp", "127.0.0.1:5465", &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if b := banner(t, tc); !strings.HasPrefix(b, "220 ") {
		t.Fatalf("submissions banner %q", b)
	}
	resp, err := http.Get("http://127.0.0.1:9025/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "relayguard_smtp_connections_total") {
		t.Errorf("metrics lack relayguard_smtp_connections_total:\n%.500s", body)
	}
	if !strings.Contains(out.String(), "add a user with: relayguard user add USER") {
		t.Errorf("serve did not say how to add a user:\n%s", out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve exited with %v after SIGTERM:\n%s", err, out)
	}
}

// TestServeSocketActivation passes a listening socket the way systemd does
// (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID) and checks that the listener
// configured as "systemd:mx" serves on it.
func TestServeSocketActivation(t *testing.T) {
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(dir, "relayguard.toml")
	os.WriteFile(conf, []byte(`hostname = "activated.test"
[admin]
listen = ""
[[listener]]
name = "mx"
address = "systemd:mx"
mode = "mx"
`), 0o644)
	// LISTEN_PID must be the server's own pid: the shell execs into it.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" serve --config "$1" --data-dir "$2"`, bin, conf, filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=mx")
	cmd.ExtraFiles = []*os.File{f}
	startServe(t, cmd, 1)
	f.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b := banner(t, c); !strings.HasPrefix(b, "220 activated.test ") {
		t.Fatalf("banner on the activated socket: %q", b)
	}
}

// TestConfigPrintRoundTrip: what `config print` prints is a valid config
// that prints the same again.
func TestConfigPrintRoundTrip(t *testing.T) {
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	first, err := exec.Command(bin, "config", "print", "--data-dir", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(first), "# Trusted networks allowed to relay") || !strings.Contains(string(first), "mynetworks = []") {
		t.Errorf("config print lacks comments or the empty mynetworks:\n%.800s", first)
	}
	conf := filepath.Join(dir, "printed.toml")
	os.WriteFile(conf, first, 0o644)
	second, err := exec.Command(bin, "config", "print", "--config", conf, "--data-dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, second)
	}
	if string(first) != string(second) {
		t.Errorf("config print is not a fixed point")
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("mynetworks = [\"10.0.0.0/33\"]\n"), 0o644)
	out, err := exec.Command(bin, "config", "check", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `mynetworks[0] "10.0.0.0/33"`) {
		t.Errorf("bad mynetworks: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "config", "check", "--config", filepath.Join(dir, "typo.toml")).CombinedOutput()
	if err == nil {
		t.Errorf("missing config file accepted: %s", out)
	}
	os.WriteFile(filepath.Join(dir, "typo.toml"), []byte("mynetwork = []\n"), 0o644)
	out, err = exec.Command(bin, "config", "check", "--config", filepath.Join(dir, "typo.toml")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mynetwork") {
		t.Errorf("unknown key accepted or not named: %v\n%s", err, out)
	}
	_ = fmt.Sprint
}
