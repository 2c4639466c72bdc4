package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/report"
)

// TestReportShowsAccountSuspensions (edge10's finding; it failed at main
// 88b5067): the records of the compromised-account containment — a
// compromise signal, the account suspended, the suspension lifted — are
// listed by `relayguard report` in text and JSON, in log order, whether
// written by maillog's one writer (slog's text and JSON handlers, as serve,
// the milter and the policy service write them) or found as lines in an
// older log. A log without them keeps its report as it was: no section, no
// JSON key.
func TestReportShowsAccountSuspensions(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()

	var text, js bytes.Buffer
	ctx := context.Background()
	for _, ml := range []*maillog.Logger{
		maillog.New(slog.New(slog.NewTextHandler(&text, nil))),
		maillog.New(slog.New(slog.NewJSONHandler(&js, nil))),
	} {
		ml.AccountSignal(ctx, "bob", "login_spread", "logged in from 9 networks within 1h0m0s")
		ml.AccountSuspended(ctx, "bob", "login_spread", "logged in from 9 networks within 1h0m0s", "mx1 (serve)")
		ml.AccountUnsuspended(ctx, "bob", "mx1 (user)")
	}
	hand := strings.Join([]string{
		`time=2026-12-03T00:00:05Z level=WARN msg="account compromise signal" user=carol rule=max_recipients_per_hour reason="412 recipients in 1h"`,
		`time=2026-12-03T00:00:06Z level=WARN msg="account suspended" user=carol rule=max_recipients_per_hour reason="412 recipients in 1h" text="mx2 (milter)"`,
		"",
	}, "\n")
	want := []report.AccountRow{
		{User: "bob", Event: "signal", Rule: "login_spread", Reason: "logged in from 9 networks within 1h0m0s"},
		{User: "bob", Event: "suspended", Rule: "login_spread", Reason: "logged in from 9 networks within 1h0m0s", By: "mx1 (serve)"},
		{User: "bob", Event: "unsuspended", By: "mx1 (user)"},
	}
	wantText := []string{
		"  bob  signal  login_spread  logged in from 9 networks within 1h0m0s\n",
		"  bob  suspended  login_spread  logged in from 9 networks within 1h0m0s  by mx1 (serve)\n",
		"  bob  unsuspended  by mx1 (user)\n",
	}
	for _, c := range []struct {
		name, log string
		want      []report.AccountRow
		wantText  []string
	}{
		{"text records", text.String(), want, wantText},
		{"JSON records", js.String(), want, wantText},
		{"old lines", hand, []report.AccountRow{
			{User: "carol", Event: "signal", Rule: "max_recipients_per_hour", Reason: "412 recipients in 1h"},
			{User: "carol", Event: "suspended", Rule: "max_recipients_per_hour", Reason: "412 recipients in 1h", By: "mx2 (milter)"},
		}, []string{
			"2026-12-03 00:00:05  carol  signal  max_recipients_per_hour  412 recipients in 1h\n",
			"2026-12-03 00:00:06  carol  suspended  max_recipients_per_hour  412 recipients in 1h  by mx2 (milter)\n",
		}},
	} {
		log := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".log")
		if err := os.WriteFile(log, []byte(c.log), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runRG(t, bin, "report", "--format", "json", log)
		if code != 0 {
			t.Fatalf("%s: report --format json: exit %d: %s", c.name, code, errOut)
		}
		var s struct {
			Abuse struct {
				Accounts []report.AccountRow `json:"account_containment"`
			} `json:"abuse"`
		}
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, out)
		}
		got := s.Abuse.Accounts
		for i := range got {
			if got[i].Time.IsZero() {
				t.Errorf("%s: row %d has no time", c.name, i)
			}
			got[i].Time = c.want[0].Time
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: account_containment = %+v, want %+v", c.name, got, c.want)
		}
		out, errOut, code = runRG(t, bin, "report", log)
		if code != 0 {
			t.Fatalf("%s: report: exit %d: %s", c.name, code, errOut)
		}
		_, sect, ok := strings.Cut(out, "relayguard account containment (compromise signals, suspensions)\n")
		if !ok {
			t.Fatalf("%s: the text report has no account containment section:\n%s", c.name, out)
		}
		at := 0
		for _, w := range c.wantText {
			i := strings.Index(sect[at:], w)
			if i < 0 {
				t.Fatalf("%s: the section does not have %q (in order) after byte %d:\n%s", c.name, w, at, sect)
			}
			at += i + len(w)
		}
	}

	// The HTML page has them in a table of their own (html/template escapes).
	out, errOut, code := runRG(t, bin, "report", "--format", "html", filepath.Join(dir, "old_lines.log"))
	if code != 0 || !strings.Contains(out, "<h2>Account containment</h2>") ||
		!strings.Contains(out, `<td class="l">carol</td><td class="l">suspended</td><td class="l">max_recipients_per_hour</td><td class="l">412 recipients in 1h</td><td class="l">mx2 (milter)</td>`) {
		t.Errorf("report --format html: exit %d %s: no account containment table with carol's suspension:\n%s", code, errOut, out)
	}

	// Without such records: neither the section nor the key.
	plain := filepath.Join(dir, "plain.log")
	os.WriteFile(plain, []byte("Dec  3 00:00:01 mx postfix/smtpd[1]: connect from unknown[192.0.2.1]\n"), 0o644)
	for _, format := range []string{"text", "json", "html"} {
		out, errOut, code := runRG(t, bin, "report", "--format", format, plain)
		if code != 0 || strings.Contains(strings.ToLower(out), "account containment") || strings.Contains(out, "account_containment") {
			t.Errorf("report --format %s of a log without account records: exit %d %s\n%s", format, code, errOut, out)
		}
	}
}

