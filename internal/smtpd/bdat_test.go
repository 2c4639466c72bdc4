package smtpd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

// CHUNKING (RFC 3030) and DSN parameters (RFC 3461) over a socket: a
// message in chunks is spooled byte for byte with its DSN parameters; a
// refused BDAT still consumes its chunk so the session stays in step; a
// chunk past the size limit, a bare LF or a NUL are refused at LAST
// without closing; RSET drops a message in progress; DATA cannot follow
// BDAT; a size that is not a number closes the session.
func TestBDATAndDSN(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.MaxMessageSize = 4096 })
	c := ts.dial(t, "mx")
	ehlo := func() {
		c.cmd("EHLO client.example")
		if r := c.expect("250 "); !strings.Contains(r, "CHUNKING") || !strings.Contains(r, "DSN") {
			t.Fatalf("EHLO: %s", r)
		}
	}
	c.expect("220 ")
	ehlo()
	c.dialogue(`
C: MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B1
S: 250 2.1.0 Ok
C: RCPT TO:<alice@mail.test> NOTIFY=failure,success ORCPT=rfc822;Alice+40Mail.Test
S: 250 2.1.5 Ok
C: RCPT TO:<sales@mail.test>
S: 250 2.1.5 Ok`)
	c.send("BDAT 20\r\nSubject: chunked\r\n\r\n")
	c.expect("250 2.0.0 Ok: 20 octets received")
	// Pipelined: a second chunk and the last, empty one.
	c.send("BDAT 11\r\n.hello\r\n.\r\nBDAT 0 LAST\r\n")
	c.expect("250 2.0.0 Ok: 11 octets received")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	msg := ts.messageData(t, id)
	if !strings.HasSuffix(msg, "\r\nSubject: chunked\r\n\r\n.hello\r\n.\r\n") || !strings.Contains(msg, "Received: from client.example") {
		t.Fatalf("spooled message (no dot-unstuffing in BDAT):\n%q", msg)
	}
	env, err := ts.spool.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if env.DSNRet != "HDRS" || env.DSNEnvID != "QQ+1" || env.Recipients[0].Notify != "SUCCESS,FAILURE" ||
		env.Recipients[0].ORcpt != "rfc822;Alice@Mail.Test" || env.Recipients[1].Notify != "" {
		t.Fatalf("DSN parameters: %+v %+v", env, env.Recipients)
	}

	// A chunk without a transaction: refused, consumed.
	c.send("BDAT 5 LAST\r\nabcde")
	c.expect("503 5.5.1 Error: need MAIL command")
	c.cmd("NOOP")
	c.expect("250 2.0.0 Ok")

	tx := func() {
		c.dialogue(`
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: RCPT TO:<alice@mail.test>
S: 250 2.1.5 Ok`)
	}
	// Too big: the chunks are read, the message refused at LAST.
	tx()
	big := strings.Repeat("x", 70) + "\r\n"
	c.send("BDAT 3600\r\n" + strings.Repeat(big, 50))
	c.expect("250 2.0.0 Ok: 3600 octets received")
	c.send("BDAT 3600 LAST\r\n" + strings.Repeat(big, 50))
	c.expect("552 5.3.4")
	// A bare LF: refused, the session goes on.
	tx()
	c.send("BDAT 9 LAST\r\nbare\nlf\r\n")
	c.expect("554 5.6.0 Error: bare <CR> or <LF> in message")
	// RSET in the middle of a message drops it (nothing left in tmp/).
	tx()
	c.send("BDAT 4\r\nab\r\n")
	c.expect("250 2.0.0 Ok: 4 octets received")
	c.cmd("DATA")
	c.expect("503 5.5.1 Error: BDAT in progress")
	c.cmd("RSET")
	c.expect("250 2.0.0 Ok")
	if tmp, _ := os.ReadDir(filepath.Join(ts.cfg.Spool.Dir, "tmp")); len(tmp) != 0 {
		t.Fatalf("RSET left %d files in the spool's tmp/", len(tmp))
	}
	if n := len(ts.spooled(t)); n != 1 {
		t.Fatalf("%d messages spooled, want 1", n)
	}
	// A size that is not a number: the chunk cannot be skipped.
	tx()
	c.send("BDAT ten LAST\r\n")
	c.expect("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
	c.expectClosed()
}

// TestBDATSizeDigitsOnly: a chunk size with a sign is a syntax error, as
// one that is not a number is (RFC 3030 §2: chunk-size = 1*DIGIT), and the
// session ends, since the chunk cannot be skipped. "BDAT +5 LAST" was read
// as 5 octets and the message queued.
func TestBDATSizeDigitsOnly(t *testing.T) {
	ts := startServer(t, nil)
	for _, size := range []string{"+5", "-0", "+0"} {
		c := ts.dial(t, "mx")
		c.expect("220 ")
		c.cmd("EHLO client.example")
		c.expect("250 ")
		c.dialogue(`
C: MAIL FROM:<a@example.org>
S: 250 2.1.0 Ok
C: RCPT TO:<alice@mail.test>
S: 250 2.1.5 Ok`)
		c.send("BDAT " + size + " LAST\r\nabcde")
		c.expect("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
		c.expectClosed()
	}
	if n := len(ts.spooled(t)); n != 0 {
		t.Fatalf("%d messages spooled, want 0", n)
	}
}
