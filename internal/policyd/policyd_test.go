package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/policy"
)

// syncBuffer is a log destination read while goroutines write.
type syncBuffer = hosttest.LogBuffer

func startServer(t *testing.T, network string) (addr string, logs *syncBuffer) {
	t.Helper()
	return startServerWith(t, network, nil)
}

// startServerWith is startServer with set applied to the Server before it
// serves.
func startServerWith(t *testing.T, network string, set func(*Server)) (addr string, logs *syncBuffer) {
	t.Helper()
	dns := dnstest.Start(t)
	dns.Add(t, "5.0.0.127.bl.test. 300 IN A 127.0.0.2")
	dns.ServFail("sf.test", true)
	cfg := config.Default()
	cfg.LocalDomains = []string{"example.test"}
	cfg.MyNetworks = []string{"127.0.0.100/32"}
	cfg.DNSBL.Resolvers = []string{dns.Addr}
	cfg.DNSBL.HealthInterval = 0
	cfg.Policy.Access = []config.AccessTable{{Name: "t", Entries: []string{"127.0.0.60 DEFER_IF_PERMIT greylisted"}}}
	cfg.Policy.RecipientRestrictions = []string{"permit_mynetworks", "reject_unauth_destination",
		"reject_rbl_client bl.test", "check_client_access t", "warn_if_reject reject_rbl_client sf.test"}
	if err := cfg.Finish(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	logs = &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	reg := prometheus.NewRegistry()
	eng, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Registerer: reg, Source: "policyd"})
	if err != nil {
		t.Fatal(err)
	}
	listen := "127.0.0.1:0"
	if network == "unix" {
		listen = "unix:" + filepath.Join(t.TempDir(), "policy.sock")
	}
	ln, err := Listen(listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{Engine: eng, Logger: log, Registerer: reg, MaxConns: 10}
	if set != nil {
		set(srv)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), logs
}

func ask(t *testing.T, rw *bufio.ReadWriter, attrs map[string]string) string {
	t.Helper()
	if err := WriteAttrs(rw, attrs); err != nil {
		t.Fatal(err)
	}
	if err := rw.Flush(); err != nil {
		t.Fatal(err)
	}
	line, err := rw.ReadString('\n')
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	blank, err := rw.ReadString('\n')
	if err != nil || blank != "\n" {
		t.Fatalf("reply not ended by an empty line: %q %v", blank, err)
	}
	return strings.TrimSuffix(line, "\n")
}

func req(ip, rcpt string) map[string]string {
	return map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
		"client_address": ip, "client_name": "unknown", "helo_name": "h.test", "sender": "a@b.test",
		"recipient": rcpt, "queue_id": "", "instance": "1.2.3", "size": "0", "server_port": "25",
		"compatibility_level": "3.6", "mail_version": "3.8.0", "some_future_attribute": "ignored"}
}

func TestManyRequestsOnOneConnection(t *testing.T) {
	addr, logs := startServer(t, "tcp")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	for _, tc := range []struct{ ip, rcpt, want string }{
		{"127.0.0.5", "u@example.test", "action=554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using bl.test (rule reject_rbl_client)"},
		{"127.0.0.9", "u@elsewhere.test", "action=554 5.7.1 <u@elsewhere.test>: Relay access denied (rule reject_unauth_destination)"},
		{"127.0.0.100", "u@elsewhere.test", "action=OK"},
		{"127.0.0.60", "u@example.test", "action=DEFER_IF_PERMIT 4.7.1 greylisted (rule check_client_access)"},
		{"127.0.0.9", "u@example.test", "action=PREPEND X-Relayguard-Warn: reject_rbl_client would defer: 451 Client host [127.0.0.9]: temporary failure looking up sf.test"},
		{"::ffff:127.0.0.5", "u@example.test", "action=554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using bl.test (rule reject_rbl_client)"},
	} {
		if got := ask(t, rw, req(tc.ip, tc.rcpt)); got != tc.want {
			t.Errorf("client %s rcpt %s:\n got %q\nwant %q", tc.ip, tc.rcpt, got, tc.want)
		}
	}
	// A clean client with a DUNNO: reject_rbl_client for the warn rule is
	// skipped only if sf.test is fine; ask at a stage with no rules.
	r := req("127.0.0.9", "u@example.test")
	r["protocol_state"] = "CONNECT"
	if got := ask(t, rw, r); got != "action=DUNNO" {
		t.Errorf("CONNECT with no restrictions: %q", got)
	}
	// A malformed request: logged, and the connection is closed.
	io.WriteString(c, "request=smtpd_access_policy\nthis line has no equals sign\n\n")
	rw.Writer.Flush()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := rw.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after a malformed request: read %q, %v; want the connection closed", b, err)
	}
	if !strings.Contains(logs.String(), "policy request malformed") || !strings.Contains(logs.String(), "no equals sign") {
		t.Errorf("malformed request not logged:\n%s", logs.String())
	}
}

