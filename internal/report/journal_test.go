package report

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestJournalctl writes the fixture into a real journal file (with
// systemd-journal-remote, from the journal export format) and reads it back
// through journalctl -o json: the totals must equal those of the log file.
func TestJournalctl(t *testing.T) {
	remote := requireBinary(t, "/lib/systemd/systemd-journal-remote")
	requireBinary(t, "journalctl")
	f, err := os.Open("testdata/fixture.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var export strings.Builder
	p := fixtureParser()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		l, ok := p.Parse(sc.Text())
		if !ok || l.Time.IsZero() {
			continue
		}
		n++
		fmt.Fprintf(&export, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=%s\nSYSLOG_IDENTIFIER=%s\n",
			l.Time.UnixMicro(), n, l.Host, l.Program)
		if l.PID > 0 {
			fmt.Fprintf(&export, "_PID=%d\n", l.PID)
		}
		fmt.Fprintf(&export, "MESSAGE=%s\n\n", l.Message)
	}
	jf := filepath.Join(t.TempDir(), "fixture.journal")
	cmd := exec.Command(remote, "-o", jf, "-")
	cmd.Stdin = strings.NewReader(export.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadJournal(context.Background(), "", []string{"--file=" + jf}, time.UTC); err != nil {
		t.Fatal(err)
	}
	got := a.Summary()
	want := analyzeFixture(t, DefaultOptions())
	eq(t, "journal totals", got.Totals, want.Totals)
	eq(t, "journal auth failures", got.Abuse.AuthFailures, want.Abuse.AuthFailures)
	eq(t, "journal bans", got.Abuse.BanCount, want.Abuse.BanCount)

	// A journalctl failure is reported with its message.
	err = NewAnalyzer(DefaultOptions()).ReadJournal(context.Background(), "", []string{"--file=" + filepath.Join(t.TempDir(), "none.journal"), "--bogus-flag"}, time.UTC)
	if err == nil || !strings.Contains(err.Error(), "journalctl") {
		t.Errorf("bad journalctl run: %v", err)
	}
}

// TestJournalctlNotJSON: journalctl's output that is not JSON (an
// operator's --journal-arg=--output=short overrides the -o json) is an
// error naming the line, and the report returns: it used to wait for
// journalctl, blocked on a full pipe nobody read any more, for ever.
func TestJournalctlNotJSON(t *testing.T) {
	remote := requireBinary(t, "/lib/systemd/systemd-journal-remote")
	requireBinary(t, "journalctl")
	var export strings.Builder
	base := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	for i := range 5000 { // (its short output, ~500 kB, is far more than a pipe holds)
		fmt.Fprintf(&export, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=mx1\nSYSLOG_IDENTIFIER=postfix/smtpd\n_PID=%d\nMESSAGE=connect from unknown[192.0.2.%d]\n\n",
			base.Add(time.Duration(i)*time.Second).UnixMicro(), i+1, 100+i, i%250)
	}
	jf := filepath.Join(t.TempDir(), "big.journal")
	cmd := exec.Command(remote, "-o", jf, "-")
	cmd.Stdin = strings.NewReader(export.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
	done := make(chan error, 1)
	go func() {
		done <- NewAnalyzer(DefaultOptions()).ReadJournal(context.Background(), "", []string{"--file=" + jf, "--output=short"}, time.UTC)
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "line 1 is not JSON") {
			t.Fatalf("journalctl --output=short: %v, want an error naming line 1", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ReadJournal has not returned in 30 s after journalctl's first line was not JSON")
	}
	// The same journal as JSON reads whole.
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadJournal(context.Background(), "", []string{"--file=" + jf}, time.UTC); err != nil {
		t.Fatal(err)
	}
	if got := a.Summary().Lines; got != 5000 {
		t.Fatalf("read %d journal entries, want 5000", got)
	}
}
