package smtpd

import (
	"bufio"
	"context"
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

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// TestMain lets the test binary act as a server process for the crash
// test: with RG_CRASH_CHILD set it serves the MX listener of the spool in
// that directory until killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("RG_CRASH_CHILD"); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

func crashChild(dir string) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.Hostname = testHost
	cfg.LocalDomains = []string{testHost}
	cfg.Listeners = []config.ListenerConfig{{Name: "mx", Address: "127.0.0.1:0", Mode: config.ModeMX}}
	if err := cfg.Finish(dir); err != nil {
		panic(err)
	}
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		panic(err)
	}
	users, err := userdb.Open(ctx, db, userdb.Options{PasswordHash: "bcrypt", SCRAMIterations: 4096})
	if err != nil {
		panic(err)
	}
	if err := users.Add(ctx, "alice", testPassword); err != nil && !strings.Contains(err.Error(), "exist") {
		panic(err)
	}
	spool, err := queue.OpenSpool(filepath.Join(dir, "spool"), time.Millisecond, nil)
	if err != nil {
		panic(err)
	}
	srv, err := New(cfg.SMTP(), Deps{Users: users, Creds: users, Spool: spool})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(ln.Addr().String())
	srv.Serve(ctx, ln, cfg.Listeners[0])
}

func startCrashChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RG_CRASH_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child did not start: %v", err)
	}
	return cmd, strings.TrimSpace(addr)
}

// TestCrashLosesNothingAcknowledged sends from 20 concurrent clients,
// SIGKILLs the server mid-stream, restarts it on the same spool, and checks
// that every message that got 250 is there, whole.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	child, addr := startCrashChild(t, dir)

	var mu sync.Mutex
	acked := map[string]string{} // queue id → body
	var total int
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
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
			fmt.Fprintf(c, "EHLO w%d\r\n", w)
			for l := read(); strings.HasPrefix(l, "250-"); l = read() {
			}
			for i := 0; i < 500; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("Subject: crash %d/%d\r\n\r\n%s\r\n", w, i, strings.Repeat(fmt.Sprintf("worker %d message %d\r\n", w, i), 100))
				fmt.Fprintf(c, "MAIL FROM:<w%d@remote.example>\r\nRCPT TO:<alice@mail.test>\r\nDATA\r\n", w)
				if !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "250") || !strings.HasPrefix(read(), "354") {
					return
				}
				fmt.Fprintf(c, "%s.\r\n", body)
				l := read()
				if !strings.HasPrefix(l, "250 2.0.0 Ok: queued as ") {
					return
				}
				id := strings.TrimSpace(strings.TrimPrefix(l, "250 2.0.0 Ok: queued as "))
				mu.Lock()
				acked[id] = body
				total++
				mu.Unlock()
			}
		}(w)
	}
	// Kill once a good number of messages were acknowledged (bounded wait).
	for i := 0; i < 3000; i++ {
		mu.Lock()
		n := total
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged before the kill")
	}
	// Restart: the spool recovers; every acknowledged message must be there.
	_, _ = startCrashChild(t, dir)
	spool, err := queue.OpenForAdmin(filepath.Join(dir, "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	list, err := spool.List()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range list {
		have[e.ID] = true
	}
	for id, body := range acked {
		if !have[id] {
			t.Errorf("acknowledged message %s lost", id)
			continue
		}
		rc, err := spool.Open(id)
		var b []byte
		if err == nil {
			b, err = io.ReadAll(rc)
			rc.Close()
		}
		if err != nil || !strings.HasSuffix(string(b), body) {
			t.Errorf("acknowledged message %s damaged: %v", id, err)
		}
	}
	t.Logf("%d messages acknowledged before SIGKILL, %d in the spool after restart", len(acked), len(list))
}
