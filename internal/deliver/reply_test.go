package deliver_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// scriptedPeer is an SMTP server on loopback that answers each command by
// the first entry of replies whose key prefixes the (upper-cased) command;
// "." is the end of the message. It counts the messages it accepted.
type scriptedPeer struct {
	Addr     string
	Messages atomic.Int64
}

func startScriptedPeer(t *testing.T, greeting string, replies map[string]string) *scriptedPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &scriptedPeer{Addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, greeting, replies)
		}
	}()
	return p
}

func (p *scriptedPeer) serve(c net.Conn, greeting string, replies map[string]string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	io.WriteString(c, greeting)
	inData := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if inData {
			if line != ".\r\n" {
				continue
			}
			inData = false
			p.Messages.Add(1)
			io.WriteString(c, replies["."])
			continue
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		if cmd == "QUIT" {
			io.WriteString(c, "221 bye\r\n")
			return
		}
		for _, k := range []string{"EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "RSET"} {
			if strings.HasPrefix(cmd, k) {
				rep, ok := replies[k]
				if !ok {
					rep = "250 ok\r\n"
				}
				io.WriteString(c, rep)
				if k == "DATA" && strings.HasPrefix(rep, "354") {
					inData = true
				}
			}
		}
	}
}

// RFC 5321 §4.2: the text of a reply is optional ("250" CRLF is a whole
// reply) and multi-line replies may carry the enhanced code on every line.
// A client that misreads the bare "250" after the message would retry a
// message the peer already took, and deliver it again and again.
func TestRepliesWithoutText(t *testing.T) {
	peer := startScriptedPeer(t, "220\r\n", map[string]string{
		"EHLO": "250-bare.test greets you\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n",
		"MAIL": "250\r\n",
		"RCPT": "250\r\n",
		"DATA": "354\r\n",
		".":    "250-2.0.0 first line\r\n250-2.0.0 second line\r\n250 2.0.0 queued as X\r\n",
	})
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"bare.test": "smtp:" + peer.Addr}
	res := s.deliverer(t).Deliver(context.Background(), "bare.test", request("u@bare.test"))
	wantOK(t, res, 1)
	if peer.Messages.Load() != 1 {
		t.Fatalf("peer took %d messages, want 1", peer.Messages.Load())
	}
	if res[0].Code != 250 || res[0].Enhanced != "2.0.0" || res[0].Text != "first line / second line / queued as X" {
		t.Fatalf("final reply parsed as %+v", res[0])
	}
}

// A peer that never ends a reply line cannot make the client buffer it
// without bound: the reply is refused as too long and the delivery is
// retried later (temporary), never taken for the peer's "250".
func TestOverlongReplyLine(t *testing.T) {
	peer := startScriptedPeer(t, "220 long.test ESMTP\r\n", map[string]string{
		"MAIL": "250 " + strings.Repeat("x", 1<<20) + "\r\n",
	})
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"long.test": "smtp:" + peer.Addr}
	r := s.deliverer(t).Deliver(context.Background(), "long.test", request("u@long.test"))[0]
	if r.OK || !r.Temp || !strings.Contains(r.Text, "longer than 4096 octets") {
		t.Fatalf("over-long reply line: got %+v, want a temporary failure naming the limit", r)
	}
	if peer.Messages.Load() != 0 {
		t.Fatal("message sent after a garbled MAIL reply")
	}
}

// A reply line that is not a reply (no three-digit code) is a broken
// conversation: temporary, and the message is not sent.
func TestMalformedReply(t *testing.T) {
	peer := startScriptedPeer(t, "220 junk.test ESMTP\r\n", map[string]string{
		"RCPT": "OK fine\r\n",
	})
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"junk.test": "smtp:" + peer.Addr}
	r := s.deliverer(t).Deliver(context.Background(), "junk.test", request("u@junk.test"))[0]
	if r.OK || !r.Temp || !strings.Contains(r.Text, `malformed reply line "OK fine"`) {
		t.Fatalf("malformed reply: got %+v", r)
	}
	if peer.Messages.Load() != 0 {
		t.Fatal("message sent after a malformed RCPT reply")
	}
}

// A peer that offers STARTTLS but refuses it (454, RFC 3207 §4): with the
// opportunistic policy the message goes in clear text in the same session
// (RFC 7435) instead of waiting in the queue for days; with encrypt it waits.
func TestStartTLSRefused(t *testing.T) {
	peer := startScriptedPeer(t, "220 notls.test ESMTP\r\n", map[string]string{
		"EHLO":     "250-notls.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
		"STARTTLS": "454 4.7.0 TLS not available due to temporary reason\r\n",
		"DATA":     "354 go ahead\r\n",
		".":        "250 2.0.0 queued\r\n",
	})
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"notls.test": "smtp:" + peer.Addr}
	s.cfg.TLSPolicy = "may"
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "notls.test", request("u@notls.test")), 1)
	if peer.Messages.Load() != 1 {
		t.Fatalf("peer took %d messages, want 1", peer.Messages.Load())
	}
	s.cfg.TLSPolicy = "encrypt"
	r := s.deliverer(t).Deliver(context.Background(), "notls.test", request("u@notls.test"))[0]
	if r.OK || !r.Temp || !strings.Contains(r.Text, "454") || peer.Messages.Load() != 1 {
		t.Fatalf("encrypt with STARTTLS refused: %+v (messages %d)", r, peer.Messages.Load())
	}
}

