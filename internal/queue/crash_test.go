package queue_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// TestMain lets the test binary re-execute itself as the crash test's
// child process (a server that accepts and delivers until SIGKILLed).
func TestMain(m *testing.M) {
	if os.Getenv("RG_CRASH_CHILD") == "1" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

func crashTransports(sink string) map[string]string {
	return map[string]string{"a.test": "smtp:" + sink, "b.test": "smtp:" + sink, "c.test": "smtp:" + sink}
}

// crashChild accepts messages into the spool (appending each acknowledged
// sequence number to the ack file, as a 250 reply would tell a client)
// while its scheduler delivers them, until it is killed.
func crashChild() int {
	sp, err := queue.OpenSpool(os.Getenv("RG_SPOOL"), time.Millisecond, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := testConfig(crashTransports(os.Getenv("RG_SINK")))
	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second)
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, nil, deliver.Options{Resolver: res})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s := queue.NewScheduler(sp, d, cfg.Delivery, cfg.Hostname, nil)
	go s.Run(context.Background())
	ack, err := os.OpenFile(os.Getenv("RG_ACK"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	n, _ := strconv.Atoi(os.Getenv("RG_N"))
	// 16 concurrent "SMTP sessions" put messages (sharing directory fsyncs).
	var mu sync.Mutex
	next := 0
	for w := 0; w < 16; w++ {
		go func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				env := &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission",
					Recipients: rcpts(fmt.Sprintf("u%d@a.test", i), fmt.Sprintf("u%d@b.test", i), fmt.Sprintf("u%d@c.test", i))}
				if _, err := sp.Put(context.Background(), env, strings.NewReader(message(i))); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(ack, "%d\n", i)
				mu.Unlock()
			}
		}()
	}
	select {}
}

func lines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i] // only complete lines
	} else {
		return nil
	}
	return strings.Split(s, "\n")
}

var seqRE = regexp.MustCompile(`Message-ID: <seq-(\d+)@test>`)

// SIGKILL the server while it accepts and delivers; after a restart every
// acknowledged message reaches every recipient at least once.
func TestCrashDuringDeliveryLosesNothing(t *testing.T) {
	sink := delivertest.StartSink(t)
	spoolDir := t.TempDir()
	ackFile := filepath.Join(t.TempDir(), "ack")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RG_CRASH_CHILD=1", "RG_SPOOL="+spoolDir, "RG_SINK="+sink.Addr, "RG_ACK="+ackFile, "RG_N=3000")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, "load on the child", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("child exited early: %v", err)
		default:
		}
		ents, _ := os.ReadDir(sink.Dir)
		return len(lines(ackFile)) >= 400 && len(ents) >= 100
	})
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	acked := lines(ackFile)

	sp := openSpool(t, spoolDir)
	pending := spoolLen(t, sp)
	t.Logf("killed after %d acknowledged messages; %d still in the spool", len(acked), pending)
	startScheduler(t, sp, testConfig(crashTransports(sink.Addr)))
	waitFor(t, "empty spool after restart", func() bool { return spoolLen(t, sp) == 0 })

	got := map[string]int{} // "seq/rcpt" -> deliveries
	for _, m := range sink.Messages(t) {
		sm := seqRE.FindStringSubmatch(m.Data)
		if sm == nil {
			t.Fatalf("sink message without sequence: %q", m.Data)
		}
		for _, r := range m.Rcpts {
			got[sm[1]+"/"+r]++
		}
	}
	dups := 0
	for _, seq := range acked {
		for _, dom := range []string{"a", "b", "c"} {
			k := fmt.Sprintf("%s/u%s@%s.test", seq, seq, dom)
			switch got[k] {
			case 0:
				t.Errorf("acknowledged message %s never delivered to u%s@%s.test", seq, seq, dom)
			case 1:
			default:
				dups++
			}
		}
	}
	t.Logf("%d acknowledged messages x 3 recipients delivered; %d recipient deliveries repeated after the crash (at least once)", len(acked), dups)
}
