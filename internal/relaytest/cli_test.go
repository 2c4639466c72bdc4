package relaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// TestMain removes the binary built for the CLI tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// relayguardBinary builds ./cmd/relayguard once for the tests that run the
// real command line.
func relayguardBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "relaytest-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "relayguard")
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			gobin = "go"
		}
		out, err := exec.Command(gobin, "build", "-o", binPath, "github.com/relayguard/relayguard/cmd/relayguard").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/relayguard: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func runCLI(t testing.TB, args ...string) cliResult {
	t.Helper()
	bin := relayguardBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("relayguard %v: %v", args, err)
	}
	return cliResult{code, out.String(), errb.String()}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// The command against a deliberately open server: every form reported as
// accepted, the OPEN verdict, exit status 1.
func TestCLIOpenServer(t *testing.T) {
	s := newTestServer(t, &testServer{tls: selfSigned(t), utf8: true})
	r := runCLI(t, "relaytest", s.addr())
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	n := 3 * len(formNames())
	if want := fmt.Sprintf("RESULT: OPEN RELAY — %d/%d tests accepted", n, n); lastLine(r.stdout) != want {
		t.Errorf("last line %q, want %q", lastLine(r.stdout), want)
	}
	for _, ph := range []string{PhasePlain, PhaseStartTLS, PhaseAuthFail} {
		for _, name := range formNames() {
			if !strings.Contains(r.stdout, "ACCEPTED  "+ph+"/"+name+" ") {
				t.Errorf("%s/%s not reported as accepted", ph, name)
			}
		}
	}
}

func TestCLIPartlyOpenJSON(t *testing.T) {
	s := newTestServer(t, &testServer{rcpt: func(p string, _ bool) string {
		if strings.HasPrefix(p, "@") {
			return "250 2.1.5 ok"
		}
		return "554 5.7.1 relay access denied"
	}})
	r := runCLI(t, "relaytest", "--json", s.addr())
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var rep struct {
		Result  string
		Outcome string
		Results []struct {
			ID        string     `json:"id"`
			Verdict   string     `json:"verdict"`
			MailFrom  string     `json:"mail_from"`
			RcptTo    string     `json:"rcpt_to"`
			Exchanges []Exchange `json:"exchanges"`
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, r.stdout)
	}
	var got []string
	for _, res := range rep.Results {
		if res.Verdict == Accepted {
			got = append(got, res.ID)
			if !strings.HasPrefix(res.RcptTo, "@") || res.Exchanges[1].Command != "RCPT TO:<"+res.RcptTo+">" || res.Exchanges[1].Reply.Code != 250 {
				t.Errorf("accepted %s: %+v", res.ID, res)
			}
		}
	}
	want := []string{"plain/source-route-ip", "plain/source-route-name", "plain/source-route-ipv6", "plain/source-route-localhost",
		"authfail/source-route-ip", "authfail/source-route-name", "authfail/source-route-ipv6", "authfail/source-route-localhost"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("accepted %v, want %v", got, want)
	}
	if rep.Outcome != "open" || !strings.HasPrefix(rep.Result, "RESULT: OPEN RELAY — 8/") {
		t.Errorf("outcome %q result %q", rep.Outcome, rep.Result)
	}
}

func TestCLIClosedAndUntestable(t *testing.T) {
	s := newTestServer(t, &testServer{rcpt: func(string, bool) string { return "550 5.7.1 relay access denied" }})
	r := runCLI(t, "relaytest", s.addr())
	if r.code != 0 || !strings.HasPrefix(lastLine(r.stdout), "RESULT: no relays accepted (0/") {
		t.Errorf("closed: exit %d, %q", r.code, lastLine(r.stdout))
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	r = runCLI(t, "relaytest", addr)
	if r.code != 2 || !strings.Contains(r.stderr, "connection refused") || !strings.Contains(lastLine(r.stdout), "could not test — connection refused") {
		t.Errorf("refused: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	silent := newTestServer(t, &testServer{silent: true})
	r = runCLI(t, "relaytest", "--timeout", "300ms", silent.addr())
	if r.code != 2 || !strings.Contains(r.stderr, "no banner") {
		t.Errorf("no banner: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	temp := newTestServer(t, &testServer{rcpt: func(string, bool) string { return "450 4.2.0 mailbox busy" }})
	r = runCLI(t, "relaytest", temp.addr())
	if r.code != 2 || !strings.Contains(r.stderr, "all tests tempfailed") {
		t.Errorf("tempfailed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestCLIDataGuard(t *testing.T) {
	// 192.0.2.1 (TEST-NET-1, RFC 5737) is never contacted: the refusal
	// comes before any connection.
	r := runCLI(t, "relaytest", "--data", "192.0.2.1")
	if r.code != 2 || !strings.Contains(r.stderr, "not a loopback address") || !strings.Contains(r.stderr, "--i-own-this-host") {
		t.Errorf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s := newTestServer(t, &testServer{})
	r = runCLI(t, "relaytest", "--data", "--starttls", "never", s.addr())
	if r.code != 1 {
		t.Errorf("--data on loopback: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s.mu.Lock()
	msgs := len(s.messages)
	s.mu.Unlock()
	if msgs != 2*len(formNames()) {
		t.Errorf("%d messages, want %d", msgs, 2*len(formNames()))
	}
	for _, args := range [][]string{
		{"relaytest", "--to", "nobody", s.addr()},
		{"relaytest", "--from", "a b@c.example", s.addr()},
		{"relaytest", "--starttls", "sometimes", s.addr()},
		{"relaytest", "--ip", "not-an-ip", s.addr()},
		{"relaytest", "--auth", "justuser", s.addr()},
	} {
		r := runCLI(t, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--"+strings.TrimPrefix(args[1], "--")) {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

func TestCLIVerboseTranscript(t *testing.T) {
	s := newTestServer(t, &testServer{})
	r := runCLI(t, "relaytest", "-v", "--starttls", "never", "--server-name", "forced.example", "--ip", "192.0.2.9", s.addr())
	for _, want := range []string{"> EHLO relaytest.example", "> RCPT TO:<relay-target%relaytest.example@forced.example>",
		"> RCPT TO:<@[192.0.2.9]:relay-target@relaytest.example>", "< 250 2.1.5 ok", "> QUIT"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
}
