//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair with /dev/ptmx (no pty library is
// in go.mod; this is the few ioctls it would do).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no pseudo-terminals: %v", err)
		}
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// ptySession runs the command on a terminal and lets the test type into it.
type ptySession struct {
	t      *testing.T
	master *os.File
	slave  *os.File
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	eof    chan struct{} // closed when the terminal has no more output
}

func startOnPTY(t *testing.T, args ...string) *ptySession {
	t.Helper()
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	m, s := openPTY(t)
	p := &ptySession{t: t, master: m, slave: s, cmd: exec.Command(bin, args...), eof: make(chan struct{})}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = s, s, s
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.eof)
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return p
}

func (p *ptySession) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// until polls cond; the deadline only keeps a broken build from hanging
// the test run, it is not a timing assertion.
func (p *ptySession) until(what string, cond func() bool) {
	p.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("gave up waiting for %s; output so far %q", what, p.output())
		}
	}
}

// typeSecret waits for the prompt and for echo to be switched off on the
// terminal, then types line.
func (p *ptySession) typeSecret(prompt, line string, count int) {
	p.t.Helper()
	p.until(fmt.Sprintf("prompt %q", prompt), func() bool { return strings.Count(p.output(), prompt) >= count })
	p.until("echo off", func() bool {
		tio, err := unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO == 0
	})
	if _, err := p.master.Write([]byte(line + "\n")); err != nil {
		p.t.Fatal(err)
	}
}

func (p *ptySession) wait() int {
	p.t.Helper()
	err := p.cmd.Wait()
	// With every slave descriptor closed, reading the master drains
	// what is left and then fails (EIO): all output is in.
	p.slave.Close()
	<-p.eof
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return 0
}

// TestUserPasswordPrompt types passwords at the no-echo prompt on a real
// pseudo-terminal: twice, never echoed; a mismatch or an empty password is
// refused.
func TestUserPasswordPrompt(t *testing.T) {
	data := t.TempDir()

	p := startOnPTY(t, "--data-dir", data, "user", "add", "eve")
	p.typeSecret("Password:", "hunter2-pty", 1)
	p.typeSecret("Again:", "hunter2-pty", 1)
	if code := p.wait(); code != 0 || !strings.Contains(p.output(), "added account eve") {
		t.Fatalf("exit %d, output %q", code, p.output())
	}
	if strings.Contains(p.output(), "hunter2") {
		t.Fatalf("password echoed: %q", p.output())
	}

	p = startOnPTY(t, "--data-dir", data, "user", "passwd", "eve")
	p.typeSecret("Password:", "one", 1)
	p.typeSecret("Again:", "two", 1)
	if code := p.wait(); code == 0 || !strings.Contains(p.output(), "differ") {
		t.Fatalf("mismatch: exit %d, output %q", code, p.output())
	}

	p = startOnPTY(t, "--data-dir", data, "user", "add", "frank")
	p.typeSecret("Password:", "", 1)
	if code := p.wait(); code == 0 || !strings.Contains(p.output(), "empty password") {
		t.Fatalf("empty: exit %d, output %q", code, p.output())
	}

	r := runCLI(t, "", "--data-dir", data, "user", "list")
	if !strings.Contains(r.stdout, "eve") || strings.Contains(r.stdout, "frank") {
		t.Fatalf("list after prompts: %q", r.stdout)
	}
}
