package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/relayguard/relayguard/internal/maillog"
)

// journalEntryJSON writes one entry the way `journalctl -o json` does
// (systemd's JSON export format, systemd.io/JOURNAL_EXPORT_FORMATS): one
// object per line, every value a string, except a field that is not valid
// UTF-8, which is an array of its byte values. The field set is that of a
// syslog-transport entry of a Debian 12 journal.
func journalEntryJSON(t time.Time, n int, host, ident string, pid int, msg string) []byte {
	var m any = msg
	if !utf8.ValidString(msg) {
		b := make([]int, len(msg))
		for i := range len(msg) {
			b[i] = int(msg[i])
		}
		m = b
	}
	e := map[string]any{
		"__CURSOR":                   fmt.Sprintf("s=6b2d0f8c1e2a4d7e9f00112233445566;i=%x;b=0c4b1f5e7a9d4c3b8e2f00aa11bb22cc;m=%x;t=%x;x=%x", 0x1000+n, 1e6+n, t.UnixMicro(), n),
		"__REALTIME_TIMESTAMP":       strconv.FormatInt(t.UnixMicro(), 10),
		"__MONOTONIC_TIMESTAMP":      strconv.Itoa(1000000 + n),
		"_BOOT_ID":                   "0c4b1f5e7a9d4c3b8e2f00aa11bb22cc",
		"_MACHINE_ID":                "5f1e2d3c4b5a69788796a5b4c3d2e1f0",
		"_HOSTNAME":                  host,
		"_TRANSPORT":                 "syslog",
		"PRIORITY":                   "6",
		"SYSLOG_FACILITY":            "2",
		"SYSLOG_IDENTIFIER":          ident,
		"SYSLOG_PID":                 strconv.Itoa(pid),
		"SYSLOG_TIMESTAMP":           t.Format(time.Stamp) + " ",
		"_PID":                       strconv.Itoa(pid),
		"_UID":                       "0",
		"_GID":                       "0",
		"_COMM":                      ident[strings.LastIndexByte(ident, '/')+1:],
		"_SYSTEMD_UNIT":              "postfix@-.service",
		"_SYSTEMD_SLICE":             "system-postfix.slice",
		"_SYSTEMD_CGROUP":            "/system.slice/system-postfix.slice/postfix@-.service",
		"_SOURCE_REALTIME_TIMESTAMP": strconv.FormatInt(t.UnixMicro(), 10),
		"MESSAGE":                    m,
	}
	b, _ := json.Marshal(e)
	return append(b, '\n')
}

