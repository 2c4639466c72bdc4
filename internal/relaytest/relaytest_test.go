package relaytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func run(t *testing.T, o Options) (*Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	return Run(ctx, o)
}

func formNames() []string {
	var out []string
	for _, f := range Battery(Target{From: DefaultFrom, To: DefaultTo, ServerName: "mx.test-server.example", IP: netip.MustParseAddr("127.0.0.1")}) {
		out = append(out, f.Name)
	}
	return out
}

// acceptedNames returns the accepted tests' form names in one phase.
func acceptedNames(rep *Report, phase string) []string {
	var out []string
	for _, r := range rep.Results {
		if r.Phase == phase && r.Verdict == Accepted {
			out = append(out, r.Name)
		}
	}
	return out
}

func TestBatteryNamesUniqueAndComplete(t *testing.T) {
	names := formNames()
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("duplicate test name %q", n)
		}
		seen[n] = true
	}
	// The 16 forms of the classic scanners must all be there.
	for _, n := range []string{"null-sender", "outside-sender", "sender-server-name", "sender-ip-literal",
		"percent-hack-ip", "percent-hack-name", "quoted-address", "quoted-percent", "double-at-ip",
		"quoted-at-ip", "double-at-name", "source-route-ip", "source-route-name", "bang-path",
		"bang-path-ip", "bang-path-name"} {
		if !seen[n] {
			t.Errorf("classic form %q missing", n)
		}
	}
	forms := Battery(Target{From: "a@out.example", To: "t@d.example", ServerName: "mx.s.example", IP: netip.MustParseAddr("192.0.2.7")})
	want := map[string][2]string{
		"null-sender":          {"", "t@d.example"},
		"percent-hack-ip":      {"a@[192.0.2.7]", "t%d.example@[192.0.2.7]"},
		"quoted-at-ip":         {"a@[192.0.2.7]", `"t@d.example"@[192.0.2.7]`},
		"source-route-name":    {"a@[192.0.2.7]", "@mx.s.example:t@d.example"},
		"bang-path-name":       {"a@[192.0.2.7]", "d.example!t@mx.s.example"},
		"percent-hack-ipv6":    {"a@[192.0.2.7]", "t%d.example@[IPv6:::ffff:192.0.2.7]"},
		"punycode-domain":      {"a@out.example", "t@xn--relaytest--jeb.d.example"},
		"sender-server-domain": {"a@s.example", "t@d.example"},
	}
	for _, f := range forms {
		if w, ok := want[f.Name]; ok {
			if f.From != w[0] || f.To != w[1] {
				t.Errorf("%s: MAIL <%s> RCPT <%s>, want <%s> <%s>", f.Name, f.From, f.To, w[0], w[1])
			}
			delete(want, f.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("forms not found: %v", want)
	}
}

// An open server: every form accepted in every phase, verdict open, and every
// path reached the server byte for byte.
func TestOpenServer(t *testing.T) {
	s := newTestServer(t, &testServer{tls: selfSigned(t), utf8: true})
	rep, err := run(t, Options{Addr: s.addr(), Parallel: 4, ErrorsPerConn: 8})
	if err != nil {
		t.Fatal(err)
	}
	n := len(formNames())
	if rep.Outcome != "open" || rep.Counts[Accepted] != 3*n || len(rep.Results) != 3*n {
		t.Fatalf("outcome %s, %d/%d accepted, want open %d/%d", rep.Outcome, rep.Counts[Accepted], len(rep.Results), 3*n, 3*n)
	}
	var phases []string
	for _, p := range rep.Phases {
		phases = append(phases, p.Name)
	}
	if !slices.Equal(phases, []string{PhasePlain, PhaseStartTLS, PhaseAuthFail}) {
		t.Errorf("phases %v", phases)
	}
	if !rep.Phases[1].TLS || !rep.Phases[2].TLS || rep.Phases[0].TLS {
		t.Errorf("TLS per phase: %+v", rep.Phases)
	}
	if !strings.Contains(rep.Phases[2].Setup, "535 5.7.8") {
		t.Errorf("authfail setup %q does not show the failed AUTH", rep.Phases[2].Setup)
	}
	if rep.ServerName != "mx.test-server.example" || rep.IP != "127.0.0.1" {
		t.Errorf("server name %q ip %q", rep.ServerName, rep.IP)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rep.Results {
		if !slices.Contains(s.rcpts, r.RcptTo) {
			t.Errorf("%s: server never saw RCPT TO:<%s>", r.ID, r.RcptTo)
		}
	}
	utf8 := 0
	for _, m := range s.mails {
		if strings.HasSuffix(m, " SMTPUTF8") {
			utf8++
		}
	}
	if utf8 != 3*3 { // three UTF-8 forms in three phases
		t.Errorf("%d MAIL commands with SMTPUTF8, want 9", utf8)
	}
	if len(s.messages) != 0 {
		t.Errorf("%d messages sent without --data", len(s.messages))
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	if want := fmt.Sprintf("RESULT: OPEN RELAY — %d/%d tests accepted", 3*n, 3*n); !strings.Contains(buf.String(), want) {
		t.Errorf("result line: %s", rep.ResultLine())
	}
}

func TestPartlyOpenServers(t *testing.T) {
	cases := []struct {
		name   string
		accept func(path string) bool
		want   []string
	}{
		{"percent-hack", func(p string) bool { return strings.Contains(p, "%") }, []string{
			"percent-hack-ip", "percent-hack-name", "quoted-percent", "percent-hack-ipv6",
			"percent-hack-uppercase-name", "percent-hack-trailing-dot", "percent-hack-utf8",
			"quoted-percent-name", "half-quoted-percent", "percent-hack-localhost"}},
		{"source-route", func(p string) bool { return strings.HasPrefix(p, "@") }, []string{
			"source-route-ip", "source-route-name", "source-route-ipv6", "source-route-localhost"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, &testServer{rcpt: func(p string, _ bool) string {
				if tc.accept(p) {
					return "250 2.1.5 ok"
				}
				return "550 5.7.1 relay access denied"
			}})
			rep, err := run(t, Options{Addr: s.addr(), Parallel: 3, ErrorsPerConn: 6})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Outcome != "open" {
				t.Fatalf("outcome %s", rep.Outcome)
			}
			for _, ph := range []string{PhasePlain, PhaseAuthFail} {
				got := acceptedNames(rep, ph)
				if !slices.Equal(got, tc.want) {
					t.Errorf("phase %s accepted %v, want %v", ph, got, tc.want)
				}
			}
			if rep.Counts[Accepted] != 2*len(tc.want) || rep.Counts[Rejected] != len(rep.Results)-2*len(tc.want) {
				t.Errorf("counts %v", rep.Counts)
			}
		})
	}
}

func TestClosedServer(t *testing.T) {
	s := newTestServer(t, &testServer{tls: selfSigned(t), rcpt: func(string, bool) string { return "550 5.7.1 relay access denied" }})
	rep, err := run(t, Options{Addr: s.addr()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != "closed" || rep.Counts[Rejected] != len(rep.Results) || len(rep.Results) != 3*len(formNames()) {
		t.Fatalf("outcome %s counts %v of %d", rep.Outcome, rep.Counts, len(rep.Results))
	}
	if !strings.HasPrefix(rep.ResultLine(), "RESULT: no relays accepted (0/") {
		t.Errorf("result line %q", rep.ResultLine())
	}
}

func TestVerdictKinds(t *testing.T) {
	s := newTestServer(t, &testServer{rcpt: func(p string, _ bool) string {
		switch {
		case strings.Contains(p, "%"):
			return "530 5.7.0 authentication required"
		case strings.HasPrefix(p, `"`):
			return "535 5.7.8 authentication credentials invalid"
		case strings.HasPrefix(p, "@"):
			return "451 4.3.0 try later"
		case strings.Contains(p, "!"):
			return "250 ok"
		}
		return "553 5.1.3 bad address"
	}})
	rep, err := run(t, Options{Addr: s.addr(), StartTLS: StartTLSNever})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		var want string
		switch {
		case strings.Contains(r.RcptTo, "%"):
			want = AuthRequired
		case strings.HasPrefix(r.RcptTo, `"`):
			want = AuthRequired
		case strings.HasPrefix(r.RcptTo, "@"):
			want = Temporary
		case strings.Contains(r.RcptTo, "!"):
			want = Accepted
		default:
			want = Rejected
		}
		if r.Verdict != want || r.Stage != "rcpt" {
			t.Errorf("%s <%s>: %s at %s, want %s", r.ID, r.RcptTo, r.Verdict, r.Stage, want)
		}
	}
	if rep.Outcome != "open" {
		t.Errorf("outcome %s", rep.Outcome)
	}
}

func TestUntestable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		rep, err := run(t, Options{Addr: addr})
		var ue *UntestableError
		if !errors.As(err, &ue) || ue.Reason != ReasonRefused || rep.Outcome != "untestable" {
			t.Fatalf("err %v outcome %s", err, rep.Outcome)
		}
	})
	t.Run("no banner", func(t *testing.T) {
		s := newTestServer(t, &testServer{silent: true})
		rep, err := run(t, Options{Addr: s.addr(), Timeout: 300 * time.Millisecond})
		var ue *UntestableError
		if !errors.As(err, &ue) || ue.Reason != ReasonNoBanner {
			t.Fatalf("err %v outcome %s", err, rep.Outcome)
		}
		if !strings.Contains(rep.ResultLine(), "could not test — no banner") {
			t.Errorf("result line %q", rep.ResultLine())
		}
	})
	t.Run("554 banner", func(t *testing.T) {
		s := newTestServer(t, &testServer{banner: "554 5.7.1 go away"})
		_, err := run(t, Options{Addr: s.addr()})
		var ue *UntestableError
		if !errors.As(err, &ue) || ue.Reason != ReasonRefused || !strings.Contains(err.Error(), "554 5.7.1 go away") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("all tempfailed", func(t *testing.T) {
		s := newTestServer(t, &testServer{rcpt: func(string, bool) string { return "451 4.3.0 local error" }})
		rep, err := run(t, Options{Addr: s.addr()})
		var ue *UntestableError
		if !errors.As(err, &ue) || ue.Reason != ReasonTempfailed || rep.Counts[Temporary] != len(rep.Results) {
			t.Fatalf("err %v counts %v", err, rep.Counts)
		}
		if !strings.Contains(rep.ResultLine(), "all tests tempfailed") {
			t.Errorf("result line %q", rep.ResultLine())
		}
	})
	t.Run("line break in an option", func(t *testing.T) {
		s := newTestServer(t, &testServer{})
		_, err := run(t, Options{Addr: s.addr(), To: "a@b.example\r\nDATA"})
		var ue *UntestableError
		if !errors.As(err, &ue) || ue.Reason != ReasonOption {
			t.Fatalf("err %v", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.conns != 0 {
			t.Errorf("%d connections made with a bad option", s.conns)
		}
	})
	t.Run("starttls only, not offered", func(t *testing.T) {
		s := newTestServer(t, &testServer{})
		_, err := run(t, Options{Addr: s.addr(), StartTLS: StartTLSOnly})
		var ue *UntestableError
		if !errors.As(err, &ue) || ue.Reason != ReasonNoTLS {
			t.Fatalf("err %v", err)
		}
	})
}

// A 4.7.x deferral on every test (Postfix defer_unauth_destination) is a
// refusal, not a server that could not be tested.
func TestPolicyDeferralIsClosed(t *testing.T) {
	s := newTestServer(t, &testServer{rcpt: func(string, bool) string { return "454 4.7.1 relay access denied" }})
	rep, err := run(t, Options{Addr: s.addr()})
	if err != nil || rep.Outcome != "closed" || rep.Counts[Temporary] != len(rep.Results) {
		t.Fatalf("err %v outcome %s counts %v", err, rep.Outcome, rep.Counts)
	}
	if want := fmt.Sprintf("RESULT: no relays accepted (0/%d tests)", len(rep.Results)); rep.ResultLine() != want {
		t.Errorf("result line %q, want %q", rep.ResultLine(), want)
	}
}

// Tests that got only a non-policy 4xx decided nothing: when the others
// were refused the verdict is still "no relays accepted", but the line
// says how many tests were not completed instead of claiming them all.
func TestPartlyTempfailedSaysSo(t *testing.T) {
	s := newTestServer(t, &testServer{rcpt: func(p string, _ bool) string {
		if strings.Contains(p, "%") {
			return "451 4.3.0 try later"
		}
		return "550 5.7.1 relay access denied"
	}})
	rep, err := run(t, Options{Addr: s.addr(), StartTLS: StartTLSNever})
	if err != nil || rep.Outcome != "closed" {
		t.Fatalf("err %v outcome %s counts %v", err, rep.Outcome, rep.Counts)
	}
	tmp := rep.Counts[Temporary]
	if tmp == 0 || rep.Incomplete() != tmp {
		t.Fatalf("counts %v, incomplete %d", rep.Counts, rep.Incomplete())
	}
	want := fmt.Sprintf("RESULT: no relays accepted (0/%d tests; %d of them not completed (error or temporary failure), see above)", len(rep.Results), tmp)
	if rep.ResultLine() != want {
		t.Errorf("result line %q, want %q", rep.ResultLine(), want)
	}
}

// A server that hangs up after a few errors: the tester reconnects, redoes
// the phase's setup and repeats the interrupted test, so none is lost.
func TestServerHangsUp(t *testing.T) {
	s := newTestServer(t, &testServer{tls: selfSigned(t), hangupAfter: 3,
		rcpt: func(string, bool) string { return "550 5.7.1 no" }})
	rep, err := run(t, Options{Addr: s.addr()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[Rejected] != len(rep.Results) || len(rep.Results) != 3*len(formNames()) {
		t.Fatalf("counts %v of %d", rep.Counts, len(rep.Results))
	}
}

// --errors-per-connection keeps every connection under the limit.
func TestErrorsPerConnection(t *testing.T) {
	s := newTestServer(t, &testServer{rcpt: func(string, bool) string { return "550 5.7.1 no" }})
	rep, err := run(t, Options{Addr: s.addr(), ErrorsPerConn: 5, Parallel: 4})
	if err != nil || rep.Outcome != "closed" {
		t.Fatal(err, rep.Outcome)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The authfail phase's failed AUTH is one error, each test one more.
	if s.maxErrs > 5 || s.conns < len(rep.Results)/4 {
		t.Errorf("max %d errors on one connection over %d connections", s.maxErrs, s.conns)
	}
}

func TestNewConnectionPerTest(t *testing.T) {
	s := newTestServer(t, &testServer{})
	rep, err := run(t, Options{Addr: s.addr(), NewConn: true})
	if err != nil || rep.Outcome != "open" {
		t.Fatal(err, rep.Outcome)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// One first connection, one per phase set-up, and one per test after that.
	if s.conns < len(rep.Results) {
		t.Errorf("%d connections for %d tests", s.conns, len(rep.Results))
	}
}

func TestDataCountsOnlyAcceptedMessages(t *testing.T) {
	t.Run("accepted", func(t *testing.T) {
		s := newTestServer(t, &testServer{})
		rep, err := run(t, Options{Addr: s.addr(), Data: true, StartTLS: StartTLSNever})
		if err != nil || rep.Outcome != "open" || rep.Counts[Accepted] != len(rep.Results) {
			t.Fatal(err, rep.Outcome, rep.Counts)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.messages) != len(rep.Results) || !strings.Contains(s.messages[0], "Subject: relayguard relay test plain/null-sender\r\n") {
			t.Errorf("%d messages for %d tests; first: %q", len(s.messages), len(rep.Results), s.messages[0])
		}
	})
	t.Run("refused at end of data", func(t *testing.T) {
		s := newTestServer(t, &testServer{dataReply: "554 5.7.1 relaying denied"})
		rep, err := run(t, Options{Addr: s.addr(), Data: true})
		if err != nil || rep.Outcome != "closed" || rep.Counts[Rejected] != len(rep.Results) {
			t.Fatal(err, rep.Outcome, rep.Counts)
		}
		if r := rep.Results[0]; r.Stage != "data" || r.Exchanges[1].Reply.Code != 250 {
			t.Errorf("first result %+v", r)
		}
	})
	// A server that answers the DATA command itself, without 354, has
	// received no message: even a 2xx there relays nothing.
	for _, tc := range []struct {
		reply, verdict string
	}{
		{"250 2.0.0 ok, whatever", Failed},
		{"554 5.5.1 no valid recipients", Rejected},
		{"451 4.3.0 try later", Temporary},
	} {
		t.Run("DATA answered "+tc.reply[:3], func(t *testing.T) {
			s := newTestServer(t, &testServer{dataCmdReply: tc.reply})
			rep, _ := run(t, Options{Addr: s.addr(), Data: true, StartTLS: StartTLSNever})
			if rep.Counts[Accepted] != 0 || rep.Outcome == "open" || rep.Counts[tc.verdict] != len(rep.Results) {
				t.Fatalf("DATA → %q: outcome %s counts %v", tc.reply, rep.Outcome, rep.Counts)
			}
			r := rep.Results[0]
			if r.Stage != "data" || len(r.Exchanges) != 3 || r.Exchanges[2].Command != "DATA" || r.Exchanges[2].Reply.Code != atoi3(tc.reply) {
				t.Errorf("first result %+v", r)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.messages) != 0 {
				t.Errorf("%d messages sent", len(s.messages))
			}
		})
	}
}

func atoi3(reply string) int {
	return int(reply[0]-'0')*100 + int(reply[1]-'0')*10 + int(reply[2]-'0')
}

func TestAuthenticatedRelay(t *testing.T) {
	s := newTestServer(t, &testServer{tls: selfSigned(t), authUser: "u", authPass: "secret",
		rcpt: func(_ string, authed bool) string {
			if authed {
				return "250 2.1.5 ok"
			}
			return "554 5.7.1 relay access denied"
		}})
	rep, err := run(t, Options{Addr: s.addr(), AuthUser: "u", AuthPass: "secret"})
	if err != nil || rep.Outcome != "open" || rep.Counts[Accepted] != len(formNames()) {
		t.Fatal(err, rep.Outcome, rep.Counts)
	}
	if len(rep.Phases) != 1 || rep.Phases[0].Name != PhaseAuth || !rep.Phases[0].TLS {
		t.Errorf("phases %+v", rep.Phases)
	}
	if !strings.HasPrefix(rep.ResultLine(), "RESULT: relay accepted for authenticated user u") {
		t.Errorf("result line %q", rep.ResultLine())
	}
	rep, err = run(t, Options{Addr: s.addr()})
	if err != nil || rep.Outcome != "closed" {
		t.Fatal(err, rep.Outcome, rep.Counts)
	}
	_, err = run(t, Options{Addr: s.addr(), AuthUser: "u", AuthPass: "wrong"})
	var ue *UntestableError
	if !errors.As(err, &ue) || ue.Reason != ReasonAuth {
		t.Fatalf("wrong password: %v", err)
	}
}

// A server that takes any credential relays after the "failed" AUTH: the
// tester must say so.
func TestBogusAuthAccepted(t *testing.T) {
	s := newTestServer(t, &testServer{authAny: true, rcpt: func(_ string, authed bool) string {
		if authed {
			return "250 ok"
		}
		return "550 5.7.1 no"
	}})
	rep, err := run(t, Options{Addr: s.addr()})
	if err != nil || rep.Outcome != "open" {
		t.Fatal(err, rep.Outcome)
	}
	if got := acceptedNames(rep, PhaseAuthFail); len(got) != len(formNames()) || len(acceptedNames(rep, PhasePlain)) != 0 {
		t.Errorf("authfail accepted %d, plain %d", len(got), len(acceptedNames(rep, PhasePlain)))
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "ACCEPTED AUTH with a random user") }) {
		t.Errorf("notes %v", rep.Notes)
	}
}

// Without SMTPUTF8 the UTF-8 forms are still sent, without the parameter.
func TestUTF8WithoutSMTPUTF8(t *testing.T) {
	s := newTestServer(t, &testServer{})
	rep, err := run(t, Options{Addr: s.addr(), StartTLS: StartTLSNever})
	if err != nil || rep.SMTPUTF8 {
		t.Fatal(err, rep.SMTPUTF8)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.mails {
		if strings.Contains(m, "SMTPUTF8") {
			t.Errorf("SMTPUTF8 sent though not offered: %s", m)
		}
	}
	if !slices.Contains(s.rcpts, "relay-target@relaytest-ü.relaytest.example") {
		t.Errorf("UTF-8 form not sent")
	}
}

func TestTranscript(t *testing.T) {
	s := newTestServer(t, &testServer{})
	var buf bytes.Buffer
	if _, err := run(t, Options{Addr: s.addr(), StartTLS: StartTLSNever, Transcript: &buf, Parallel: 4, ErrorsPerConn: 8}); err != nil {
		t.Fatal(err)
	}
	// Parallel connections, yet the transcript is in the battery's order.
	last := -1
	for i, name := range formNames() {
		at := strings.Index(buf.String(), "# plain/"+name+"\n")
		if at < last {
			t.Errorf("transcript out of order at %s (form %d)", name, i)
		}
		last = at
	}
	for _, want := range []string{"< 220 mx.test-server.example ESMTP test", "> RCPT TO:<\"relay-target@relaytest.example\"@[127.0.0.1]>", "> AUTH PLAIN <credentials of relaytest-", "> RSET"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
}

func TestNameFromBanner(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example.com ESMTP Postfix": "mx.example.com",
		"ESMTP ready":                  "",
		"[192.0.2.1] hello":            "[192.0.2.1]",
		"localhost ESMTP":              "localhost",
		"vm ESMTP relayguard":          "vm",
		"SMTP server ready":            "",
		"":                             "",
	} {
		if got := nameFromBanner(in); got != want {
			t.Errorf("nameFromBanner(%q) = %q, want %q", in, got, want)
		}
	}
}

// --tls: implicit TLS from the first byte (RFC 8314); no STARTTLS phase.
func TestImplicitTLS(t *testing.T) {
	s := newTestServer(t, &testServer{tls: selfSigned(t), implicit: true, rcpt: func(p string, _ bool) string {
		if strings.Contains(p, "!") {
			return "250 2.1.5 ok"
		}
		return "550 5.7.1 no"
	}})
	rep, err := run(t, Options{Addr: s.addr(), ImplicitTLS: true, Parallel: 4, ErrorsPerConn: 8})
	if err != nil || rep.Outcome != "open" {
		t.Fatal(err, rep.Outcome)
	}
	if len(rep.Phases) != 2 || !rep.Phases[0].TLS || !rep.Phases[1].TLS || rep.Phases[1].Name != PhaseAuthFail {
		t.Errorf("phases %+v", rep.Phases)
	}
	want := []string{"bang-path", "bang-path-ip", "bang-path-name", "quoted-bang-path"}
	if got := acceptedNames(rep, PhasePlain); !slices.Equal(got, want) {
		t.Errorf("accepted %v, want %v", got, want)
	}
	// Without --tls the server's TLS handshake never becomes a banner.
	_, err = run(t, Options{Addr: s.addr(), Timeout: 500 * time.Millisecond})
	var ue *UntestableError
	if !errors.As(err, &ue) || ue.Reason != ReasonNoBanner {
		t.Errorf("plain client against implicit TLS: %v", err)
	}
}

func TestParentDomain(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example.com": "example.com", "example.com": "example.com", "vm": "vm",
		"[192.0.2.1]": "[192.0.2.1]", "[IPv6:2001:db8::1]": "[IPv6:2001:db8::1]",
	} {
		if got := parentDomain(in); got != want {
			t.Errorf("parentDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBatteryIPv6Server(t *testing.T) {
	forms := Battery(Target{From: DefaultFrom, To: DefaultTo, ServerName: "mx.example", IP: netip.MustParseAddr("2001:db8::25")})
	want := map[string]string{
		"sender-ip-literal": "relay-sender@[IPv6:2001:db8::25]",
		"percent-hack-ip":   "relay-target%relaytest.example@[IPv6:2001:db8::25]",
		"percent-hack-ipv6": "relay-target%relaytest.example@[IPv6:2001:db8::25]",
		"source-route-ip":   "@[IPv6:2001:db8::25]:relay-target@relaytest.example",
	}
	for _, f := range forms {
		w, ok := want[f.Name]
		if !ok {
			continue
		}
		got := f.To
		if f.Name == "sender-ip-literal" {
			got = f.From
		}
		if got != w {
			t.Errorf("%s: %q, want %q", f.Name, got, w)
		}
	}
}

// Cancelling the context (Ctrl-C in the command) stops a run that waits on
// a server, before the banner or in the middle of the battery.
func TestCancelled(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	for name, s := range map[string]*testServer{
		"before banner": newTestServer(t, &testServer{silent: true}),
		"during RCPT": newTestServer(t, &testServer{tls: selfSigned(t), rcpt: func(p string, _ bool) string {
			if strings.Contains(p, "!") {
				<-release
			}
			return "550 5.7.1 no"
		}}),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			rep, err := Run(ctx, Options{Addr: s.addr(), Timeout: time.Minute, Parallel: 4, ErrorsPerConn: 8})
			var ue *UntestableError
			if !errors.As(err, &ue) || ue.Reason != ReasonCancelled || !strings.Contains(rep.ResultLine(), "interrupted") {
				t.Fatalf("after cancel: %v", err)
			}
		})
	}
}

// A banner without a host name: the name comes from the EHLO reply, and
// --server-name overrides both.
func TestServerNameSources(t *testing.T) {
	s := newTestServer(t, &testServer{banner: "220 ESMTP ready"})
	rep, err := run(t, Options{Addr: s.addr(), StartTLS: StartTLSNever})
	if err != nil || rep.ServerName != "mx.test-server.example" {
		t.Fatalf("err %v, server name %q", err, rep.ServerName)
	}
	rep, err = run(t, Options{Addr: s.addr(), StartTLS: StartTLSNever, ServerName: "given.example"})
	if err != nil || rep.ServerName != "given.example" {
		t.Fatalf("err %v, server name %q", err, rep.ServerName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.rcpts, "relay-target%relaytest.example@given.example") {
		t.Errorf("--server-name not used in the forms")
	}
}
