package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

var update = flag.Bool("update", false, "rewrite testdata/transcripts/*.txt from the server's replies")

// Transcripts pin every reply of the server byte for byte: each file in
// testdata/transcripts is a dialogue (maddy-style) run against a real
// server over loopback. Lines:
//
//	-- connect LISTENER   open a new connection (the previous one is closed)
//	-- starttls           TLS handshake on the client side (after "220 2.0.0")
//	-- wait               (update mode) wait for a reply the server sends unprompted
//	-- breakdb            close the user database (every lookup now fails)
//	-- shutdown           shut the server down
//	-- closed             the server has closed the connection
//	C: TEXT               send TEXT and CRLF
//	C> "GO STRING"        send the quoted bytes as they are
//	S: TEXT               one reply line, exactly (queue ids are normalised)
//	# ...                 comment
//
// go test -run TestTranscripts -update rewrites the S: and -- closed lines
// from what the server answers; review the diff.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		tc, ok := transcriptCases[name]
		if !ok {
			t.Errorf("%s: no entry in transcriptCases", f)
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runTranscript(t, f, tc)
		})
	}
}

type transcriptCase struct {
	mutate func(*config.Config)
	setup  func(t *testing.T, ts *testServer)
}

// refusingGuard stands in for internal/guard where a transcript needs a
// client to be banned or over an AUTH limit: the real guard never bans
// loopback.
type refusingGuard struct {
	admit string
	auth  error
}

func (g refusingGuard) Admit(netip.Addr) (bool, string) { return g.admit == "", g.admit }
func (g refusingGuard) AuthAttempt(context.Context, netip.Addr) (*limits.Reservation, error) {
	return nil, g.auth
}

// overLimit refuses recipients whose address contains "over", and
// messages with the null sender.
type overLimit struct{}

func (overLimit) Rcpt(_ context.Context, _ ratelimit.Sender, rcpt string) error {
	if strings.Contains(rcpt, "over") {
		return errors.New("recipients per day exceeded for alice (3 per 24h0m0s)")
	}
	return nil
}

func (overLimit) Message(_ context.Context, s ratelimit.Sender, _ int) error {
	if s.From == "" {
		return errors.New("messages per hour exceeded for alice (2 per 1h0m0s)")
	}
	return nil
}

