package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// testServer is a real server on loopback ports with a real user database
// and spool in a temporary directory.
type testServer struct {
	cfg    *config.Config
	addr   map[string]string // listener name → host:port
	users  *userdb.DB
	spool  *queue.Spool
	events *event.Recorder
	srv    *Server
	tls    *tls.Config
	db     *sql.DB
	// logs holds everything the server logged, metrics what it counted.
	logs    *logBuffer
	metrics *Metrics
	serve   []func() // the listeners' Serve loops, run by start
}

// logBuffer collects log output from concurrent sessions.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Lines returns the lines logged so far.
func (b *logBuffer) Lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

const (
	testHost     = "mail.test"
	testPassword = "correct horse battery staple"
)

// startServer starts listeners "mx", "submission", "submissions" and
// "local" (a trusted-local submission listener), with users alice (owning
// alice@mail.test and sales@mail.test) and bob@mail.test.
func startServer(t testing.TB, mutate func(*config.Config)) *testServer {
	t.Helper()
	ts := newTestServer(t, mutate)
	ts.start()
	return ts
}

// newTestServer builds the server of startServer without serving yet, so
// that a test can set its Deps (guard, policy, limits) before any session
// reads them; start serves.
func newTestServer(t testing.TB, mutate func(*config.Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = testHost
	cfg.LocalDomains = []string{testHost, "localhost"}
	cfg.OwnAddresses = []string{"127.0.0.1", "::1"}
	cfg.Limits.AuthFailureDelay = config.Duration(5 * time.Millisecond)
	cfg.Limits.ErrorDelay = config.Duration(5 * time.Millisecond)
	cfg.Spool.MinFree = 1 << 20
	cfg.Limits.MaxAuthFailures = 3
	cfg.Auth.CRAMMD5 = true
	cfg.Auth.Mechanisms = []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5"}
	cfg.Listeners = []config.ListenerConfig{
		{Name: "mx", Address: "127.0.0.1:0", Mode: config.ModeMX},
		{Name: "submission", Address: "127.0.0.1:0", Mode: config.ModeSubmission},
		{Name: "submissions", Address: "127.0.0.1:0", Mode: config.ModeSubmissions},
		{Name: "local", Address: "127.0.0.1:0", Mode: config.ModeSubmission, TrustedLocal: true},
	}
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Finish(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.EnsureSelfSigned(cfg.TLS.CertFile, cfg.TLS.KeyFile, []string{testHost, "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	tlsConf, err := certs.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	users, err := userdb.Open(ctx, db, userdb.Options{PasswordHash: "argon2id", SCRAMIterations: 4096, CRAMMD5: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob@mail.test"} {
		if err := users.Add(ctx, u, testPassword); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"alice@mail.test", "sales@mail.test"} {
		if err := users.AddAddress(ctx, "alice", a); err != nil {
			t.Fatal(err)
		}
	}
	spool, err := queue.OpenSpool(cfg.Spool.Dir, time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &event.Recorder{}
	logs := &logBuffer{}
	metrics := NewMetrics(nil)
	srv, err := New(cfg.SMTP(), Deps{Users: users, Creds: users, Spool: spool, TLS: tlsConf, Events: rec, Metrics: metrics,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{cfg: cfg, addr: map[string]string{}, users: users, spool: spool, events: rec, srv: srv, tls: tlsConf, db: db, logs: logs, metrics: metrics}
	for _, lc := range cfg.Listeners {
		ln, err := net.Listen("tcp", lc.Address)
		if err != nil {
			t.Fatal(err)
		}
		ts.addr[lc.Name] = ln.Addr().String()
		ts.serve = append(ts.serve, func() { srv.Serve(ctx, ln, lc) })
	}
	t.Cleanup(func() {
		cancel()
		srv.Shutdown()
		spool.Close()
		db.Close()
	})
	return ts
}

// start serves the listeners of a server made by newTestServer.
func (ts *testServer) start() {
	for _, f := range ts.serve {
		go f()
	}
}

// client is a raw SMTP client for scripted dialogues.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func (ts *testServer) dial(t testing.TB, listener string) *client {
	t.Helper()
	return ts.dialFrom(t, listener, "")
}

// dialFrom connects from the source address src (any of 127.0.0.0/8 works
// on Linux loopback), or from the default address when src is "".
func (ts *testServer) dialFrom(t testing.TB, listener, src string) *client {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	var c net.Conn
	var err error
	if listener == "submissions" {
		c, err = tls.DialWithDialer(d, "tcp", ts.addr[listener], &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = d.Dial("tcp", ts.addr[listener])
	}
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

// send writes raw bytes (CRLF is not added).
func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

// cmd sends one command line with CRLF.
func (c *client) cmd(s string) { c.t.Helper(); c.send(s + "\r\n") }

// reply reads a whole (possibly multi-line) reply and returns its lines.
func (c *client) reply() []string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply after %q: %v", lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// expect reads one reply and checks that its last line starts with want.
func (c *client) expect(want string) string {
	c.t.Helper()
	lines := c.reply()
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, want) {
		c.t.Fatalf("got reply %q, want %q", strings.Join(lines, " | "), want)
	}
	return strings.Join(lines, "\n")
}

// dialogue runs a script: "C: " lines are sent, "S: " lines are expected
// (prefix match on the last line of a reply).
func (c *client) dialogue(script string) {
	c.t.Helper()
	for _, l := range strings.Split(strings.TrimSpace(script), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "C: "):
			c.cmd(l[3:])
		case strings.HasPrefix(l, "S: "):
			c.expect(l[3:])
		case l == "":
		default:
			c.t.Fatalf("bad script line %q", l)
		}
	}
}

// expectClosed checks that the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if l, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("connection still open, got %q", l)
	}
}

// startTLS upgrades the connection after EHLO.
func (c *client) startTLS() {
	c.t.Helper()
	c.cmd("STARTTLS")
	c.expect("220 2.0.0")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: testHost})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func plainIR(user, pass string) string {
	return b64("\x00" + user + "\x00" + pass)
}

// spooled returns the messages in the spool.
func (ts *testServer) spooled(t testing.TB) []*queue.Envelope {
	t.Helper()
	l, err := ts.spool.List()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (ts *testServer) messageData(t testing.TB, id string) string {
	t.Helper()
	rc, err := ts.spool.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var _ = fmt.Sprintf
