package deliver_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

const testMsg = "From: a@sender.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nline one\r\n.a line starting with a dot\r\n..two dots\r\nlast line\r\n"

func request(rcpts ...string) *deliver.Request {
	return &deliver.Request{
		ID: "t1", From: "a@sender.test", Rcpts: rcpts, Size: int64(len(testMsg)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(testMsg)), nil },
	}
}

type setup struct {
	cfg     config.DeliveryConfig
	dns     *delivertest.DNS
	mxPort  int
	rootCAs *x509.CertPool
}

func (s setup) deliverer(t *testing.T) *deliver.Deliverer {
	t.Helper()
	res, err := deliver.NewResolver(s.dns.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d, err := deliver.New(s.cfg, "relay.test", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		deliver.Options{Resolver: res, MXPort: s.mxPort, RootCAs: s.rootCAs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func newSetup(t *testing.T, records ...string) setup {
	c := config.Default().Delivery
	c.ConnectTimeout = config.Duration(5 * time.Second)
	c.CommandTimeout = config.Duration(30 * time.Second)
	return setup{cfg: c, dns: delivertest.StartDNS(t, records...)}
}

func wantOK(t *testing.T, res []deliver.Result, n int) {
	t.Helper()
	if len(res) != n {
		t.Fatalf("got %d results, want %d: %+v", len(res), n, res)
	}
	for _, r := range res {
		if !r.OK {
			t.Fatalf("%s not delivered: %s (temp=%v)", r.Rcpt, r.Error(), r.Temp)
		}
	}
}

// MX hosts are tried in preference order; the first (preference 10) is
// down, so the message goes to the second, with every recipient in one
// transaction and the message intact (dot-stuffing round trip).
func TestMXFallbackToSink(t *testing.T) {
	sink := delivertest.StartSink(t)
	s := newSetup(t,
		"example.test. 300 IN MX 10 mx1.example.test.",
		"example.test. 300 IN MX 20 mx2.example.test.",
		"mx1.example.test. 300 IN A 127.0.0.2",
		"mx2.example.test. 300 IN A 127.0.0.1",
	)
	s.mxPort = sink.Port
	d := s.deliverer(t)
	res := d.Deliver(context.Background(), "example.test", request("b@example.test", "c@example.test"))
	wantOK(t, res, 2)
	if res[0].Host != "mx2.example.test" {
		t.Errorf("delivered by %q, want mx2.example.test", res[0].Host)
	}
	msgs := sink.Messages(t)
	if len(msgs) != 1 {
		t.Fatalf("sink got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "a@sender.test" || strings.Join(m.Rcpts, ",") != "b@example.test,c@example.test" {
		t.Errorf("envelope: from %q rcpts %v", m.From, m.Rcpts)
	}
	if m.Helo != "relay.test" {
		t.Errorf("EHLO name %q, want relay.test", m.Helo)
	}
	want := strings.ReplaceAll(testMsg, "\r\n", "\n")
	if !strings.HasSuffix(strings.TrimRight(m.Data, "\n"), strings.TrimRight(want, "\n")) {
		t.Errorf("message changed in transit:\n%q\nwant suffix\n%q", m.Data, want)
	}
}

// RFC 5321 §5.1: a domain without MX is its own mail exchanger.
func TestImplicitMX(t *testing.T) {
	sink := delivertest.StartSink(t)
	s := newSetup(t, "amx.test. 300 IN A 127.0.0.1")
	s.mxPort = sink.Port
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "amx.test", request("x@amx.test")), 1)
	if n := len(sink.Messages(t)); n != 1 {
		t.Fatalf("sink got %d messages", n)
	}
}

func TestDNSOutcomes(t *testing.T) {
	s := newSetup(t,
		"nullmx.test. 300 IN MX 0 .",
		"noaddr.test. 300 IN TXT \"v=spf1 -all\"",
	)
	s.dns.SetRcode("broken.test", dns.RcodeServerFailure)
	d := s.deliverer(t)
	cases := []struct {
		domain   string
		temp     bool
		code     int
		enhanced string
	}{
		{"nullmx.test", false, 556, "5.1.10"}, // RFC 7505 §4.1
		{"nxdomain.test", false, 550, "5.1.2"},
		{"noaddr.test", false, 550, "5.1.2"},
		{"broken.test", true, 0, "4.4.3"}, // a DNS failure is never an answer
	}
	for _, c := range cases {
		res := d.Deliver(context.Background(), c.domain, request("u@"+c.domain))
		r := res[0]
		if r.OK || r.Temp != c.temp || r.Code != c.code || r.Enhanced != c.enhanced {
			t.Errorf("%s: got ok=%v temp=%v %d %s %q; want temp=%v %d %s", c.domain, r.OK, r.Temp, r.Code, r.Enhanced, r.Text, c.temp, c.code, c.enhanced)
		}
	}
}

// The peer's replies decide each recipient's state.
func TestSinkReplies(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags []string
		temp  bool
		code  int
	}{
		{"rcpt 5xx", []string{"-f", "RCPT"}, false, 500},
		{"data tempfail", []string{"-r", "."}, true, 450},
		{"no pipelining", []string{"-p"}, false, 250},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink := delivertest.StartSink(t, c.flags...)
			s := newSetup(t)
			s.cfg.Transports = map[string]string{"example.test": "smtp:" + sink.Addr}
			res := s.deliverer(t).Deliver(context.Background(), "example.test", request("b@example.test"))
			r := res[0]
			if r.Code != c.code || r.Temp != c.temp || r.OK != (c.code == 250) {
				t.Fatalf("got %+v, want code %d temp %v", r, c.code, c.temp)
			}
		})
	}
}

