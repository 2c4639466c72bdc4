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
