package smtpd

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestGreetingAndEHLO(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.expect("220 mail.test ESMTP")
	c.cmd("EHLO client.example")
	ehlo := c.expect("250 ")
	for _, want := range []string{"PIPELINING", "SIZE 26214400", "STARTTLS", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO reply lacks %s:\n%s", want, ehlo)
		}
	}
	// No AUTH of any kind before TLS on a listener that is not trusted-local.
	if strings.Contains(ehlo, "AUTH") {
		t.Errorf("AUTH advertised before TLS:\n%s", ehlo)
	}
	c.startTLS()
	c.cmd("EHLO client.example")
	ehlo = c.expect("250 ")
	if !strings.Contains(ehlo, "250-AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5") {
		t.Errorf("AUTH after TLS not advertised as configured:\n%s", ehlo)
	}
	if strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH=") {
		t.Errorf("STARTTLS or AUTH= advertised under TLS with broken_auth_clients off:\n%s", ehlo)
	}
	c.dialogue(`
C: STARTTLS
S: 503 5.5.1
C: HELO x
S: 250 mail.test
C: QUIT
S: 221 2.0.0`)
}

func TestBrokenAuthClientsLine(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Auth.BrokenAuthClients = true })
	c := ts.dial(t, "submissions")
	c.expect("220 ")
	c.cmd("EHLO x")
	ehlo := c.expect("250 ")
	if !strings.Contains(ehlo, "250-AUTH=SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5") {
		t.Errorf("no AUTH= line:\n%s", ehlo)
	}
}

func TestCommandErrors(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.expect("220 ")
	c.dialogue(`
C: MAIL FROM:<a@example.org>
S: 503 5.5.1 Error: send HELO/EHLO first
C: EHLO
S: 501 5.5.4
C: EHLO client.example
S: 250 
C: RCPT TO:<alice@mail.test>
S: 503 5.5.1 Error: need MAIL command
C: DATA
S: 503 5.5.1 Error: need MAIL command
C: MAIL FROM:a@example.org
S: 501 5.5.2
C: MAIL FROM:<a@@>
S: 501 5.1.7
C: MAIL FROM:<a@example.org> FOO=BAR
S: 555 5.5.4
C: MAIL FROM:<a@example.org> SIZE=99999999999
S: 552 5.3.4
C: MAIL FROM:<a@example.org>
S: 250 2.1.0
C: MAIL FROM:<a@example.org>
S: 503 5.5.1 Error: nested MAIL command
C: DATA
S: 554 5.5.1 Error: no valid recipients
C: RCPT TO:<x y@mail.test>
S: 501 5.1.3
C: RCPT TO:<alice@mail.test> XFORWARD=1
S: 555 5.5.4
C: VRFY alice
S: 252 2.0.0
C: EXPN staff
S: 502 5.5.1
C: NOOP
S: 250 2.0.0
C: RSET
S: 250 2.0.0
C: RCPT TO:<alice@mail.test>
S: 503 5.5.1
C: QUIT
S: 221 2.0.0`)
	c.expectClosed()
}

func TestNULAndOverlongCommand(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.expect("220 ")
	c.send("EHLO a\x00b\r\n")
	c.expect("500 5.5.2 Error: NUL character")
	c.cmd("EHLO " + strings.Repeat("a", 600))
	c.expect("500 5.5.2 Error: line too long")
	// The session goes on after both.
	c.dialogue(`
C: EHLO client.example
S: 250 
C: QUIT
S: 221`)
}

func TestTooManyErrors(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.MaxBadCommands = 3 })
	c := ts.dial(t, "mx")
	c.expect("220 ")
	c.cmd("FOO")
	c.expect("500 5.5.2 Error: command not recognized")
	c.cmd("BAR")
	c.expect("500 5.5.2")
	c.cmd("BAZ")
	c.expect("500 5.5.2")
	c.expect("421 4.7.0 mail.test Error: too many errors")
	c.expectClosed()
	if !hasEvent(ts.events, event.ProtocolAbuse, "too many errors") {
		t.Error("no protocol_abuse event for too many errors")
	}
}