func TestUnixSocketAndBadRequestType(t *testing.T) {
	addr, logs := startServer(t, "unix")
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	if got := ask(t, rw, req("127.0.0.5", "u@example.test")); !strings.HasPrefix(got, "action=554 5.7.1 ") {
		t.Errorf("over a unix socket: %q", got)
	}
	r := req("127.0.0.5", "u@example.test")
	r["request"] = "junk"
	WriteAttrs(rw, r)
	rw.Flush()
	if _, err := rw.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("request=junk: connection not closed (%v)", err)
	}
	if !strings.Contains(logs.String(), `request=\"junk\"`) {
		t.Errorf("bad request type not logged:\n%s", logs.String())
	}
}

func TestReadAttrs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{"request=smtpd_access_policy\nprotocol_state=RCPT\n\n", ""},
		{"request=smtpd_access_policy\r\nprotocol_state=RCPT\r\n\r\n", ""},
		{"", "EOF"},
		{"\n", "empty request"},
		{"request=smtpd_access_policy\nnoequals\n\n", "not name=value"},
		{"=value\n\n", "not name=value"},
		{"request=smtpd_access_policy\nprotocol_state=RC", "closed inside a request"},
		{"request=" + strings.Repeat("x", MaxLine) + "\n\n", "line longer"},
		{strings.Repeat("a=b\n", MaxAttributes+1) + "\n", "more than"},
	} {
		_, err := ReadAttrs(bufio.NewReaderSize(strings.NewReader(tc.in), MaxLine))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", clip(tc.in), err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want %q", clip(tc.in), err, tc.wantErr)
		}
	}
}

func TestFormatAction(t *testing.T) {
	for _, tc := range []struct {
		v    policy.Verdict
		want string
	}{
		{policy.Verdict{Action: policy.Permit}, "OK"},
		{policy.Verdict{Action: policy.Dunno}, "DUNNO"},
		{policy.Verdict{Action: policy.Dunno, Prepend: "X-Score: 3"}, "PREPEND X-Score: 3"},
		{policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.7.23", Text: "SPF fail"}, "550 5.7.23 SPF fail"},
		{policy.Verdict{Action: policy.Reject, Text: "no code"}, "554 no code"},
		{policy.Verdict{Action: policy.Defer, Code: 451, Enhanced: "4.4.3", Text: "dns\r\ninjected"}, "451 4.4.3 dns  injected"},
		{policy.Verdict{Action: policy.Defer, Code: 450, Enhanced: "4.7.1", Text: "later", IfPermit: true}, "DEFER_IF_PERMIT 4.7.1 later"},
	} {
		if got := FormatAction(tc.v); got != tc.want {
			t.Errorf("FormatAction(%+v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// FuzzReadAttrs feeds arbitrary bytes to the reader: it must never panic,
// every request it accepts must convert or be refused with ErrMalformed,
// and what it accepts must survive a write/read round trip.
func FuzzReadAttrs(f *testing.F) {
	f.Add([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.1\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), MaxLine)
		for range 50 {
			attrs, err := ReadAttrs(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(attrs) == 0 || len(attrs) > MaxAttributes {
				t.Fatalf("accepted %d attributes", len(attrs))
			}
			if req, err := ToRequest(attrs); err == nil {
				if a := FormatAction(policy.Verdict{Action: policy.Reject, Text: req.Sender + req.Helo}); strings.ContainsAny(a, "\r\n") {
					t.Fatalf("action with a line break: %q", a)
				}
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ToRequest: %v", err)
			}
			var buf bytes.Buffer
			WriteAttrs(&buf, attrs)
			back, err := ReadAttrs(bufio.NewReaderSize(&buf, MaxLine))
			if err != nil && !strings.Contains(err.Error(), "line longer") {
				t.Fatalf("round trip of %q: %v", attrs, err)
			}
			for k, v := range attrs {
				if err == nil && back[k] != v && !strings.HasSuffix(v, "\r") {
					t.Fatalf("round trip %s=%q became %q", k, v, back[k])
				}
			}
		}
	})
}

// TestListenUnixSocketInUse: a stale socket file is replaced, a socket
// with a live server behind it is not stolen.
func TestListenUnixSocketInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix:" + path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("second listener on a live socket: %v, want an error naming %s", err, path)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket file behind
	ln2, err := Listen("unix:" + path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
}

// flakyListener fails its first Accept calls the way a process out of
// file descriptors does, then accepts for real.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestServeSurvivesAcceptErrors: EMFILE from accept is logged and retried;
// the server goes on serving instead of exiting.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	cfg := config.Default()
	cfg.LocalDomains = []string{"example.test"}
	if err := cfg.Finish(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	reg := prometheus.NewRegistry()
	eng, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Engine: eng, Logger: log, Registerer: reg}
	go func() { done <- srv.Serve(ctx, &flakyListener{Listener: ln, fails: 3}) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second)) // a safety net, not a timing assertion
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	if got := ask(t, rw, req("192.0.2.9", "u@elsewhere.test")); !strings.HasPrefix(got, "action=554 5.7.1") {
		t.Errorf("after accept errors: %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if n := strings.Count(logs.String(), "accept failed"); n != 3 {
		t.Errorf("%d accept failures logged, want 3:\n%s", n, logs.String())
	}
}

// TestPipelinedRequests: requests sent together, without waiting, are
// answered in order; when the last of them is malformed, the answers to
// the ones before it still arrive before the connection is closed.
func TestPipelinedRequests(t *testing.T) {
	addr, _ := startServer(t, "tcp")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second)) // a safety net, not a timing assertion
	var batch bytes.Buffer
	for _, r := range []map[string]string{
		req("127.0.0.9", "u@elsewhere.test"), req("127.0.0.100", "u@elsewhere.test"), req("127.0.0.5", "u@example.test"),
	} {
		WriteAttrs(&batch, r)
	}
	batch.WriteString("request=smtpd_access_policy\nno equals sign\n\n")
	if _, err := c.Write(batch.Bytes()); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answers: %v", err)
	}
	want := "action=554 5.7.1 <u@elsewhere.test>: Relay access denied (rule reject_unauth_destination)\n\n" +
		"action=OK\n\n" +
		"action=554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using bl.test (rule reject_rbl_client)\n\n"
	if string(got) != want {
		t.Errorf("pipelined answers:\n got %q\nwant %q (three answers, then the connection closed)", got, want)
	}
}