func TestSizeAnd8BitRefusedBeforeSending(t *testing.T) {
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{MaxBytes: 50})
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"small.test": "smtp:" + peer.Addr}
	r := s.deliverer(t).Deliver(context.Background(), "small.test", request("b@small.test"))[0]
	if r.Code != 552 || r.Enhanced != "5.3.4" || r.Temp {
		t.Fatalf("oversized message: got %+v, want 552 5.3.4", r)
	}
	sink := delivertest.StartSink(t, "-8") // no 8BITMIME
	s.cfg.Transports = map[string]string{"old.test": "smtp:" + sink.Addr}
	req := request("b@old.test")
	req.Body8Bit = true
	r = s.deliverer(t).Deliver(context.Background(), "old.test", req)[0]
	if r.Code != 554 || r.Enhanced != "5.6.3" {
		t.Fatalf("8-bit message to a 7-bit peer: got %+v, want 554 5.6.3", r)
	}
	if len(peer.Messages()) != 0 || len(sink.Messages(t)) != 0 {
		t.Fatal("a refused message reached the peer")
	}
}

func TestTLSPolicies(t *testing.T) {
	cert, pool := delivertest.SelfSigned(t, "mx.tls.test")
	tlsPeer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &cert})
	plain := delivertest.StartSink(t)
	s := newSetup(t, "tls.test. 300 IN MX 10 mx.tls.test.", "mx.tls.test. 300 IN A 127.0.0.1")
	s.rootCAs = pool
	// verify with a trusted certificate for the MX name: delivered over TLS.
	s.cfg.TLSPolicy = config.TLSVerify
	s.cfg.Transports = map[string]string{"tls.test": "smtp:mx.tls.test:" + tlsPeerPort(tlsPeer.Addr)}
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "tls.test", request("b@tls.test")), 1)
	if m := tlsPeer.Messages(); len(m) != 1 || !m[0].TLS {
		t.Fatalf("verify: peer messages %+v, want one over TLS", m)
	}
	// verify without trusting the certificate: deferred, nothing sent.
	s.rootCAs = x509.NewCertPool()
	r := s.deliverer(t).Deliver(context.Background(), "tls.test", request("b@tls.test"))[0]
	if r.OK || !r.Temp {
		t.Fatalf("verify with untrusted cert: got %+v, want temporary failure", r)
	}
	// encrypt accepts any certificate.
	s.cfg.TLSPolicy = config.TLSEncrypt
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "tls.test", request("b@tls.test")), 1)
	if m := tlsPeer.Messages(); len(m) != 2 || !m[1].TLS {
		t.Fatalf("encrypt: peer messages %d", len(m))
	}
	// encrypt to a peer without STARTTLS: deferred.
	s.cfg.Transports = map[string]string{"tls.test": "smtp:" + plain.Addr}
	r = s.deliverer(t).Deliver(context.Background(), "tls.test", request("b@tls.test"))[0]
	if r.OK || !r.Temp || !strings.Contains(r.Text, "STARTTLS") {
		t.Fatalf("encrypt to plain peer: got %+v", r)
	}
	// may: clear text is fine; a per-domain policy overrides the default.
	s.cfg.TLSPolicies = map[string]string{"tls.test": config.TLSMay}
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "tls.test", request("b@tls.test")), 1)
	if n := len(plain.Messages(t)); n != 1 {
		t.Fatalf("plain sink got %d", n)
	}
}