func withPolicy(t *testing.T, ts *testServer) {
	eng, err := policy.New(ts.cfg.Site, ts.cfg.Policy, ts.cfg.DNSBL, policy.Deps{Events: ts.events, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.deps.Policy = eng
}

var transcriptCases = map[string]transcriptCase{
	"greeting":        {},
	"command_errors":  {},
	"line_errors":     {},
	"too_many_errors": {mutate: func(c *config.Config) { c.Limits.MaxBadCommands = 3 }},
	"non_smtp":        {},
	"junk_limit":      {mutate: func(c *config.Config) { c.Limits.MaxJunkCommands = 2 }},
	"relay_outsider":  {mutate: func(c *config.Config) { c.RelayDomains = []string{"relayed.example"} }},
	"relay_trusted":   {mutate: func(c *config.Config) { c.MyNetworks = []string{"127.0.0.1"} }},
	"data_errors":     {mutate: func(c *config.Config) { c.Limits.MaxMessageSize = 2000 }},
	"deny":            {mutate: func(c *config.Config) { c.Listeners[0].Deny = []string{"127.0.0.0/8"} }},
	"pregreet":        {mutate: func(c *config.Config) { c.Limits.GreetingDelay = config.Duration(2 * time.Second) }},
	"submission":      {},
	"auth":            {},
	"sender_binding":  {},
	"banned": {setup: func(_ *testing.T, ts *testServer) {
		ts.srv.deps.Guard = refusingGuard{admit: "127.0.0.0/24 is banned: 5 failures"}
	}},
	"auth_refused": {setup: func(_ *testing.T, ts *testServer) {
		ts.srv.deps.Guard = refusingGuard{auth: &limits.Exceeded{Prefix: netip.MustParsePrefix("127.0.0.0/24"), Count: 30, Max: 30, Period: time.Minute}}
	}},
	"send_limits": {setup: func(_ *testing.T, ts *testServer) { ts.srv.deps.Limits = overLimit{} }},
	"policy_connect": {mutate: func(c *config.Config) { c.Policy.ConnectRestrictions = []string{"defer"} },
		setup: withPolicy},
	"policy_stages": {mutate: func(c *config.Config) {
		c.Policy.Access = []config.AccessTable{{Name: "t", Entries: []string{"127.0.0.1/32 451 4.3.2 busy, try later"}}}
		c.Policy.HeloRestrictions = []string{"reject_non_fqdn_helo"}
		c.Policy.SenderRestrictions = []string{"reject_non_fqdn_sender"}
		c.Policy.DataRestrictions = []string{"check_client_access t"}
	}, setup: withPolicy},
	"policy_end_of_data": {mutate: func(c *config.Config) { c.Policy.EndOfDataRestrictions = []string{"reject"} },
		setup: withPolicy},
	"lookup_failures":      {},
	"command_timeout":      {mutate: func(c *config.Config) { c.Limits.CommandTimeout = config.Duration(time.Second) }},
	"data_timeout":         {mutate: func(c *config.Config) { c.Limits.DataBlockTimeout = config.Duration(time.Second) }},
	"starttls_unavailable": {setup: func(_ *testing.T, ts *testServer) { ts.srv.deps.TLS = nil }},
	"shutdown":             {},
}

var queueID = regexp.MustCompile(`queued as [0-9a-f]+`)

func normalise(l string) string { return queueID.ReplaceAllString(l, "queued as ID") }

type transcriptConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	out  []string // update mode: the rewritten file
}

func runTranscript(t *testing.T, file string, tc transcriptCase) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, tc.mutate)
	if tc.setup != nil {
		tc.setup(t, ts)
	}
	ts.start()
	var c *transcriptConn
	var out []string
	// drain (update mode) records what the server sent since the last step.
	drain := func(first time.Duration) {
		if c == nil || !*update {
			return
		}
		idle := 300 * time.Millisecond
		d := first
		for {
			c.conn.SetReadDeadline(time.Now().Add(max(d, idle)))
			d = 0
			l, err := c.r.ReadString('\n')
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return
				}
				out = append(out, "-- closed")
				c.conn.Close()
				c = nil
				return
			}
			out = append(out, "S: "+normalise(strings.TrimRight(l, "\r\n")))
		}
	}
	for n, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		where := file + ":" + strconv.Itoa(n+1)
		if *update && (strings.HasPrefix(line, "S: ") || line == "-- closed") {
			continue
		}
		if *update && (strings.HasPrefix(line, "C") || strings.HasPrefix(line, "-- ")) {
			drain(0)
		}
		if *update {
			out = append(out, line)
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "-- connect "):
			if c != nil {
				c.conn.Close()
			}
			conn, err := dialListener(ts, strings.TrimPrefix(line, "-- connect "))
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			c = &transcriptConn{t: t, conn: conn, r: bufio.NewReader(conn)}
		case line == "-- starttls":
			tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: testHost})
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("%s: TLS handshake: %v", where, err)
			}
			c.conn, c.r = tc, bufio.NewReader(tc)
		case line == "-- wait":
			drain(5 * time.Second)
		case line == "-- breakdb":
			ts.db.Close()
		case line == "-- shutdown":
			ts.srv.Shutdown()
		case line == "-- closed":
			c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if l, err := c.r.ReadString('\n'); err == nil {
				t.Fatalf("%s: connection still open, got %q", where, l)
			}
			c.conn.Close()
			c = nil
		case strings.HasPrefix(line, "C") && c == nil:
			t.Fatalf("%s: no connection", where)
		case strings.HasPrefix(line, "C: "):
			c.send(where, line[3:]+"\r\n")
		case strings.HasPrefix(line, "C> "):
			s, err := strconv.Unquote(line[3:])
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			c.send(where, s)
		case strings.HasPrefix(line, "S: "):
			if c == nil {
				t.Fatalf("%s: no connection", where)
			}
			c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			l, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: want %q, read error %v", where, line[3:], err)
			}
			if got := normalise(strings.TrimSuffix(l, "\r\n")); got != line[3:] || !strings.HasSuffix(l, "\r\n") {
				t.Fatalf("%s:\n got  %q\n want %q", where, l, line[3:]+"\r\n")
			}
		default:
			t.Fatalf("%s: bad transcript line %q", where, line)
		}
	}
	if *update {
		drain(0)
		if err := os.WriteFile(file, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func dialListener(ts *testServer, name string) (net.Conn, error) {
	addr, ok := ts.addr[name]
	if !ok {
		return nil, errors.New("no listener " + name)
	}
	if name == "submissions" {
		return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	}
	return net.DialTimeout("tcp", addr, 10*time.Second)
}

func (c *transcriptConn) send(where, s string) {
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("%s: send %q: %v", where, s, err)
	}
}
