package maillog

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// distLog writes one record of every kind a filter may count, from its
// own client address, in slog's text and JSON formats, bare and behind a
// syslog header; it returns the lines and the address of each kind.
func distLog(t *testing.T) (lines []string, addrs map[Kind][]string) {
	t.Helper()
	addrs = map[Kind][]string{}
	n := 0
	for _, format := range []string{"text", "json"} {
		for _, syslog := range []bool{false, true} {
			var buf bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&buf, nil)
			if format == "json" {
				h = slog.NewJSONHandler(&buf, nil)
			}
			m := New(slog.New(h))
			ctx := context.Background()
			next := func(k Kind) Conn {
				n++
				a := netip.AddrFrom4([4]byte{192, 0, 2, byte(n)})
				if n%3 == 0 {
					a = netip.MustParseAddr("2001:db8::" + string(rune('a'+n%6)))
				}
				addrs[k] = append(addrs[k], a.String())
				return Conn{CID: "c", Client: a, Listener: "submission"}
			}
			m.AuthFailed(ctx, next(KindAuthFailed), "PLAIN", `odd "user" x=y`, "invalid credentials")
			m.AuthOK(ctx, next(KindAuthOK), "PLAIN", "bob")
			m.RelayDenied(ctx, next(KindRelayDenied), Refusal{Rule: "reject_unauth_destination", Code: "554 5.7.1", Rcpt: "a@b.example", Text: "Relay access denied"})
			m.NonSMTP(ctx, next(KindNonSMTP), "GET / HTTP/1.1")
			m.LostConnection(ctx, next(KindLostConnection), "AUTH")
			m.LostConnection(ctx, next(KindDisconnected), "DATA") // not counted: filed under another kind
			m.Rejected(ctx, next(KindRejected), Refusal{Rule: "reject_rbl_client", Code: "554 5.7.1", Text: "blocked using x"})
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if syslog {
					l = time.Now().Format(time.Stamp) + " mx1 relayguard[42]: " + l
				}
				lines = append(lines, l)
			}
		}
	}
	return lines, addrs
}

// The shipped fail2ban filter (dist/fail2ban/filter.d/relayguard.conf),
// run by the real fail2ban-regex on records written by the writers: normal
// mode matches exactly the failed authentications, aggressive mode also
// relay attempts, non-SMTP commands and connections lost during AUTH.
func TestFail2banFilterMatchesTheWriters(t *testing.T) {
	if _, err := exec.LookPath("fail2ban-regex"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: fail2ban-regex not installed (package fail2ban)")
		}
		t.Skip("fail2ban-regex not installed")
	}
	lines, addrs := distLog(t)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "relayguard.log")
	os.WriteFile(logFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	fd := filepath.Join(dir, "filter.d")
	os.MkdirAll(fd, 0o755)
	for src, dst := range map[string]string{"/etc/fail2ban/filter.d/common.conf": "common.conf", "../../dist/fail2ban/filter.d/relayguard.conf": "relayguard.conf"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(fd, dst), b, 0o644)
	}
	for mode, kinds := range map[string][]Kind{
		"normal":     {KindAuthFailed},
		"aggressive": {KindAuthFailed, KindRelayDenied, KindNonSMTP, KindLostConnection},
	} {
		out, err := exec.Command("fail2ban-regex", "-o", "ip", logFile, filepath.Join(fd, "relayguard.conf")+"[mode="+mode+"]").Output()
		if err != nil {
			t.Fatalf("%s: fail2ban-regex: %v\n%s", mode, err, out)
		}
		got := strings.Fields(string(out))
		var want []string
		for _, k := range kinds {
			want = append(want, addrs[k]...)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s mode matched %v, want %v\nlog:\n%s", mode, got, want, strings.Join(lines, "\n"))
		}
	}
	// Dates: every record's own time is found (a line without one would be
	// dropped by fail2ban itself, though fail2ban-regex still matches it).
	out, _ := exec.Command("fail2ban-regex", logFile, filepath.Join(fd, "relayguard.conf")).CombinedOutput()
	if m := regexp.MustCompile(`(?s)Date template hits:(.*?)\n\n`).FindSubmatch(out); m != nil {
		total := 0
		for _, h := range regexp.MustCompile(`\[(\d+)\]`).FindAllSubmatch(m[1], -1) {
			var v int
			for _, c := range h[1] {
				v = v*10 + int(c-'0')
			}
			total += v
		}
		if total != len(lines) {
			t.Errorf("dates found on %d of %d lines:\n%s", total, len(lines), m[1])
		}
	} else {
		t.Errorf("no date template hits in:\n%s", out)
	}
}

// The shipped CrowdSec parser's patterns (plain RE2, the engine's regular
// expression flavour) are compiled as they stand in the YAML and run on
// the message part of records written by the writers. This tests the
// patterns, not a running CrowdSec (not packaged for this test's machine).
func TestCrowdSecParserPatternsMatchTheWriters(t *testing.T) {
	y, err := os.ReadFile("../../dist/crowdsec/parsers/s01-parse/relayguard-logs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pats []*regexp.Regexp
	for _, l := range strings.Split(string(y), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "pattern: '"); ok {
			p = strings.ReplaceAll(strings.TrimSuffix(p, "'"), "''", "'") // YAML single-quoted
			pats = append(pats, regexp.MustCompile(p))
		}
	}
	if len(pats) != 2 {
		t.Fatalf("want 2 patterns (text, JSON), found %d", len(pats))
	}
	lines, addrs := distLog(t)
	var got []string
	for _, l := range lines {
		if i := strings.Index(l, "relayguard[42]: "); i >= 0 {
			l = l[i+len("relayguard[42]: "):] // the syslog parser's message
		}
		for _, p := range pats {
			if m := p.FindStringSubmatch(l); m != nil {
				got = append(got, m[p.SubexpIndex("client")])
				if _, err := time.Parse(time.RFC3339Nano, m[p.SubexpIndex("time")]); err != nil {
					t.Errorf("time %q: %v", m[p.SubexpIndex("time")], err)
				}
				break
			}
		}
	}
	want := slices.Concat(addrs[KindAuthFailed], addrs[KindRelayDenied], addrs[KindNonSMTP])
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("CrowdSec patterns matched %v, want %v", got, want)
	}
}