func tlsPeerPort(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	return addr[i+1:]
}

// Smarthost with AUTH (OP25B): every domain goes to the relay, over TLS,
// authenticated; a wrong password keeps the mail queued.
func TestSmarthostAuth(t *testing.T) {
	cert, _ := delivertest.SelfSigned(t, "relay.isp.test")
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &cert, Users: map[string]string{"me": "s3cret"}})
	s := newSetup(t)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	s.cfg.Smarthost = peer.Addr
	s.cfg.SmarthostUser = "me"
	s.cfg.SmarthostPasswordFile = pw
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "anywhere.test", request("x@anywhere.test")), 1)
	m := peer.Messages()
	if len(m) != 1 || m[0].User != "me" || !m[0].TLS {
		t.Fatalf("smarthost got %+v, want one message from user me over TLS", m)
	}
	os.WriteFile(pw, []byte("wrong\n"), 0o600)
	r := s.deliverer(t).Deliver(context.Background(), "anywhere.test", request("x@anywhere.test"))[0]
	if r.OK || !r.Temp || r.Code != 535 {
		t.Fatalf("wrong smarthost password: got %+v, want temporary 535", r)
	}
}

func TestLMTPIntoDovecot(t *testing.T) {
	dc := delivertest.StartDovecot(t, "alice@mail.test")
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"mail.test": "lmtp:" + dc.LMTPAddr}
	res := s.deliverer(t).Deliver(context.Background(), "mail.test", request("alice@mail.test", "nobody@mail.test"))
	if !res[0].OK {
		t.Fatalf("alice: %+v", res[0])
	}
	if res[1].OK || res[1].Temp || res[1].Code != 550 {
		t.Fatalf("unknown user: got %+v, want permanent 550", res[1])
	}
	box := dc.Mailbox(t, "alice@mail.test")
	if len(box) != 1 || !strings.Contains(box[0], ".a line starting with a dot") || !strings.Contains(box[0], "Subject: hello") {
		t.Fatalf("alice's mailbox: %q", box)
	}
	// The same over Dovecot's unix socket.
	s.cfg.Transports = map[string]string{"mail.test": "lmtp:unix:" + dc.LMTPSocket}
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "mail.test", request("alice@mail.test")), 1)
	if box = dc.Mailbox(t, "alice@mail.test"); len(box) != 2 {
		t.Fatalf("alice's mailbox after the unix-socket delivery: %d messages", len(box))
	}
}

// The transport table: exact domain, then ".parent" from the closest
// parent, then "*", then the smarthost or MX.
func TestTransportLookup(t *testing.T) {
	root := t.TempDir()
	s := newSetup(t)
	s.cfg.Transports = map[string]string{
		"exact.test":      "maildir:" + root + "/exact",
		".corp.test":      "maildir:" + root + "/corp",
		".eu.corp.test":   "maildir:" + root + "/eu",
		"*":               "maildir:" + root + "/star",
		"plain.corp.test": "maildir:" + root + "/plain",
	}
	d := s.deliverer(t)
	for dom, want := range map[string]string{
		"exact.test": "exact", "EXACT.test": "exact", "sub.exact.test": "star",
		"a.corp.test": "corp", "x.eu.corp.test": "eu", "plain.corp.test": "plain", "corp.test": "star", "other.test": "star",
	} {
		r := d.Deliver(context.Background(), dom, request("u@"+dom))[0]
		if !r.OK || r.Host != filepath.Join(root, want, "u") {
			t.Errorf("%s: delivered to %q (%s), want %s", dom, r.Host, r.Error(), want)
		}
	}
}

