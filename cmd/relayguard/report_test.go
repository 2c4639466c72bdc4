package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/queue"
)

func runReportCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// A small log dated today, so that -d today selects it.
func reportLog(day time.Time) string {
	d := day.Format("Jan _2")
	return strings.Join([]string{
		d + " 10:00:00 mx1 postfix/smtpd[1]: A1: client=mail.example.com[192.0.2.1]",
		d + " 10:00:01 mx1 postfix/qmgr[2]: A1: from=<a@example.com>, size=100, nrcpt=1 (queue active)",
		d + " 10:00:02 mx1 postfix/lmtp[3]: A1: to=<b@local.test>, relay=local.test[private/lmtp], delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)",
		d + " 10:00:03 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <x@victim.example>: Relay access denied; from=<s@spam.example> to=<x@victim.example> proto=ESMTP helo=<x>",
		d + " 10:00:04 mx1 relayguard[9]: time=x level=INFO msg=\"auth failed\" client=203.0.113.9 mechanism=PLAIN user=root",
	}, "\n") + "\n"
}

func TestReportCLI(t *testing.T) {
	dir := t.TempDir()
	today := time.Now()
	logf := filepath.Join(dir, "mail.log")
	os.WriteFile(logf, []byte(reportLog(today)), 0o644)
	old := filepath.Join(dir, "mail.log.1")
	os.WriteFile(old, []byte(reportLog(today.AddDate(0, 0, -1))), 0o644)

	// Text from stdin, pflogsumm layout.
	out, errs, code := runReportCLI(t, reportLog(today), "report")
	if code != 0 || !strings.Contains(out, "      1   received\n") || !strings.Contains(out, "Relay attempts by target domain") {
		t.Fatalf("stdin text report: code %d, stderr %q\n%s", code, errs, out)
	}

	// JSON over two files, restricted to today with -d, and -h/-u as limits.
	out, errs, code = runReportCLI(t, "", "report", "--format", "json", "-d", "today", "-h", "1", "-u", "1", logf, old)
	if code != 0 {
		t.Fatalf("json: code %d: %s", code, errs)
	}
	var js struct {
		Totals struct{ Received, Rejected int } `json:"grand_totals"`
		Abuse  struct {
			AuthFailures  int `json:"auth_failures"`
			RelayAttempts int `json:"relay_attempts"`
		} `json:"abuse"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if js.Totals.Received != 1 || js.Totals.Rejected != 1 || js.Abuse.AuthFailures != 1 || js.Abuse.RelayAttempts != 1 {
		t.Fatalf("json with -d today: %+v", js)
	}
	out, _, _ = runReportCLI(t, "", "report", "--format", "json", logf, old)
	json.Unmarshal([]byte(out), &js)
	if js.Totals.Received != 2 {
		t.Fatalf("both days: received %d, want 2", js.Totals.Received)
	}

	// HTML to a file; pflogsumm's underscore spelling is accepted.
	htmlf := filepath.Join(dir, "r.html")
	if _, errs, code := runReportCLI(t, "", "report", "--format=html", "-o", htmlf, "--problems_first", logf); code != 0 {
		t.Fatalf("html: %s", errs)
	}
	if b, _ := os.ReadFile(htmlf); !bytes.Contains(b, []byte("<svg")) {
		t.Fatal("html report without charts")
	}

	// Bad input is named in the error.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"report", "-d", "2026-13-01", logf}, "2026-13-01"},
		{[]string{"report", "--format", "pdf", logf}, "pdf"},
		{[]string{"report", filepath.Join(dir, "nope.log")}, "nope.log"},
		{[]string{"report", "-h", "-5", logf}, "-5"},
	} {
		_, errs, code := runReportCLI(t, "", tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: code %d, stderr %q does not name %q", tc.args, code, errs, tc.want)
		}
	}
}

// --mail-to sends through [report] smtp_server: a sink on loopback.
func TestReportMailTo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		r := bufio.NewReader(c)
		say := func(s string) { io.WriteString(c, s+"\r\n") }
		say("220 sink")
		var rec strings.Builder
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			u := strings.ToUpper(l)
			switch {
			case strings.HasPrefix(u, "EHLO"):
				say("250 sink")
			case strings.HasPrefix(u, "DATA"):
				say("354 go")
				for {
					d, err := r.ReadString('\n')
					if err != nil || d == ".\r\n" {
						break
					}
					rec.WriteString(d)
				}
				got <- rec.String()
				say("250 ok")
			case strings.HasPrefix(u, "QUIT"):
				say("221 bye")
				return
			default:
				rec.WriteString(l)
				say("250 ok")
			}
		}
	}()
	dir := t.TempDir()
	conf := filepath.Join(dir, "rg.toml")
	// A display name in mail_from and --mail-to belongs in the header only:
	// the envelope takes the bare address (RFC 5321 4.1.2).
	os.WriteFile(conf, []byte("[report]\nsmtp_server = \""+ln.Addr().String()+"\"\nmail_from = \"Mail Reports <rg@mx1.test>\"\n"), 0o644)
	logf := filepath.Join(dir, "mail.log")
	os.WriteFile(logf, []byte(reportLog(time.Now())), 0o644)

	// A bad address is refused before anything is read or sent.
	for _, bad := range []string{"admin@@mx1.test", "admin@mx1.test, <oops", " , "} {
		out, errs, code := runReportCLI(t, "", "--config", conf, "--data-dir", dir, "report", "--mail-to", bad, filepath.Join(dir, "no-such.log"))
		if code == 0 || !strings.Contains(errs, "--mail-to") || strings.Contains(errs, "no-such.log") {
			t.Errorf("--mail-to %q: code %d, want an error naming the address before reading logs: %s %s", bad, code, out, errs)
		}
	}

	out, errs, code := runReportCLI(t, "", "--config", conf, "--data-dir", dir, "report", "--mail-to", "Admin <admin@mx1.test>, second@mx1.test", "--subject", "daily", logf)
	if code != 0 {
		t.Fatalf("code %d: %s %s", code, out, errs)
	}
	if out != "" {
		t.Errorf("report printed while mailing: %q", out)
	}
	select {
	case m := <-got:
		for _, want := range []string{"MAIL FROM:<rg@mx1.test>\r\n", "RCPT TO:<admin@mx1.test>\r\n", "RCPT TO:<second@mx1.test>\r\n",
			"From: \"Mail Reports\" <rg@mx1.test>", "To: \"Admin\" <admin@mx1.test>, <second@mx1.test>",
			"Subject: daily", "multipart/alternative", "text/html", "Grand Totals"} {
			if !strings.Contains(m, want) {
				t.Errorf("mail lacks %q:\n%.2000s", want, m)
			}
		}
	case <-time.After(time.Minute):
		t.Fatal("no mail")
	}
}

// --mailq appends relayguard's queue, listed as by `relayguard queue list`.
func TestReportMailq(t *testing.T) {
	dir := t.TempDir()
	logf := filepath.Join(dir, "mail.log")
	os.WriteFile(logf, []byte(reportLog(time.Now())), 0o644)
	// No spool yet: the section says why, the report still prints.
	out, errs, code := runReportCLI(t, "", "--data-dir", dir, "report", "--mailq", logf)
	if code != 0 || !strings.Contains(out, "Current Mail Queue\n------------------\n(") {
		t.Fatalf("mailq without spool: code %d %s\n%s", code, errs, out)
	}
	sp, err := queue.OpenSpool(filepath.Join(dir, "spool"), 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	id, err := sp.Put(context.Background(), &queue.Envelope{ID: queue.NewID(), From: "a@example.com", Received: time.Now(),
		Recipients: []queue.Recipient{{Addr: "b@example.net", Status: queue.StatusQueued}}}, strings.NewReader("Subject: x\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	sp.Close()
	out, errs, code = runReportCLI(t, "", "--data-dir", dir, "report", "--mailq", logf)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "a@example.com") {
		t.Fatalf("mailq: code %d %s\n%s", code, errs, out)
	}
	if strings.Index(out, "Current Mail Queue") > strings.Index(out, "Abuse Summary") {
		t.Error("queue listed after the abuse view; pflogsumm prints it at the end of its sections")
	}
}

// --journal reads through journalctl; --journal-arg passes a journal file
// made by systemd-journal-remote.
func TestReportJournal(t *testing.T) {
	remote := "/lib/systemd/systemd-journal-remote"
	for _, bin := range []string{remote, "journalctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed", bin)
			}
			t.Skipf("%s not installed", bin)
		}
	}
	y, m, d := time.Now().Date()
	now := time.Date(y, m, d, 12, 0, 0, 0, time.Local) // well inside "today"
	var export strings.Builder
	for i, e := range []struct{ id, msg string }{
		{"postfix/smtpd", "J1: client=mail.example.com[192.0.2.1]"},
		{"postfix/qmgr", "J1: from=<a@example.com>, size=1234, nrcpt=1 (queue active)"},
		{"relayguard", `time=x level=INFO msg="auth failed" client=203.0.113.9 user=root`},
	} {
		fmt.Fprintf(&export, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=mx1\nSYSLOG_IDENTIFIER=%s\n_PID=7\nMESSAGE=%s\n\n",
			now.Add(time.Duration(i)*time.Second).UnixMicro(), i+1, e.id, e.msg)
	}
	jf := filepath.Join(t.TempDir(), "t.journal")
	cmd := exec.Command(remote, "-o", jf, "-")
	cmd.Stdin = strings.NewReader(export.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
	out, errs, code := runReportCLI(t, "", "report", "--journal", "--journal-arg=--file="+jf, "--format", "json", "-d", "today")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errs)
	}
	var js struct {
		Totals struct {
			Received      int `json:"received"`
			BytesReceived int `json:"bytes_received"`
		} `json:"grand_totals"`
		Abuse struct {
			AuthFailures int `json:"auth_failures"`
		} `json:"abuse"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatal(err)
	}
	if js.Totals.Received != 1 || js.Totals.BytesReceived != 1234 || js.Abuse.AuthFailures != 1 {
		t.Fatalf("journal report %+v", js)
	}
}