// RFC 5321 §5.1: an address literal is the address to connect to; it is
// not looked up in the DNS (where "[127.0.0.1]" would be "not found" and the
// mail bounced). A malformed literal fails permanently.
func TestAddressLiteral(t *testing.T) {
	sink := delivertest.StartSink(t)
	s := newSetup(t) // the DNS server knows nothing
	s.mxPort = sink.Port
	d := s.deliverer(t)
	wantOK(t, d.Deliver(context.Background(), "[127.0.0.1]", request("u@[127.0.0.1]")), 1)
	msgs := sink.Messages(t)
	if len(msgs) != 1 || len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "u@[127.0.0.1]" {
		t.Fatalf("sink got %+v", msgs)
	}
	for _, lit := range []string{"[IPv6:127.0.0.1]", "[::1]", "[300.1.1.1]", "[127.0.0.1"} {
		r := d.Deliver(context.Background(), lit, request("u@"+lit))[0]
		if r.OK || r.Temp || r.Code != 553 || r.Enhanced != "5.1.2" {
			t.Errorf("literal %s: got %+v, want 553 5.1.2", lit, r)
		}
	}
}

// RFC 5321 §5.1: when this server finds itself among a domain's MX hosts
// (relay_domains: a backup MX), it does not try itself or worse ones. With
// the better MX unreachable the mail waits for it (temporary); only when
// this server is the best MX is it a loop (permanent 5.4.6).
func TestBackupMXWaitsForPrimary(t *testing.T) {
	self := startScriptedPeer(t, "220 relay.test ESMTP\r\n", map[string]string{}) // greets with our own name
	_, port, _ := net.SplitHostPort(self.Addr)
	s := newSetup(t,
		"backup.test. 300 IN MX 10 primary.backup.test.",
		"backup.test. 300 IN MX 20 me.backup.test.",
		"primary.backup.test. 300 IN A 127.0.0.2", // nobody listens there
		"me.backup.test. 300 IN A 127.0.0.1",
		"best.test. 300 IN MX 10 me.backup.test.",
	)
	s.mxPort, _ = strconv.Atoi(port)
	d := s.deliverer(t)
	r := d.Deliver(context.Background(), "backup.test", request("u@backup.test"))[0]
	if r.OK || !r.Temp || r.Host != "primary.backup.test" {
		t.Fatalf("backup MX with the primary down: got %+v, want a temporary failure at the primary", r)
	}
	r = d.Deliver(context.Background(), "best.test", request("u@best.test"))[0]
	if r.OK || r.Temp || r.Code != 554 || r.Enhanced != "5.4.6" {
		t.Fatalf("best MX is this host: got %+v, want 554 5.4.6", r)
	}
	if self.Messages.Load() != 0 {
		t.Fatal("a message was sent to this host itself")
	}
}

// RFC 5321 §4.5.3.2.6: the reply to the end of the message may take up to
// 10 minutes (the server may be scanning it). A client that gives up after
// its per-command timeout marks as failed a message the peer then accepts,
// and sends it again at the next retry.
func TestDataEndWaitsLongerThanCommandTimeout(t *testing.T) {
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{DataDelay: 5 * time.Second})
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"slowscan.test": "smtp:" + peer.Addr}
	s.cfg.CommandTimeout = config.Duration(2 * time.Second) // generous for the other replies on a loaded machine
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "slowscan.test", request("u@slowscan.test")), 1)
	if n := len(peer.Messages()); n != 1 {
		t.Fatalf("peer got %d messages", n)
	}
}

// A pipelining peer that refuses MAIL but (wrongly) answers DATA with 354:
// the client ends the empty message and the session stays usable; without
// that, the RSET that follows would be read as message text and both sides
// would wait for each other until the command timeout.
func TestPipelinedMailRefusedButDataStarted(t *testing.T) {
	peer := startScriptedPeer(t, "220 odd.test ESMTP\r\n", map[string]string{
		"EHLO": "250-odd.test\r\n250 PIPELINING\r\n",
		"MAIL": "451 4.3.0 try later\r\n",
		"RCPT": "503 5.5.1 need MAIL\r\n",
		"DATA": "354 go ahead\r\n",
		".":    "554 5.5.1 no valid recipients\r\n",
	})
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"odd.test": "smtp:" + peer.Addr}
	s.cfg.CommandTimeout = config.Duration(time.Hour) // a hang would show as a test timeout
	r := s.deliverer(t).Deliver(context.Background(), "odd.test", request("u@odd.test"))[0]
	if r.OK || !r.Temp || r.Code != 451 {
		t.Fatalf("got %+v, want the MAIL reply 451", r)
	}
}

// A DNS failure is never read as an answer: when the A lookup of a
// domain's implicit MX says NXDOMAIN but the AAAA lookup fails (SERVFAIL),
// the host may still have an IPv6 address, so the mail is deferred, not
// bounced as "no MX and no address records".
func TestAddressLookupFailureDefers(t *testing.T) {
	s := newSetup(t, `halfbroken.test. 300 IN TXT "no MX"`) // MX: no records (implicit MX)
	s.dns.SetRcodeType("halfbroken.test", dns.TypeA, dns.RcodeNameError)
	s.dns.SetRcodeType("halfbroken.test", dns.TypeAAAA, dns.RcodeServerFailure)
	r := s.deliverer(t).Deliver(context.Background(), "halfbroken.test", request("u@halfbroken.test"))[0]
	if r.OK || !r.Temp || r.Enhanced != "4.4.3" || !strings.Contains(r.Text, "SERVFAIL") {
		t.Fatalf("got %+v, want a temporary 4.4.3 naming the SERVFAIL", r)
	}
}