func TestMaildir(t *testing.T) {
	root := t.TempDir()
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"local.test": "maildir:" + root + "/{domain}/{local}"}
	d := s.deliverer(t)
	res := d.Deliver(context.Background(), "local.test", request("Bob@local.test", "../etc@local.test"))
	if !res[0].OK {
		t.Fatalf("bob: %+v", res[0])
	}
	if res[1].OK || res[1].Temp || res[1].Enhanced != "5.1.3" {
		t.Fatalf("path traversal recipient: got %+v, want permanent 5.1.3", res[1])
	}
	box := delivertest.ReadMaildir(t, filepath.Join(root, "local.test", "bob"))
	if len(box) != 1 {
		t.Fatalf("maildir has %d messages", len(box))
	}
	if !strings.HasPrefix(box[0], "Return-Path: <a@sender.test>\nDelivered-To: Bob@local.test\n") ||
		!strings.HasSuffix(box[0], strings.ReplaceAll(testMsg, "\r\n", "\n")) {
		t.Fatalf("maildir message: %q", box[0])
	}
	tmp, _ := os.ReadDir(filepath.Join(root, "local.test", "bob", "tmp"))
	if len(tmp) != 0 {
		t.Fatalf("tmp/ not empty after delivery: %v", tmp)
	}
}

// The peer drops the connection mid-DATA: the recipient is deferred.
func TestDropMidData(t *testing.T) {
	drop := delivertest.StartDropper(t)
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"drop.test": "smtp:" + drop.Addr}
	r := s.deliverer(t).Deliver(context.Background(), "drop.test", request("x@drop.test"))[0]
	if r.OK || !r.Temp || drop.Drops.Load() != 1 {
		t.Fatalf("got %+v (drops %d), want a temporary failure after one drop", r, drop.Drops.Load())
	}
}

// RFC 6531: an SMTPUTF8 message goes only to a peer that offers SMTPUTF8,
// with the SMTPUTF8 and BODY=8BITMIME parameters (RFC 6152).
func TestSMTPUTF8(t *testing.T) {
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{SMTPUTF8: true})
	sink := delivertest.StartSink(t) // smtp-sink does not offer SMTPUTF8
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"utf8.test": "smtp:" + peer.Addr, "ascii.test": "smtp:" + sink.Addr}
	d := s.deliverer(t)
	req := request("用户@utf8.test")
	req.From = "発信者@sender.test"
	req.SMTPUTF8, req.Body8Bit = true, true
	wantOK(t, d.Deliver(context.Background(), "utf8.test", req), 1)
	m := peer.Messages()
	if len(m) != 1 || !m[0].UTF8 || m[0].Body != "8BITMIME" || m[0].Rcpts[0] != "用户@utf8.test" || m[0].From != "発信者@sender.test" {
		t.Fatalf("peer got %+v", m)
	}
	req.Rcpts = []string{"用户@ascii.test"}
	r := d.Deliver(context.Background(), "ascii.test", req)[0]
	if r.Code != 553 || r.Enhanced != "5.6.7" || r.Temp {
		t.Fatalf("SMTPUTF8 message to a peer without it: got %+v, want 553 5.6.7", r)
	}
	// A client that asked for SMTPUTF8 without needing it: ASCII envelope
	// but a UTF-8 Subject (RFC 6532) still needs it...
	utf8Header := "From: a@sender.test\r\nSubject: こんにちは\r\n\r\nbody\r\n"
	req = request("u@ascii.test")
	req.SMTPUTF8 = true
	req.Open = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(utf8Header)), nil }
	if r := d.Deliver(context.Background(), "ascii.test", req)[0]; r.Code != 553 || r.Enhanced != "5.6.7" {
		t.Fatalf("UTF-8 header to a peer without SMTPUTF8: got %+v, want 553 5.6.7", r)
	}
	// ...while an all-ASCII message goes as a plain one (no SMTPUTF8
	// parameter), not bounced.
	req = request("u@ascii.test")
	req.SMTPUTF8 = true
	wantOK(t, d.Deliver(context.Background(), "ascii.test", req), 1)
	if msgs := sink.Messages(t); len(msgs) != 1 || msgs[0].Rcpts[0] != "u@ascii.test" {
		t.Fatalf("sink got %+v", msgs)
	}
}