// TestIdleTimeout: a connection that keeps asking, each request well
// within idle_timeout of the last but for several times idle_timeout in
// all, stays open (the deadline moves with its requests, even though it
// is moved only every sixteenth of the timeout); once it stops asking it
// is closed, not before idle_timeout, and the close is logged.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 320 * time.Millisecond
	addr, logs := startServerWith(t, "tcp", func(s *Server) { s.IdleTimeout = idle })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	start, last := time.Now(), time.Now()
	for {
		if got := ask(t, rw, req("127.0.0.100", "u@elsewhere.test")); got != "action=OK" {
			t.Fatalf("request %s after the first: %q", time.Since(start), got)
		}
		last = time.Now() // the server read the request before this
		if last.Sub(start) > 4*idle {
			break
		}
		time.Sleep(idle / 5)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := rw.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %q, %v; want it closed", b, err)
	}
	if d := time.Since(last); d < idle {
		t.Errorf("closed after %s idle; idle_timeout is %s", d, idle)
	}
	if !strings.Contains(logs.String(), "policy connection idle: closed") {
		t.Errorf("idle close not logged:\n%s", logs)
	}
}

// TestPeerNotReadingIsClosed: a client that pipelines requests and never
// reads the answers fills the socket buffers and the server's write waits.
// Such a connection is idle too: it is closed after idle_timeout (logged),
// so it cannot hold a policy.max_connections slot, and Postfix's next
// connection is served. Before, the write waited for ever: with the
// connection limit reached, every later connection was refused until the
// service restarted.
func TestPeerNotReadingIsClosed(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	addr, logs := startServerWith(t, "unix", func(s *Server) { s.IdleTimeout = idle; s.MaxConns = 1 })
	stuck, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	var one bytes.Buffer
	WriteAttrs(&one, req("127.0.0.100", "u@elsewhere.test"))
	batch := bytes.Repeat(one.Bytes(), 4096)
	go func() {
		// Writes until the server closes the connection (then an error);
		// the test's end closes it too.
		for {
			if _, err := stuck.Write(batch); err != nil {
				return
			}
		}
	}()
	// The server's answers fill the buffers within these requests.
	awaitServed(t, "unix", addr, 30*time.Second, "while a client does not read its answers", logs)
	if !strings.Contains(logs.String(), "not reading its answers") {
		t.Errorf("the stuck connection's close is not logged:\n%s", logs)
	}
}