func TestNonSMTPCommand(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.expect("220 ")
	c.cmd("GET / HTTP/1.1")
	c.expect("502 5.5.1 Error: non-SMTP command")
	c.expectClosed()
	if !hasEvent(ts.events, event.ProtocolAbuse, "non-SMTP command") {
		t.Error("no protocol_abuse event for a non-SMTP command")
	}
}

func hasEvent(r *event.Recorder, k event.Kind, detail string) bool {
	for _, e := range r.Snapshot() {
		if e.Kind == k && (detail == "" || e.Detail == detail) {
			return true
		}
	}
	return false
}

// TestPipelining sends a whole transaction in one write (RFC 2920) and
// expects every reply in order.
func TestPipelining(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.expect("220 ")
	c.send("EHLO client.example\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<alice@mail.test>\r\nRCPT TO:<nobody@mail.test>\r\nRCPT TO:<bob@mail.test>\r\nDATA\r\n")
	c.expect("250 ")
	c.expect("250 2.1.0")
	c.expect("250 2.1.5")
	c.expect("550 5.1.1 <nobody@mail.test>: Recipient address rejected: User unknown in local recipient table")
	c.expect("250 2.1.5")
	c.expect("354 ")
	c.send("Subject: pipelined\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n")
	reply := c.expect("250 2.0.0 Ok: queued as ")
	c.expect("221 ")
	id := strings.TrimPrefix(reply, "250 2.0.0 Ok: queued as ")
	env, err := ts.spool.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.Recipients) != 2 || env.Recipients[0].Addr != "alice@mail.test" || env.Recipients[1].Addr != "bob@mail.test" || env.From != "x@example.org" {
		t.Fatalf("envelope %+v", env)
	}
	data := ts.messageData(t, id)
	if !strings.HasPrefix(data, "Received: from client.example ([127.0.0.1])\r\n\tby mail.test (relayguard) with ESMTP;") {
		t.Errorf("Received header missing or wrong:\n%s", data)
	}
	if !strings.HasSuffix(data, "Subject: pipelined\r\n\r\n.leading dot\r\nbody\r\n") {
		t.Errorf("message data (dot-unstuffed) wrong:\n%q", data)
	}
}

func TestDataErrors(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.MaxMessageSize = 2000 })
	c := ts.dial(t, "mx")
	c.expect("220 ")
	start := func() {
		c.dialogue(`
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	}
	c.cmd("EHLO client.example")
	c.expect("250 ")
	// Oversize: the server reads to the final dot, then 552, and goes on.
	start()
	c.send(strings.Repeat("0123456789012345678901234567890123456789\r\n", 100) + ".\r\n")
	c.expect("552 5.3.4")
	// Overlong line.
	start()
	c.send(strings.Repeat("x", 1200) + "\r\n.\r\n")
	c.expect("500 5.5.2 Error: message line longer than 1000")
	// NUL in the body.
	start()
	c.send("a\x00b\r\n.\r\n")
	c.expect("554 5.6.0")
	if n := len(ts.spooled(t)); n != 0 {
		t.Fatalf("%d rejected messages were spooled", n)
	}
	// Still a working session.
	start()
	c.send("ok\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued as")
	// Bare LF (SMTP smuggling, "\n.\n"): 521 and the connection is closed.
	start()
	c.send("Subject: smuggle\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.org>\r\n.\r\n")
	c.expect("521 5.5.2")
	c.expectClosed()
	if n := len(ts.spooled(t)); n != 1 {
		t.Fatalf("%d messages spooled, want 1", n)
	}
}

func TestBareCR(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: HELO x
S: 250
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send("a\r.\rb\r\n.\r\n")
	c.expect("521 5.5.2")
}

func TestRecipientLimit(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.MyNetworks = []string{"127.0.0.1"} })
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: MAIL FROM:<x@example.org>
S: 250`)
	for i := 0; i < 100; i++ {
		c.cmd(fmt.Sprintf("RCPT TO:<r%d@remote.example>", i))
		c.expect("250 2.1.5")
	}
	// A repeated recipient is acknowledged but stored once.
	c.cmd("RCPT TO:<r7@remote.example>")
	c.expect("452 4.5.3 Error: too many recipients")
	c.cmd("RCPT TO:<r100@remote.example>")
	c.expect("452 4.5.3 Error: too many recipients")
}