// A local domain without a transport stays queued instead of going to its
// own MX; with local_transport (the default) it goes there; a peer that
// greets with our own name is a loop (5.4.6).
func TestNoLoops(t *testing.T) {
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{}) // greets as gopeer.test
	s := newSetup(t, "here.test. 300 IN MX 10 mx.here.test.", "mx.here.test. 300 IN A 127.0.0.1")
	res, _ := deliver.NewResolver(s.dns.Addr, 5*time.Second)
	s.cfg.LocalTransport = ""
	d, err := deliver.New(s.cfg, "relay.test", nil, deliver.Options{Resolver: res, LocalDomains: []string{"here.test"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, dom := range []string{"here.test", ""} {
		r := d.Deliver(context.Background(), dom, request("postmaster@"+dom))[0]
		if r.OK || !r.Temp || r.Enhanced != "4.3.5" {
			t.Errorf("local domain %q without transport: got %+v, want deferred 4.3.5", dom, r)
		}
	}
	mail := t.TempDir()
	s.cfg.LocalTransport = "maildir:" + mail + "/{domain}/{local}"
	d, err = deliver.New(s.cfg, "relay.test", nil, deliver.Options{Resolver: res, LocalDomains: []string{"here.test"}})
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, d.Deliver(context.Background(), "here.test", request("postmaster@here.test")), 1)
	if got, _ := filepath.Glob(filepath.Join(mail, "here.test", "postmaster", "new", "*")); len(got) != 1 {
		t.Errorf("local_transport: %d messages in the Maildir, want 1", len(got))
	}
	if d.Destination("other.test") != "other.test" || d.Destination("here.test") != "maildir:"+mail+"/{domain}/{local}" {
		t.Errorf("destinations %q, %q", d.Destination("other.test"), d.Destination("here.test"))
	}
	s.cfg.HeloName = "GoPeer.test"
	s.cfg.Transports = map[string]string{"loop.test": "smtp:" + peer.Addr}
	r := s.deliverer(t).Deliver(context.Background(), "loop.test", request("u@loop.test"))[0]
	if r.OK || r.Temp || r.Code != 554 || r.Enhanced != "5.4.6" {
		t.Fatalf("peer with our own name: got %+v, want 554 5.4.6", r)
	}
	if len(peer.Messages()) != 0 {
		t.Fatal("looping message was sent")
	}
}

// Stopping (context cancelled) does not wait for a stalled peer.
func TestCancelStalledPeer(t *testing.T) {
	sink := delivertest.StartSink(t, "-w", "3600") // waits an hour before answering DATA
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"slow.test": "smtp:" + sink.Addr}
	s.cfg.CommandTimeout = config.Duration(time.Hour) // only the cancellation can end it
	d := s.deliverer(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []deliver.Result, 1)
	go func() { done <- d.Deliver(ctx, "slow.test", request("u@slow.test")) }()
	time.Sleep(300 * time.Millisecond) // let it reach DATA
	cancel()
	r := (<-done)[0]
	if r.OK || !r.Temp {
		t.Fatalf("cancelled delivery: %+v, want a temporary failure", r)
	}
}

