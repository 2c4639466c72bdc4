package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// logWatch collects a process's stderr and waits for lines in it.
type logWatch struct {
	mu    sync.Mutex
	lines []string
	more  chan struct{}
}

func watchLog(t *testing.T, cmd *exec.Cmd) *logWatch {
	t.Helper()
	pr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	w := &logWatch{more: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
			select {
			case w.more <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// wait returns the first line from line `from` on that contains all of
// want, and the number of lines seen.
func (w *logWatch) wait(t *testing.T, from int, want ...string) (string, int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		for i := from; i < len(w.lines); i++ {
			ok := true
			for _, s := range want {
				ok = ok && strings.Contains(w.lines[i], s)
			}
			if ok {
				l := w.lines[i]
				w.mu.Unlock()
				return l, i + 1
			}
		}
		w.mu.Unlock()
		select {
		case <-w.more:
		case <-deadline:
			t.Fatalf("no log line with %q; log:\n%s", want, w.String())
		}
	}
}

func (w *logWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lines)
}

// smtpLine reads one reply line.
func smtpLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a reply: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

// smtpReply reads a whole reply and returns its last line.
func smtpReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	for {
		l := smtpLine(t, r)
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

func bannerOf(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return smtpLine(t, bufio.NewReader(c))
}

func certSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// SIGHUP reloads the configuration and the certificate of a running serve
// (as systemctl reload would): new sessions get the new hostname, local
// domains, listeners and certificate, the session that was open goes on,
// and a configuration that does not pass the checks is refused with a log
// line while serving continues on the one in force.
func TestServeReloadOnSIGHUP(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := certs.EnsureSelfSigned(certFile, keyFile, []string{"one.test"}); err != nil {
		t.Fatal(err)
	}
	mx := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	mx2 := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	conf := func(host, domain, extra string) string {
		return fmt.Sprintf(`hostname = %q
local_domains = [%q]
[admin]
listen = ""
[tls]
cert_file = %q
key_file = %q
[[listener]]
name = "mx"
address = %q
mode = "mx"
[[listener]]
name = "submissions"
address = %q
mode = "submissions"
%s`, host, domain, certFile, keyFile, mx, tlsAddr, extra)
	}
	cf := writeConf(t, dir, "relayguard.toml", conf("one.test", "one.test", ""))
	cmd := exec.Command(bin, "serve", "--config", cf, "--data-dir", data)
	logs := watchLog(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	_, seen := logs.wait(t, 0, "listening on "+tlsAddr)
	oldSerial := certSerial(t, tlsAddr)

	// A session opened before the reload.
	old, err := net.Dial("tcp", mx)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.SetDeadline(time.Now().Add(60 * time.Second))
	or := bufio.NewReader(old)
	if b := smtpLine(t, or); !strings.HasPrefix(b, "220 one.test ") {
		t.Fatalf("banner %q", b)
	}
	fmt.Fprintf(old, "EHLO client.test\r\n")
	smtpReply(t, or)

	// New configuration: another name and domain, one more listener, a
	// new certificate in the same files.
	os.Remove(certFile)
	os.Remove(keyFile)
	if _, err := certs.EnsureSelfSigned(certFile, keyFile, []string{"two.test"}); err != nil {
		t.Fatal(err)
	}
	writeConf(t, dir, "relayguard.toml", conf("two.test", "two.test", fmt.Sprintf("[[listener]]\nname = \"mx2\"\naddress = %q\nmode = \"mx\"\n", mx2)))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, seen := logs.wait(t, seen, "configuration reloaded")
	for _, key := range []string{"hostname", "local_domains", "listener"} {
		if !strings.Contains(line, key) {
			t.Errorf("reload log line does not name %s as changed: %s", key, line)
		}
	}
	if b := bannerOf(t, mx); !strings.HasPrefix(b, "220 two.test ") {
		t.Errorf("new session after the reload: banner %q", b)
	}
	if b := bannerOf(t, mx2); !strings.HasPrefix(b, "220 two.test ") {
		t.Errorf("listener added by the reload: banner %q", b)
	}
	if s := certSerial(t, tlsAddr); s == oldSerial {
		t.Errorf("the reload did not put the new certificate in use")
	}

	// The old session survived and keeps its rules: one.test is still
	// local to it (an unknown user there is 550, not relay denied).
	fmt.Fprintf(old, "MAIL FROM:<a@outside.test>\r\n")
	if r := smtpReply(t, or); !strings.HasPrefix(r, "250") {
		t.Fatalf("old session after the reload: MAIL %q", r)
	}
	fmt.Fprintf(old, "RCPT TO:<nobody@one.test>\r\n")
	if r := smtpReply(t, or); !strings.HasPrefix(r, "550 5.1.1") {
		t.Errorf("old session after the reload: RCPT %q, want 550 5.1.1 (one.test local as when it started)", r)
	}

	// A broken configuration is refused; the running one stays.
	writeConf(t, dir, "relayguard.toml", conf("three.test", "three.test", "[limits]\ncommand_timeout = 300\n"))
	cmd.Process.Signal(syscall.SIGHUP)
	line, seen = logs.wait(t, seen, "reload refused")
	if !strings.Contains(line, "limits.command_timeout = 300") {
		t.Errorf("refusal does not say why: %s", line)
	}
	// So is one whose certificate does not load.
	os.WriteFile(certFile, []byte("not a certificate\n"), 0o644)
	writeConf(t, dir, "relayguard.toml", conf("three.test", "three.test", ""))
	cmd.Process.Signal(syscall.SIGHUP)
	line, _ = logs.wait(t, seen, "reload refused")
	if !strings.Contains(line, "tls.cert_file") {
		t.Errorf("refusal does not name the certificate: %s", line)
	}
	if b := bannerOf(t, mx); !strings.HasPrefix(b, "220 two.test ") {
		t.Errorf("after refused reloads: banner %q, want the configuration in force (two.test)", b)
	}
	fmt.Fprintf(old, "QUIT\r\n")
	if r := smtpReply(t, or); !strings.HasPrefix(r, "221") {
		t.Errorf("old session QUIT: %q", r)
	}

	// SIGHUP did not stop the server; SIGTERM does, cleanly.
	select {
	case err := <-exited:
		t.Fatalf("serve exited after SIGHUP: %v\n%s", err, logs)
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	exited <- nil // for the cleanup
}