func TestDuplicateRecipientStoredOnce(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250 2.1.5
C: RCPT TO:<ALICE@mail.test.>
S: 250 2.1.5
C: RCPT TO:<alice@mail.test>
S: 250 2.1.5
C: DATA
S: 354`)
	c.send("x\r\n.\r\n")
	c.expect("250 2.0.0")
	l := ts.spooled(t)
	if len(l) != 1 || len(l[0].Recipients) != 2 {
		t.Fatalf("recipients stored: %+v", l[0].Recipients)
	}
}

func TestAllowDenyLists(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Listeners[0].Deny = []string{"127.0.0.0/8"}
		c.Listeners[1].Allow = []string{"192.0.2.0/24", "2001:db8::/32"}
	})
	for _, l := range []string{"mx", "submission"} {
		c := ts.dial(t, l)
		c.expect("554 5.7.1 mail.test Error: access denied for 127.0.0.1")
		c.expectClosed()
	}
	c := ts.dial(t, "local")
	c.expect("220 ")
}

func TestConnectionLimitPerIP(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.MaxConnectionsIP = 2 })
	a := ts.dial(t, "mx")
	a.expect("220 ")
	b := ts.dial(t, "mx")
	b.expect("220 ")
	c := ts.dial(t, "mx")
	c.expect("421 4.7.0 mail.test Error: too many connections from 127.0.0.1")
	a.cmd("QUIT")
	a.expect("221")
	a.expectClosed()
	// The slot is released: poll until a new connection is admitted.
	for i := 0; ; i++ {
		d := ts.dial(t, "mx")
		if l := d.reply(); strings.HasPrefix(l[0], "220") {
			break
		} else if i > 100 {
			t.Fatalf("slot never released: %v", l)
		}
	}
}

func TestPregreet(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.GreetingDelay = config.Duration(300_000_000) })
	c := ts.dial(t, "mx")
	c.cmd("EHLO impatient.example")
	c.expect("554 5.5.1 mail.test Error: talked before the greeting")
	c.expectClosed()
	if !hasEvent(ts.events, event.ProtocolAbuse, "pregreet") {
		t.Error("no pregreet event")
	}
	d := ts.dial(t, "mx")
	d.expect("220 ")
}

func TestSTARTTLSInjectionDiscarded(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "mx")
	c.expect("220 ")
	c.cmd("EHLO x")
	c.expect("250 ")
	c.send("STARTTLS\r\nRSET\r\n")
	c.expect("220 2.0.0")
	c.expectClosed()
}

func TestSubmissionRequiresAuth(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "submission")
	c.expect("220 ")
	c.cmd("EHLO x")
	c.expect("250 ")
	c.startTLS()
	c.dialogue(`
C: EHLO x
S: 250
C: MAIL FROM:<alice@mail.test>
S: 530 5.7.0 Authentication required`)
}

// TestClientThatDoesNotRead: a client that sends commands but never reads
// the replies must not hold its session forever (write deadlines).
func TestClientThatDoesNotRead(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.CommandTimeout = config.Duration(time.Second) })
	c := ts.dial(t, "mx")
	if tc, ok := c.conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	c.expect("220")
	go func() {
		line := []byte(strings.Repeat("HELO x\r\n", 1024))
		for i := 0; i < 2000; i++ {
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.conn.Write(line); err != nil {
				return
			}
		}
	}()
	for i := 0; ; i++ {
		ts.srv.mu.Lock()
		n := ts.srv.total
		ts.srv.mu.Unlock()
		if n == 0 {
			break
		}
		if i > 600 {
			t.Fatal("the server still holds the session of a client that does not read")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestJunkCommandLimit(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.MaxJunkCommands = 5 })
	c := ts.dial(t, "mx")
	c.expect("220")
	for i := 0; i < 5; i++ {
		c.cmd("NOOP")
		c.expect("250")
	}
	c.cmd("NOOP")
	c.expect("421 4.7.0 mail.test Error: too many commands without mail")
	c.expectClosed()
}