// RFC 2920: with PIPELINING, MAIL, the RCPTs and DATA are sent before any
// reply is read. The peer answers nothing until it has seen DATA, so a
// client that waits for the MAIL reply would hang and this test fail.
func TestPipelining(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		io.WriteString(c, "220 pipe.test ESMTP\r\n")
		r.ReadString('\n') // EHLO
		io.WriteString(c, "250-pipe.test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
		var group []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				got <- group
				return
			}
			group = append(group, strings.TrimSpace(l))
			if strings.TrimSpace(l) == "DATA" {
				break
			}
		}
		got <- group
		io.WriteString(c, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go on\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil || l == ".\r\n" {
				break
			}
		}
		io.WriteString(c, "250 2.0.0 queued\r\n")
		r.ReadString('\n')
		io.WriteString(c, "221 bye\r\n")
	}()
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"pipe.test": "smtp:" + ln.Addr().String()}
	res := s.deliverer(t).Deliver(context.Background(), "pipe.test", request("a@pipe.test", "b@pipe.test"))
	group := <-got
	want := []string{fmt.Sprintf("MAIL FROM:<a@sender.test> SIZE=%d", len(testMsg)), "RCPT TO:<a@pipe.test>", "RCPT TO:<b@pipe.test>", "DATA"}
	if strings.Join(group, "|") != strings.Join(want, "|") {
		t.Fatalf("first command group %q, want %q", group, want)
	}
	if !res[0].OK || res[1].OK || res[1].Temp || res[1].Code != 550 {
		t.Fatalf("results %+v", res)
	}
}

// Opportunistic TLS (policy may): a failed handshake falls back to clear
// text on a new connection (RFC 7435); with encrypt the mail waits.
func TestMayFallsBackToClearText(t *testing.T) {
	peer := delivertest.StartBadTLS(t)
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"bad.test": "smtp:" + peer.Addr}
	s.cfg.TLSPolicy = config.TLSMay
	wantOK(t, s.deliverer(t).Deliver(context.Background(), "bad.test", request("u@bad.test")), 1)
	if peer.Handshake.Load() != 1 || peer.Accepted.Load() != 1 {
		t.Fatalf("handshakes %d, accepted %d; want 1 and 1", peer.Handshake.Load(), peer.Accepted.Load())
	}
	s.cfg.TLSPolicy = config.TLSEncrypt
	r := s.deliverer(t).Deliver(context.Background(), "bad.test", request("u@bad.test"))[0]
	if r.OK || !r.Temp || peer.Accepted.Load() != 1 {
		t.Fatalf("encrypt with a broken TLS peer: %+v (accepted %d)", r, peer.Accepted.Load())
	}
}

// The peer accepts the recipients, then the connection is lost before the
// reply to DATA (pipelined or not) or to a later RCPT: the message was
// never sent, so every recipient is deferred, none taken as delivered on
// the strength of its RCPT reply (found by the SIGKILL test of serve,
// whose next hop was restarted under it: acknowledged mail was dropped).
func TestConnectionLostBeforeData(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pipelined bool
		dropAt    string // the command after whose sending the peer vanishes
	}{
		{"pipelined, at DATA", true, "DATA"},
		{"one by one, at DATA", false, "DATA"},
		{"one by one, at the second RCPT", false, "RCPT2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						br := bufio.NewReader(c)
						io.WriteString(c, "220 lost.test ESMTP\r\n")
						rcpts := 0
						for {
							l, err := br.ReadString('\n')
							if err != nil {
								return
							}
							cmd := strings.ToUpper(strings.TrimSpace(l))
							switch {
							case strings.HasPrefix(cmd, "EHLO"):
								ext := "250-lost.test\r\n250 8BITMIME\r\n"
								if tc.pipelined {
									ext = "250-lost.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
								}
								io.WriteString(c, ext)
							case strings.HasPrefix(cmd, "RCPT"):
								rcpts++
								if tc.dropAt == "RCPT2" && rcpts == 2 {
									return
								}
								io.WriteString(c, "250 2.1.5 Ok\r\n")
							case strings.HasPrefix(cmd, "DATA"):
								if tc.dropAt == "DATA" {
									return
								}
								io.WriteString(c, "354 go ahead\r\n")
							case strings.HasPrefix(cmd, "QUIT"):
								io.WriteString(c, "221 bye\r\n")
								return
							default:
								io.WriteString(c, "250 2.0.0 Ok\r\n")
							}
						}
					}()
				}
			}()
			s := newSetup(t)
			s.cfg.Transports = map[string]string{"lost.test": "smtp:" + ln.Addr().String()}
			for _, r := range s.deliverer(t).Deliver(context.Background(), "lost.test", request("a@lost.test", "b@lost.test")) {
				if r.OK || !r.Temp {
					t.Errorf("%s: got %+v, want a temporary failure (the message was never sent)", r.Rcpt, r)
				}
			}
		})
	}
}