// TestConnectionFloodLoggedOnce: connections past policy.max_connections
// are refused (closed before any request is read), every one is counted in
// relayguard_policyd_refused_connections_total, but a flood of them is not a
// flood of log lines: one line per refusalLogEvery. The connection holding
// the slot is still answered, and once it closes the next one is served.
func TestConnectionFloodLoggedOnce(t *testing.T) {
	t.Parallel()
	var srv *Server
	addr, logs := startServerWith(t, "tcp", func(s *Server) { s.MaxConns = 1; srv = s })
	holder, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hrw := bufio.NewReadWriter(bufio.NewReader(holder), bufio.NewWriter(holder))
	if got := ask(t, hrw, req("127.0.0.100", "u@elsewhere.test")); got != "action=OK" {
		t.Fatalf("holder's answer %q", got)
	}
	const flood = 50
	for i := range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection %d past max_connections=1 read %d bytes, want it closed", i, n)
		}
		c.Close()
	}
	srv.init() // the metric was made in Serve's goroutine: its once orders the read after it
	if got := testutil.ToFloat64(srv.refusedConns); got != flood {
		t.Errorf("refused connections counted: %v, want %d", got, flood)
	}
	if n := strings.Count(logs.String(), "max_connections reached"); n != 1 {
		t.Errorf("%d log lines for %d refusals within %s, want 1:\n%s", n, flood, refusalLogEvery, logs)
	}
	if got := ask(t, hrw, req("127.0.0.100", "u@elsewhere.test")); got != "action=OK" {
		t.Fatalf("holder's answer during the flood %q", got)
	}
	holder.Close()
	awaitServed(t, "tcp", addr, 10*time.Second, "after the holder closed", logs)
}

// TestSuppressedRefusalsLoggedWhenTheIntervalEnds: refusals not logged
// because one was logged less than the interval before are logged when the
// interval ends, not only with the next refusal (which may come days later
// or never).
func TestSuppressedRefusalsLoggedWhenTheIntervalEnds(t *testing.T) {
	t.Parallel()
	addr, logs := startServerWith(t, "tcp", func(s *Server) { s.MaxConns = 1; s.refusals.every = 300 * time.Millisecond })
	holder, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	hrw := bufio.NewReadWriter(bufio.NewReader(holder), bufio.NewWriter(holder))
	if got := ask(t, hrw, req("127.0.0.100", "u@elsewhere.test")); got != "action=OK" {
		t.Fatalf("holder's answer %q", got)
	}
	const flood = 5
	for i := range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection %d past max_connections=1 was not closed", i)
		}
		c.Close()
	}
	// Every refusal after the first is in a later line (one, unless the
	// interval ended inside the flood on a slow machine).
	deadline := time.Now().Add(10 * time.Second) // a safety net, not a timing assertion
	for {
		counted := 0
		for _, m := range regexp.MustCompile(`refused_since_last_logged=(\d+)`).FindAllStringSubmatch(logs.String(), -1) {
			n, _ := strconv.Atoi(m[1])
			counted += n
		}
		if counted == flood-1 {
			break
		}
		if counted > flood-1 || time.Now().After(deadline) {
			t.Fatalf("%d of the %d refusals after the first are logged, want all:\n%s", counted, flood-1, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitServed dials addr until a connection is answered (action=OK for a
// client in mynetworks), failing the test after limit (a safety net, not a
// timing assertion) with when in the message; a connection the server
// refuses or does not answer is retried.
func awaitServed(t *testing.T, network, addr string, limit time.Duration, when string, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		time.Sleep(20 * time.Millisecond)
		c, err := net.Dial(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
		WriteAttrs(rw, req("127.0.0.100", "u@elsewhere.test"))
		rw.Flush()
		line, err := rw.ReadString('\n')
		c.Close()
		if err == nil {
			if line != "action=OK\n" {
				t.Fatalf("answer %s: %q", when, line)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served %s:\n%s", when, logs)
		}
	}
}

// TestRefusalLogEvery: the first refusal is logged, the ones within the
// interval after it are not, and the next one logged says how many were not.
func TestRefusalLogEvery(t *testing.T) {
	var r refusalLog
	t0 := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		at         time.Duration
		log        bool
		suppressed int
	}{
		{0, true, 0},
		{time.Second, false, 0},
		{9 * time.Second, false, 0},
		{10 * time.Second, true, 2},
		{19 * time.Second, false, 0},
		{time.Hour, true, 1},
		{time.Hour + 10*time.Second, true, 0},
	} {
		log, before := r.refused(t0.Add(step.at))
		if log != step.log || before != step.suppressed {
			t.Errorf("refusal at +%s: log %v with %d before, want %v with %d", step.at, log, before, step.log, step.suppressed)
		}
	}
}