// TestJournalExportFileReadLikeSyslog: a saved `journalctl -o json` file
// (also gzip-compressed) given to `relayguard report FILE` and `relayguard
// watch --replay FILE` gives the same report and the same bans as the same
// lines written as a plain syslog file: Postfix SASL failures, Dovecot auth
// failures, relayguard serve's own records, and a message that is not UTF-8
// (a MESSAGE byte array).
func TestJournalExportFileReadLikeSyslog(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)

	// serve's records, written by the one writer of that vocabulary.
	var own bytes.Buffer
	ml := maillog.New(slog.New(slog.NewTextHandler(&own, nil)))
	ctx := context.Background()
	for i := range 3 {
		ml.AuthFailed(ctx, maillog.Conn{CID: fmt.Sprintf("c%d", i), Client: netip.MustParseAddr("192.0.2.77"), Listener: "submission"}, "PLAIN", "alice", "bad password")
	}
	c := maillog.Conn{CID: "c9", Client: netip.MustParseAddr("192.0.2.10"), Listener: "submission"}
	ml.Accepted(ctx, c, maillog.Message{ID: "Q1", User: "bob", From: "bob@relay.test", Nrcpt: 1, Size: 1234})
	ml.Delivered(ctx, maillog.Delivery{ID: "Q1", Rcpt: "carol@example.org", Attempt: 1, Reply: "250 ok", Relay: "mx.example.org"})

	type entry struct {
		ident string
		pid   int
		msg   string
	}
	var es []entry
	for i, a := range []string{"203.0.113.4", "203.0.113.20", "203.0.113.36", "203.0.113.4"} {
		es = append(es, entry{"postfix/submission/smtpd", 300 + i, fmt.Sprintf("warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", a)})
	}
	for range 3 {
		es = append(es, entry{"dovecot", 0, "imap-login: Disconnected (auth failed, 2 attempts in 9 secs): user=<a>, method=PLAIN, rip=198.51.100.5, lip=192.0.2.1, session=<S1>"})
	}
	es = append(es,
		entry{"postfix/smtpd", 400, "connect from client.example[192.0.2.50]"},
		entry{"postfix/smtpd", 400, "4AbCd1: client=client.example[192.0.2.50]"},
		entry{"postfix/cleanup", 401, "4AbCd1: message-id=<m1@example>"},
		entry{"postfix/qmgr", 402, "4AbCd1: from=<sender@example>, size=2048, nrcpt=1 (queue active)"},
		// Not UTF-8 (a Latin-1 é): journalctl writes MESSAGE as a byte array.
		entry{"postfix/smtp", 403, "4AbCd1: to=<r\xe9@example.org>, relay=mx.example.org[192.0.2.10]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)"},
		entry{"postfix/qmgr", 402, "4AbCd1: removed"},
	)
	for _, l := range strings.Split(strings.TrimSpace(own.String()), "\n") {
		es = append(es, entry{"relayguard", 500, l})
	}

	var plain, journal bytes.Buffer
	for i, e := range es {
		at := base.Add(time.Duration(i) * time.Second)
		pid := ""
		if e.pid != 0 {
			pid = fmt.Sprintf("[%d]", e.pid)
		}
		fmt.Fprintf(&plain, "%s mx1 %s%s: %s\n", at.Format(time.Stamp), e.ident, pid, e.msg)
		journal.Write(journalEntryJSON(at.Add(123456*time.Microsecond), i, "mx1", e.ident, e.pid, e.msg))
	}
	if !bytes.Contains(journal.Bytes(), []byte(`"MESSAGE":[52,65,98`)) {
		t.Fatalf("no byte-array MESSAGE in the journal file:\n%s", journal.String())
	}
	plainF := filepath.Join(dir, "mail.log")
	journalF := filepath.Join(dir, "journal.json")
	gzF := filepath.Join(dir, "journal.json.1") // compressed in place: read by content
	os.WriteFile(plainF, plain.Bytes(), 0o644)
	os.WriteFile(journalF, journal.Bytes(), 0o644)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(journal.Bytes())
	zw.Close()
	os.WriteFile(gzF, gz.Bytes(), 0o644)
	conf := filepath.Join(dir, "relayguard.toml")
	os.WriteFile(conf, []byte("[guard]\nmaxretry = 3\nsubnet = []\n[firewall]\nbackend = \"none\"\n"), 0o644)

	report := func(f string) string {
		out, errOut, code := runRG(t, bin, "report", f)
		if code != 0 {
			t.Fatalf("report %s: %d %s", f, code, errOut)
		}
		return out
	}
	replay := func(f string) string {
		out, errOut, code := runRG(t, bin, "--config", conf, "--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "watch", "--replay", f)
		if code != 0 {
			t.Fatalf("watch --replay %s: %d %s", f, code, errOut)
		}
		return out
	}
	wantRep, wantBans := report(plainF), replay(plainF)
	// The plain file itself reads as expected: what the comparison rests on.
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s+2\s+received$`),
		regexp.MustCompile(`(?m)^\s+2\s+delivered$`),
		regexp.MustCompile(`203\.0\.113\.4`),
		regexp.MustCompile(`198\.51\.100\.5`),
		regexp.MustCompile(`192\.0\.2\.77`),
	} {
		if !want.MatchString(wantRep) {
			t.Errorf("report of the plain file lacks %s:\n%s", want, wantRep)
		}
	}
	for _, p := range []string{"198.51.100.5/32", "192.0.2.77/32"} {
		if !strings.Contains(wantBans, "would ban "+p) {
			t.Errorf("watch --replay of the plain file did not ban %s:\n%s", p, wantBans)
		}
	}
	for _, f := range []string{journalF, gzF} {
		if got := report(f); got != wantRep {
			t.Errorf("report %s differs from the plain file's:\n%s\n--- plain:\n%s", filepath.Base(f), got, wantRep)
		}
		if got := replay(f); got != wantBans {
			t.Errorf("watch --replay %s differs from the plain file's:\n%s\n--- plain:\n%s", filepath.Base(f), got, wantBans)
		}
	}

	// A line that is not JSON in a journal export: an error naming the
	// file and the line, not a silently short report.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, append(append(journalEntryJSON(base, 0, "mx1", "postfix/smtpd", 1, "x"), "garbage\n"...), journalEntryJSON(base, 1, "mx1", "postfix/smtpd", 1, "y")...), 0o644)
	for _, args := range [][]string{{"report", bad}, {"--config", conf, "watch", "--replay", bad}} {
		_, errOut, code := runRG(t, bin, args...)
		if code == 0 || !strings.Contains(errOut, "bad.json") || !strings.Contains(errOut, "line 2") {
			t.Errorf("%v: code %d, stderr %q", args, code, errOut)
		}
	}
}
