package smtpd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
)

// limitLines returns the "limit reached" lines logged for key.
func limitLines(ts *testServer, key string) []string {
	var out []string
	for _, l := range ts.logs.Lines() {
		if strings.Contains(l, `msg="limit reached"`) && strings.Contains(l, "limit="+key+" ") {
			out = append(out, l)
		}
	}
	return out
}

// TestRecipientEnumeration reproduces issue 12 item 3 over real sockets:
// unknown recipients are still refused at RCPT (550, no backscatter), but
// each counts as an error of the session, with growing delays past the
// soft limit and the end of the session at the hard limit, and toward the
// client's rate across sessions, past which every RCPT of the client, valid
// or not, gets the same 450; each is an event the guard can count.
func TestRecipientEnumeration(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Limits.SoftErrorLimit = 3
		c.Limits.ErrorDelay = config.Duration(100 * time.Millisecond)
		c.Limits.MaxBadCommands = 8
		c.Limits.UnknownRcptLimit = 12
	})
	c := ts.dialFrom(t, "mx", "127.0.0.2")
	c.dialogue(`
S: 220
C: EHLO enum.example
S: 250
C: MAIL FROM:<x@example.org>
S: 250`)
	start := time.Now()
	for i := 1; i <= 8; i++ {
		c.cmd(fmt.Sprintf("RCPT TO:<guess%d@mail.test>", i))
		c.expect(fmt.Sprintf("550 5.1.1 <guess%d@mail.test>: Recipient address rejected: User unknown", i))
	}
	c.expect("421 4.7.0 mail.test Error: too many errors")
	c.expectClosed()
	// Errors 4 to 8 waited 100, 200, 300, 400 and 500 ms.
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Errorf("8 unknown recipients answered in %s: the errors past the soft limit were not delayed", d)
	}
	// A new session from the same client: 4 more reach the rate of 12.
	c = ts.dialFrom(t, "mx", "127.0.0.2")
	c.dialogue(`
S: 220
C: EHLO enum.example
S: 250
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250 2.1.5
C: RCPT TO:<guess9@mail.test>
S: 550 5.1.1
C: RCPT TO:<guess10@mail.test>
S: 550 5.1.1
C: RCPT TO:<guess11@mail.test>
S: 550 5.1.1
C: RCPT TO:<guess12@mail.test>
S: 550 5.1.1
C: RCPT TO:<bob@mail.test>
S: 450 4.7.1 Error: too many unknown recipients from 127.0.0.2, try again later
C: RCPT TO:<guess13@mail.test>
S: 450 4.7.1 Error: too many unknown recipients from 127.0.0.2, try again later
C: RCPT TO:<someone@remote.example>
S: 450 4.7.1 Error: too many unknown recipients from 127.0.0.2, try again later
C: QUIT
S: 221`)
	// Another client is not affected.
	c = ts.dialFrom(t, "mx", "127.0.0.3")
	c.dialogue(`
S: 220
C: EHLO other.example
S: 250
C: MAIL FROM:<y@example.org>
S: 250
C: RCPT TO:<bob@mail.test>
S: 250 2.1.5
C: RCPT TO:<nobody@mail.test>
S: 550 5.1.1`)
	// An authenticated user from the limited address is not rated.
	a := ts.dialFrom(t, "submissions", "127.0.0.2")
	a.dialogue(`
S: 220
C: EHLO x
S: 250
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 235
C: MAIL FROM:<alice@mail.test>
S: 250
C: RCPT TO:<bob@mail.test>
S: 250 2.1.5`)

	var unknown int
	for _, e := range ts.events.Snapshot() {
		if e.Kind == event.UnknownRecipient {
			unknown++
		}
	}
	if unknown != 13 {
		t.Errorf("%d unknown_recipient events, want 13", unknown)
	}
	if n := len(limitLines(ts, "limits.unknown_recipient_limit")); n != 3 {
		t.Errorf("%d 'limit reached' lines for the rate, want 3", n)
	}
}