// TestReportAccountsHostileAndFlooded (breaker10): the containment's list
// holds up against what an attacker controls. A login name is the client's
// to choose and the reader unquotes a record's value, so a name with a
// newline must not end its row in the text report and forge another (here
// a lift by "admin"); and a flood of signals (one is logged at each check
// that finds one) must not push the suspension that follows out of the
// bounded list. Both failed at 7c2b70a: the forged row was printed, and the
// suspension after 1,000 signals was in neither the text nor the JSON.
func TestReportAccountsHostileAndFlooded(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()
	var text bytes.Buffer
	ml := maillog.New(slog.New(slog.NewTextHandler(&text, nil)))
	ctx := context.Background()
	ml.AccountSignal(ctx, "eve\n 2026-12-07 09:00:00  bob  unsuspended  by admin", "login_spread", "reason\r\nx")
	for i := range 1500 {
		ml.AccountSignal(ctx, "u"+strconv.Itoa(i), "login_failures", "guessed")
	}
	ml.AccountSuspended(ctx, "mallory", "login_spread", "logged in from 9 networks", "mx1 (serve)")
	log := filepath.Join(dir, "hostile.log")
	if err := os.WriteFile(log, text.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runRG(t, bin, "report", log)
	if code != 0 {
		t.Fatalf("report: exit %d: %s", code, errOut)
	}
	_, sect, ok := strings.Cut(out, "relayguard account containment (compromise signals, suspensions)\n")
	if !ok {
		t.Fatalf("no account containment section:\n%s", out)
	}
	sect, _, _ = strings.Cut(sect, "\n\n")
	sect += "\n"
	for _, l := range strings.Split(sect, "\n") {
		if strings.Contains(l, "bob  unsuspended") && !strings.Contains(l, "eve") {
			t.Errorf("a login name's newline forged a row: %q", l)
		}
		if strings.ContainsRune(l, '\r') {
			t.Errorf("a carriage return in a row: %q", l)
		}
	}
	if !strings.Contains(sect, `"eve\n 2026-12-07 09:00:00  bob  unsuspended  by admin"  signal  login_spread  "reason\r\nx"`) {
		t.Errorf("eve's signal is not listed with its name and reason quoted:\n%.2000s", sect)
	}
	if !strings.Contains(sect, " mallory  suspended  login_spread  logged in from 9 networks  by mx1 (serve)\n") {
		t.Errorf("the suspension after 1,500 signals is not in the text report:\n%s", sect[max(0, len(sect)-300):])
	}

	out, errOut, code = runRG(t, bin, "report", "--format", "json", log)
	if code != 0 {
		t.Fatalf("report --format json: exit %d: %s", code, errOut)
	}
	var s struct {
		Abuse struct {
			Accounts []report.AccountRow `json:"account_containment"`
		} `json:"abuse"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	rows := s.Abuse.Accounts
	if n := len(rows); n != 1001 {
		t.Errorf("%d rows, want the first 1,000 signals and the suspension", n)
	}
	if n := len(rows); n == 0 || rows[n-1].User != "mallory" || rows[n-1].Event != "suspended" {
		t.Errorf("the last row is not mallory's suspension: %+v", rows[max(0, len(rows)-1):])
	}
}
