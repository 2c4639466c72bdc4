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

// TestServeCrashUnderLoadLosesNothing SIGKILLs the real `relayguard serve`
// while 50 sessions send to it (messages committed through the intake
// journal, several sessions' messages per fdatasync), restarts it on the
// same data directory, and checks that every message that got 250 is in
// the spool, byte for byte, and is then delivered. The next hop tempfails
// until the restart, so the acknowledged messages are in every state at the
// kill: in the journal only, retried (updated envelope), moved to msg/.
func TestServeCrashUnderLoadLosesNothing(t *testing.T) {
	bin := testBinary(t)
	sink := delivertest.StartSink(t, "-r", ".") // 450 to every message
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mx := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	cf := filepath.Join(dir, "relayguard.toml")
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
`, mx, sink.Addr)
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	add := exec.Command(bin, "user", "add", "sink", "--password-stdin", "--config", cf, "--data-dir", data, "--create-data-dir")
	add.Stdin = strings.NewReader("crash test password\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	serve := func() (*exec.Cmd, *bytes.Buffer, chan struct{}) {
		cmd := exec.Command(bin, "serve", "--config", cf, "--data-dir", data)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("relayguard serve log:\n%s", logs.String())
			}
		})
		delivertest.WaitListening(t, "tcp", mx)
		return cmd, &logs, exited
	}
	first, _, exited := serve()
	start := time.Now()

	var mu sync.Mutex
	acked := map[string]string{} // queue id -> body
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Go(func() {
			c, err := net.Dial("tcp", mx)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			r := bufio.NewReader(c)
			read := func() string { l, _ := r.ReadString('\n'); return l }
			if !strings.HasPrefix(read(), "220") {
				return
			}
			fmt.Fprintf(c, "EHLO w%d.client.test\r\n", w)
			for l := read(); strings.HasPrefix(l, "250-"); l = read() {
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Sizes from a few hundred bytes to past the journal's
				// in-memory limit (those are committed as their own file).
				lines := 5 + (w*31+i*17)%400
				if i%97 == 0 {
					lines = 10000
				}
				body := fmt.Sprintf("Message-ID: <crash-%d-%d@client.test>\r\nSubject: crash %d/%d\r\n\r\n%s", w, i, w, i,
					strings.Repeat(fmt.Sprintf("worker %d message %d line\r\n", w, i), lines))
				fmt.Fprintf(c, "MAIL FROM:<w%d@client.test>\r\nRCPT TO:<sink@crash.test>\r\nDATA\r\n", w)
				if !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "354") {
					return
				}
				fmt.Fprintf(c, "%s.\r\n", body)
				l := read()
				id, ok := strings.CutPrefix(strings.TrimSpace(l), "250 2.0.0 Ok: queued as ")
				if !ok {
					return
				}
				mu.Lock()
				acked[id] = body
				mu.Unlock()
			}
		})
	}
	for i := 0; i < 6000; i++ {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 800 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	segs, _ := filepath.Glob(filepath.Join(data, "spool", "journal", "seg-*"))
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged before the kill")
	}
	if len(segs) == 0 {
		t.Fatal("no journal segment in the spool: the messages were not committed through the journal")
	}

	_, logs, _ := serve() // replays the journal before it listens
	sp, err := queue.OpenForAdmin(filepath.Join(data, "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for id, body := range acked {
		rc, err := sp.Open(id)
		if err != nil {
			t.Errorf("acknowledged message %s not in the spool after the restart: %v", id, err)
			continue
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		// What the spool holds is the Received field serve adds, then
		// the message as sent.
		if err != nil || !strings.HasPrefix(string(b), "Received: ") || !strings.HasSuffix(string(b), body) ||
			bytes.Count(b, []byte("Message-ID: ")) != 1 {
			t.Errorf("acknowledged message %s damaged after the restart (%v): %d bytes", id, err, len(b))
		}
	}
	if t.Failed() {
		return
	}
	replayed := ""
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, "journal replayed") {
			replayed = l
		}
	}
	t.Logf("%d messages acknowledged before SIGKILL (%v), %d journal segments; after restart: %s", len(acked), time.Since(start).Round(time.Millisecond), len(segs), replayed)

	// The next hop accepts now: every acknowledged message arrives.
	sink.Restart(t)
	want := map[string]bool{}
	for _, body := range acked {
		want[strings.SplitN(body, "\r\n", 2)[0]] = true
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := map[string]bool{}
		for _, m := range sink.Messages(t) {
			for l := range strings.SplitSeq(m.Data, "\n") {
				if strings.HasPrefix(l, "Message-ID: <crash-") {
					got[l] = true
				}
			}
		}
		missing := 0
		for k := range want {
			if !got[k] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			for id, body := range acked {
				if k := strings.SplitN(body, "\r\n", 2)[0]; !got[k] {
					env, err := sp.Load(id)
					t.Errorf("not delivered: %s %s (%d bytes): %+v %v", id, k, len(body), env, err)
				}
			}
			t.Fatalf("%d of %d acknowledged messages not delivered after the restart", missing, len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("all delivered (%v)", time.Since(start).Round(time.Millisecond))
}