// TestDataDeadline reproduces issue 12 item 4 (DATA): a client trickling
// its message is cut off at the overall deadline, though it never leaves a
// gap as long as data_block_timeout; a slow but steady client gets through.
func TestDataDeadline(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Limits.DataTimeout = config.Duration(time.Second)
		c.Limits.MinDataRate = 1000
		c.Limits.DataBlockTimeout = config.Duration(30 * time.Second)
	})
	open := func() *client {
		c := ts.dial(t, "mx")
		c.dialogue(`
S: 220
C: EHLO x
S: 250
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
		return c
	}
	// Trickle: one 10-byte line every 100 ms, for at most 20 s.
	c := open()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			if _, err := c.conn.Write([]byte("trickle.\r\n")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	c.expect("421 4.4.2 mail.test Error: timeout exceeded")
	c.expectClosed()
	<-done
	if n := len(limitLines(ts, "limits.data_timeout")); n != 1 {
		t.Errorf("%d 'limit reached' lines for limits.data_timeout, want 1", n)
	}
	// Steady: 64 KiB in 2 s, past data_timeout but well above the rate.
	c = open()
	line := strings.Repeat("x", 998) + "\r\n"
	for range 32 {
		for range 2 {
			c.send(line)
		}
		time.Sleep(62 * time.Millisecond)
	}
	c.send(".\r\n")
	c.expect("250 2.0.0 Ok: queued as")
	if n := len(ts.spooled(t)); n != 1 {
		t.Fatalf("%d messages spooled, want 1 (the trickle must not be)", n)
	}
}

// TestBDATDeadline: CHUNKING (RFC 3030) must not be a way around the
// overall deadline of message data (issue 12 item 4). Before, a BDAT chunk
// had only the per-read data_block_timeout: one byte a second held a
// session open for as long as the client liked, and chunk time was not
// command time either. Now a trickled chunk, many small chunks each
// trickled, and a refused chunk read only to be skipped are cut at the
// same deadline as a trickled DATA; a steady client gets through.
func TestBDATDeadline(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Limits.DataTimeout = config.Duration(time.Second)
		c.Limits.MinDataRate = 1000
		c.Limits.DataBlockTimeout = config.Duration(30 * time.Second)
		c.Limits.CommandTimeout = config.Duration(30 * time.Second)
	})
	open := func(rcpt bool) *client {
		c := ts.dial(t, "mx")
		c.dialogue(`
S: 220
C: EHLO x
S: 250`)
		if rcpt {
			c.dialogue(`
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250`)
		}
		return c
	}
	// trickle writes one byte every 100 ms (at most 20 s) after each of
	// the commands, until the server closes.
	trickle := func(c *client, cmds func(i int) string) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 200 {
				if _, err := c.conn.Write([]byte(cmds(i) + "x")); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		for {
			r := c.reply()
			if len(r) == 0 || r[0] != "250 2.0.0 Ok: 2 octets received" {
				if len(r) == 0 || r[0] != "421 4.4.2 mail.test Error: timeout exceeded" {
					t.Fatalf("trickler got %q, want 421 4.4.2", r)
				}
				break
			}
		}
		c.expectClosed()
		<-done
	}
	// One chunk of 1000 bytes, one byte at a time.
	trickle(open(true), func(i int) string {
		if i == 0 {
			return "BDAT 1000 LAST\r\n"
		}
		return ""
	})
	// Many chunks of two bytes, each trickled (the time between chunks is
	// command time, held by command_budget).
	trickle(open(true), func(i int) string {
		if i%2 == 0 {
			return "BDAT 2\r\n"
		}
		return ""
	})
	// Chunks refused (no transaction) and read to be skipped.
	trickle(open(false), func(i int) string {
		if i == 0 {
			return "BDAT 1000\r\n"
		}
		return ""
	})
	if n := len(limitLines(ts, "limits.data_timeout")); n != 3 {
		t.Errorf("%d 'limit reached' lines for limits.data_timeout, want 3", n)
	}
	// Steady: 64 KiB in 2 s in 32 chunks, past data_timeout but well above
	// the rate; then a second message in the same session.
	c := open(true)
	chunk := strings.Repeat(strings.Repeat("x", 998)+"\r\n", 2)
	for i := range 32 {
		last := ""
		if i == 31 {
			last = " LAST"
		}
		c.send(fmt.Sprintf("BDAT %d%s\r\n%s", len(chunk), last, chunk))
		if i < 31 {
			c.expect("250 2.0.0 Ok: 2000 octets received")
		}
		time.Sleep(62 * time.Millisecond)
	}
	c.expect("250 2.0.0 Ok: queued as")
	c.dialogue(`
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: BDAT 4 LAST
C: hi` + "\r\n" + `
S: 250 2.0.0 Ok: queued as`)
	if n := len(ts.spooled(t)); n != 2 {
		t.Fatalf("%d messages spooled, want 2 (no trickle)", n)
	}
}

// TestCommandBudget reproduces issue 12 item 4 (commands): EHLO and NOOP
// tricklers that always answer within command_timeout are cut off when the
// session's command budget runs out; a message accepted restarts it.
func TestCommandBudget(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Limits.CommandBudget = config.Duration(1500 * time.Millisecond)
		c.Limits.CommandTimeout = config.Duration(30 * time.Second)
	})
	c := ts.dial(t, "mx")
	c.expect("220")
	var got string
	for i := 0; i < 100; i++ {
		c.cmd([]string{"EHLO x", "NOOP"}[i%2])
		got = c.reply()[0]
		if strings.HasPrefix(got, "421") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != "421 4.4.2 mail.test Error: timeout exceeded" {
		t.Fatalf("trickler after 10 s: %q", got)
	}
	c.expectClosed()
	if n := len(limitLines(ts, "limits.command_budget")); n != 1 {
		t.Errorf("%d 'limit reached' lines for limits.command_budget, want 1", n)
	}
	// A session that moves mail gets a new budget with each message.
	c = ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO x
S: 250`)
	for range 3 {
		time.Sleep(700 * time.Millisecond)
		c.dialogue(`
C: MAIL FROM:<x@example.org>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
		c.send("hi\r\n.\r\n")
		c.expect("250 2.0.0")
	}
	c.cmd("QUIT")
	c.expect("221")
}

// TestFreeSpaceAtMAIL reproduces issue 12 item 5 on a real full file
// system: a small tmpfs the test mounts under its temporary directory holds
// the spool. MAIL gets 452 4.3.1 when less than spool.min_free (plus 1.5
// times the declared SIZE) is free, before any data is sent.
func TestFreeSpaceAtMAIL(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount a tmpfs (CI runs as root): %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	ts := startServer(t, func(c *config.Config) {
		c.Spool.Dir = filepath.Join(mnt, "spool")
		c.Spool.MinFree = 4 << 20
		// 452 4.3.1 is our side's failure, not the client's error: two
		// of them must not end the session.
		c.Limits.MaxBadCommands = 2
	})
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 5<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	c := ts.dial(t, "mx")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: MAIL FROM:<x@example.org>
S: 452 4.3.1 Insufficient system storage`)
	os.Remove(filler)
	c.dialogue(`
C: MAIL FROM:<x@example.org> SIZE=3000000
S: 452 4.3.1 Insufficient system storage
C: MAIL FROM:<x@example.org> SIZE=1000000
S: 250 2.1.0
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
	c.send("Subject: fits\r\n\r\nok\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued as")
	if n := len(limitLines(ts, "spool.min_free")); n != 2 {
		t.Errorf("%d 'limit reached' lines for spool.min_free, want 2", n)
	}
}
