package logwatch

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// countingSink counts the failures published for each address.
type countingSink struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

func (s *countingSink) Publish(_ context.Context, e event.Event) {
	if e.Kind != event.AuthFailure {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n[e.IP] += e.Count()
}

// TestDovecotSummaryWithoutAuthVerbose (issue 12 leftover): a real Dovecot
// 2.3 with auth_verbose off logs a guesser only in its login process's
// summary when the client goes — "Disconnected (auth failed, N attempts in
// S secs)", "Aborted login (auth failed, N attempts …)" — one line for N
// guesses. Three clients guess 3, 2 and 1 passwords on one IMAP connection
// each (the first logs out, the second drops the connection, the third
// logs out); the log has no auth-process line, and the guard counts 3, 2
// and 1 failures for their addresses (so that maxretry counts guesses, not
// connections), where fail2ban's dovecot filter counts one per line.
func TestDovecotSummaryWithoutAuthVerbose(t *testing.T) {
	t.Parallel()
	d, addr := startIMAPDovecot(t, "auth_verbose = no\n")
	guessers := []struct {
		src     netip.Addr
		guesses int
		logout  bool
	}{
		{netip.MustParseAddr("127.0.0.21"), 3, true},
		{netip.MustParseAddr("127.0.0.22"), 2, false},
		{netip.MustParseAddr("127.0.0.23"), 1, true},
	}
	var wg sync.WaitGroup
	for _, g := range guessers {
		wg.Go(func() {
			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: g.src.AsSlice()}, Timeout: 5 * time.Second}).Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			// Dovecot delays an address's repeated failures (up to 15 s).
			c.SetDeadline(time.Now().Add(90 * time.Second))
			r := bufio.NewReader(c)
			r.ReadString('\n')
			for i := range g.guesses {
				fmt.Fprintf(c, "a%d LOGIN alice wrong%d\r\n", i, i)
				if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, fmt.Sprintf("a%d NO", i)) {
					t.Errorf("%s guess %d: %q", g.src, i, l)
					return
				}
			}
			if g.logout {
				fmt.Fprintf(c, "z LOGOUT\r\n")
				r.ReadString('\n')
			}
		})
	}
	wg.Wait()
	hosttest.Eventually(t, "the login processes' summaries", func() bool {
		b, _ := os.ReadFile(d.Log)
		return strings.Count(string(b), "(auth failed, ") == len(guessers)
	})
	b, err := os.ReadFile(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	if strings.Contains(log, "Password mismatch") || strings.Contains(log, "passwd-file(") {
		t.Fatalf("auth_verbose is on: the auth process logged the failures:\n%s", log)
	}
	sink := &countingSink{n: map[netip.Addr]int{}}
	once := NewOnce(sink)
	p := newTestParser()
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if strings.Contains(line, "(auth failed, ") {
			t.Logf("Dovecot: %s", line)
		}
		if e, ok := p.Parse(line); ok {
			once.Publish(context.Background(), e)
		}
	}
	for _, g := range guessers {
		if got := sink.n[g.src]; got != g.guesses {
			t.Errorf("%s guessed %d passwords, %d failures counted:\n%s", g.src, g.guesses, got, log)
		}
	}
	// fail2ban's dovecot filter: one failure per summary line.
	if _, err := exec.LookPath("fail2ban-regex"); err != nil {
		hosttest.Need(t, false, "fail2ban-regex is not installed (package fail2ban)")
	}
	f2b := fail2banMatched(t, d.Log, "dovecot")
	for _, g := range guessers {
		n := 0
		for l, k := range f2b {
			if strings.Contains(l, "rip="+g.src.String()+",") {
				n += k
			}
		}
		if n != 1 {
			t.Errorf("fail2ban's dovecot filter matched %d lines of %s (%d guesses), want 1 (one per line): %v", n, g.src, g.guesses, f2b)
		}
	}
}
