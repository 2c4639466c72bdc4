package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// crashServe is the set-up the crash tests share: a data directory with
// one local user, a config with an MX listener on a free port that sends
// crash.test to nextHop, and a way to start (and restart) the real
// `relayguard serve` on it.
type crashServe struct {
	t             *testing.T
	bin, cf, data string
	mx            string // the MX listener's address
}

// servedProc is one running `relayguard serve`: its process, its merged
// stdout/stderr, and a channel closed when it has exited.
type servedProc struct {
	cmd    *exec.Cmd
	logs   *bytes.Buffer
	exited chan struct{}
}

func newCrashServe(t *testing.T, nextHop string) *crashServe {
	t.Helper()
	c := &crashServe{t: t, bin: testBinary(t)}
	dir := t.TempDir()
	c.data = filepath.Join(dir, "data")
	c.mx = fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	c.cf = filepath.Join(dir, "relayguard.toml")
	conf := fmt.Sprintf(`hostname = "crash.test"
local_domains = ["crash.test"]
[admin]
listen = ""
[limits]
max_connections_per_ip = 1000
max_connections_per_net = 1000
[[listener]]
name = "mx"
address = %q
mode = "mx"
[delivery]
retry_schedule = ["1s"]
[delivery.transports]
"crash.test" = "smtp:%s"
`, c.mx, nextHop)
	if err := os.WriteFile(c.cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	add := exec.Command(c.bin, "user", "add", "sink", "--password-stdin", "--config", c.cf, "--data-dir", c.data, "--create-data-dir")
	add.Stdin = strings.NewReader("crash test password\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	return c
}

// start runs serve and returns once its MX listener accepts (after the
// journal's replay).
func (c *crashServe) start() *servedProc {
	c.t.Helper()
	p := c.launch()
	delivertest.WaitListening(c.t, "tcp", c.mx)
	return p
}

// launch runs serve and returns at once. The test's cleanup kills it and,
// if the test failed, logs what it wrote.
func (c *crashServe) launch() *servedProc {
	t := c.t
	t.Helper()
	p := &servedProc{cmd: exec.Command(c.bin, "serve", "--config", c.cf, "--data-dir", c.data), logs: &bytes.Buffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("relayguard serve log:\n%s", p.logs.String())
		}
	})
	return p
}

// kill SIGKILLs the process and waits until it is gone.
func (p *servedProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// checkSpooled opens the spool as the queue commands do and checks that
// every acknowledged message (queue id -> message as sent) is there,
// byte for byte behind the Received field serve adds, and returns the
// spool (closed by the test's cleanup).
func (c *crashServe) checkSpooled(acked map[string]string) *queue.Spool {
	t := c.t
	t.Helper()
	sp, err := queue.OpenForAdmin(filepath.Join(c.data, "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	for id, body := range acked {
		rc, err := sp.Open(id)
		if err != nil {
			t.Errorf("acknowledged message %s not in the spool after the restart: %v", id, err)
			continue
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !strings.HasPrefix(string(b), "Received: ") || !strings.HasSuffix(string(b), body) ||
			bytes.Count(b, []byte("Message-ID: ")) != 1 {
			t.Errorf("acknowledged message %s damaged after the restart (%v): %d bytes", id, err, len(b))
		}
	}
	return sp
}

// journalSegments lists the intake journal's segment files, oldest first.
func (c *crashServe) journalSegments() []string {
	segs, _ := filepath.Glob(filepath.Join(c.data, "spool", "journal", "seg-*"))
	return segs
}

// crashMessage is message i of session w: a Message-ID of the test's tag,
// then lines lines of text, CRLF line ends.
func crashMessage(tag string, w, i, lines int) string {
	return fmt.Sprintf("Message-ID: <%s-%d-%d@client.test>\r\nSubject: %s %d/%d\r\n\r\n%s", tag, w, i, tag, w, i,
		strings.Repeat(fmt.Sprintf("worker %d message %d line\r\n", w, i), lines))
}

// crashLoad is n SMTP sessions sending to one local recipient until it is
// stopped; every message answered 250 is recorded with its queue id.
type crashLoad struct {
	mu    sync.Mutex
	acked map[string]string // message (as made by msg) -> queue id
	stop  chan struct{}
	wg    sync.WaitGroup
}

// startCrashLoad opens n sessions to mx; session w's i-th message is
// msg(w, i), a whole message with CRLF line ends.
func startCrashLoad(mx string, n int, msg func(w, i int) string) *crashLoad {
	l := &crashLoad{acked: map[string]string{}, stop: make(chan struct{})}
	for w := range n {
		l.wg.Go(func() {
			c, err := net.Dial("tcp", mx)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			r := bufio.NewReader(c)
			read := func() string { s, _ := r.ReadString('\n'); return s }
			if !strings.HasPrefix(read(), "220") {
				return
			}
			fmt.Fprintf(c, "EHLO w%d.client.test\r\n", w)
			for s := read(); strings.HasPrefix(s, "250-"); s = read() {
			}
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				body := msg(w, i)
				fmt.Fprintf(c, "MAIL FROM:<w%d@client.test>\r\nRCPT TO:<sink@crash.test>\r\nDATA\r\n", w)
				if !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "354") {
					return
				}
				fmt.Fprintf(c, "%s.\r\n", body)
				id, ok := strings.CutPrefix(strings.TrimSpace(read()), "250 2.0.0 Ok: queued as ")
				if !ok {
					return
				}
				l.mu.Lock()
				l.acked[body] = id
				l.mu.Unlock()
			}
		})
	}
	return l
}

// waitAcked waits (up to 60 s) until at least n messages were acknowledged.
func (l *crashLoad) waitAcked(n int) {
	for range 6000 {
		l.mu.Lock()
		got := len(l.acked)
		l.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish stops the sessions (they end at their next message or when the
// server is gone) and returns what was acknowledged.
func (l *crashLoad) finish() map[string]string {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}
