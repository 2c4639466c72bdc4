package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// limitPeer is a next hop that takes two recipients per transaction and
// answers a third RCPT "452 4.5.3" (RFC 5321 §4.5.3.1.8). While hold is
// set, it does not answer a session's second MAIL FROM: it reports it on
// held and waits, so that the test can kill the client between its
// transactions.
type limitPeer struct {
	addr string
	held chan struct{}

	mu    sync.Mutex
	hold  bool
	rcpts []string // recipients of each message taken, in order
}

func startLimitPeer(t *testing.T) *limitPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &limitPeer{addr: ln.Addr().String(), held: make(chan struct{}, 1), hold: true}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *limitPeer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	r := bufio.NewReader(c)
	io.WriteString(c, "220 limit.test ESMTP\r\n")
	mails := 0
	var cur []string
	inData := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimSpace(line)
		up := strings.ToUpper(cmd)
		switch {
		case inData:
			if cmd == "." {
				inData = false
				p.mu.Lock()
				p.rcpts = append(p.rcpts, cur...)
				p.mu.Unlock()
				io.WriteString(c, "250 2.0.0 queued\r\n")
			}
		case strings.HasPrefix(up, "EHLO"):
			io.WriteString(c, "250-limit.test\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(up, "MAIL"):
			mails++
			p.mu.Lock()
			hold := p.hold && mails > 1
			p.mu.Unlock()
			if hold {
				p.held <- struct{}{}
				io.Copy(io.Discard, r) // until the client is gone
				return
			}
			cur = nil
			io.WriteString(c, "250 2.1.0 ok\r\n")
		case strings.HasPrefix(up, "RCPT"):
			if len(cur) >= 2 {
				io.WriteString(c, "452 4.5.3 Too many recipients\r\n")
				continue
			}
			to := cmd[strings.Index(cmd, "<")+1 : strings.Index(cmd, ">")]
			cur = append(cur, to)
			io.WriteString(c, "250 2.1.5 ok\r\n")
		case up == "DATA":
			inData = true
			io.WriteString(c, "354 go ahead\r\n")
		case up == "QUIT":
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "250 ok\r\n")
		}
	}
}

func (p *limitPeer) taken() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.rcpts)
}

// TestServeCrashBetweenRecipientLimitTransactions SIGKILLs the real
// `relayguard serve` while it delivers a message to a next hop that takes
// two recipients per transaction: after the first transaction (a1, a2
// delivered), at the second MAIL FROM. Nothing acknowledged is lost: the
// results of the round were not yet written, so after the restart the
// message is delivered again (at least once, docs/delivery.md), and every
// recipient, a3 and a4 included, reaches the peer.
func TestServeCrashBetweenRecipientLimitTransactions(t *testing.T) {
	peer := startLimitPeer(t)
	c := newCrashServe(t, peer.addr)
	// No connection reuse: a retry from the schedule comes in a new
	// session, so only a transaction sent at once on the same connection
	// reaches the held second MAIL FROM.
	conf, err := os.ReadFile(c.cf)
	if err != nil {
		t.Fatal(err)
	}
	conf = []byte(strings.Replace(string(conf), "[delivery]\n", "[delivery]\nconnection_cache_time = \"0s\"\n", 1))
	if err := os.WriteFile(c.cf, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	rcpts := []string{"a1@crash.test", "a2@crash.test", "a3@crash.test", "a4@crash.test"}
	for _, r := range rcpts {
		add := exec.Command(c.bin, "user", "add", strings.TrimSuffix(r, "@crash.test"), "--password-stdin", "--config", c.cf, "--data-dir", c.data)
		add.Stdin = strings.NewReader("crash test password\n")
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("user add: %v\n%s", err, out)
		}
	}
	first := c.start()

	conn, err := net.Dial("tcp", c.mx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(conn)
	read := func() string { s, _ := br.ReadString('\n'); return s }
	read()
	fmt.Fprintf(conn, "EHLO client.test\r\n")
	for s := read(); strings.HasPrefix(s, "250-"); s = read() {
	}
	fmt.Fprintf(conn, "MAIL FROM:<x@client.test>\r\n")
	if s := read(); !strings.HasPrefix(s, "250") {
		t.Fatalf("MAIL: %s", s)
	}
	for _, r := range rcpts {
		fmt.Fprintf(conn, "RCPT TO:<%s>\r\n", r)
		if s := read(); !strings.HasPrefix(s, "250") {
			t.Fatalf("RCPT %s: %s", r, s)
		}
	}
	fmt.Fprintf(conn, "DATA\r\n")
	if s := read(); !strings.HasPrefix(s, "354") {
		t.Fatalf("DATA: %s", s)
	}
	fmt.Fprintf(conn, "%s.\r\n", crashMessage("limit", 0, 0, 5))
	if s := read(); !strings.HasPrefix(s, "250") {
		t.Fatalf("message not acknowledged: %s", s)
	}
	fmt.Fprintf(conn, "QUIT\r\n")

	select {
	case <-peer.held:
	case <-time.After(90 * time.Second):
		t.Fatalf("no second transaction for the recipients over the limit; the peer took %v", peer.taken())
	}
	if got := peer.taken(); !slices.Equal(got, rcpts[:2]) {
		t.Fatalf("first transaction took %v, want %v", got, rcpts[:2])
	}
	first.kill(t)
	peer.mu.Lock()
	peer.hold = false
	peer.mu.Unlock()

	c.start()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := peer.taken()
		missing := 0
		for _, r := range rcpts {
			if !slices.Contains(got, r) {
				missing++
			}
		}
		if missing == 0 {
			t.Logf("the peer took %v (the first transaction's again after the restart: at least once)", got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the peer took %v: %d of %v missing", got, missing, rcpts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
