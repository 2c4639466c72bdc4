package report

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
)

// TestAgreesWithPflogsummOnLineShapes runs pflogsumm and our report on
// testdata/shapes.log, a hand-written log of the line shapes the generator
// does not write: conn_use= and orig_to= fields, the submission and smtps
// syslog names, IPv6 and bracket-only clients, duplicated qmgr lines
// (size=0 among them), pickup lines pflogsumm cannot parse (one-digit
// hour), CONNECT/HELO/MAIL/DATA/END-OF-MESSAGE/VRFY rejects, hold and
// discard at RCPT, milter-reject, body and header checks, postscreen,
// postfix-script, virtual/pipe/error/lmtp deliveries, expired messages,
// deliveries without a size, addresses without a domain, mixed case, and
// lines out of order. Its days are moved to the last three days so that
// both programs infer the same year. Every pflogsumm section must agree:
// Grand Totals and the per-hour table line for line, the per-day table
// number for number (pflogsumm leaves trailing never-counted columns
// empty where we print 0), the others as sets of rows.
func TestAgreesWithPflogsummOnLineShapes(t *testing.T) {
	pfl := requireBinary(t, "pflogsumm")
	tmpl, err := os.ReadFile("testdata/shapes.log")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	in := string(tmpl)
	for i, d := range []string{"Nov 21", "Nov 22", "Nov 23"} {
		day := now.AddDate(0, 0, i-2)
		in = strings.ReplaceAll(in, d+" ", fmt.Sprintf("%s %2d ", day.Format("Jan"), day.Day()))
	}
	logf := filepath.Join(t.TempDir(), "maillog")
	if err := os.WriteFile(logf, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		set  func(*Options)
	}{
		{nil, nil},
		{[]string{"-i"}, func(o *Options) { o.IgnoreCase = true }},
		{[]string{"--verbose-msg-detail"}, func(o *Options) { o.VerboseMsgDetail = true }},
		{[]string{"--rej-add-from", "--smtpd-stats"}, func(o *Options) { o.RejAddFrom, o.SMTPDStats = true, true }},
	} {
		out, err := exec.Command(pfl, append(tc.args, logf)...).Output()
		if err != nil {
			t.Fatalf("pflogsumm %v: %v", tc.args, err)
		}
		o := DefaultOptions()
		if tc.set != nil {
			tc.set(&o)
		}
		a := NewAnalyzer(o)
		if err := a.ReadFiles(context.Background(), []string{logf}, func() *logline.Parser { return &logline.Parser{} }); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := a.Summary().WriteText(&b, nil); err != nil {
			t.Fatal(err)
		}
		ws, gs := sections(string(out)), sections(b.String())
		if len(ws["Grand Totals"]) == 0 || len(ws) < 15 {
			t.Fatalf("%v: pflogsumm printed only %d sections:\n%s", tc.args, len(ws), out)
		}
		for title, wl := range ws {
			gl, ok := gs[title]
			switch {
			case !ok:
				t.Errorf("%v: section %q missing from our report", tc.args, title)
			case title == "Per-Day Traffic Summary" || title == "Per-Day SMTPD Connection Summary":
				if !slices.Equal(padFields(wl), padFields(gl)) {
					t.Errorf("%v: section %q differs:\npflogsumm:\n%s\nours:\n%s", tc.args, title, strings.Join(wl, "\n"), strings.Join(gl, "\n"))
				}
			case slices.Contains([]string{"(head)", "Grand Totals", "Per-Hour Traffic Summary", "Per-Hour Traffic Daily Average", "Per-Hour SMTPD Connection Daily Average"}, title):
				if !slices.Equal(wl, gl) {
					t.Errorf("%v: section %q differs:\npflogsumm:\n%s\nours:\n%s", tc.args, title, strings.Join(wl, "\n"), strings.Join(gl, "\n"))
				}
			default:
				if !slices.Equal(slices.Sorted(slices.Values(wl)), slices.Sorted(slices.Values(gl))) {
					t.Errorf("%v: section %q rows differ:\npflogsumm:\n%s\nours:\n%s", tc.args, title, strings.Join(wl, "\n"), strings.Join(gl, "\n"))
				}
			}
		}
	}
}

// padFields splits table rows into fields, padding each row with "0" to
// the widest row's field count.
func padFields(rows []string) []string {
	n := 0
	var split [][]string
	for _, r := range rows {
		f := strings.Fields(r)
		split = append(split, f)
		n = max(n, len(f))
	}
	var out []string
	for _, f := range split {
		for len(f) < n {
			f = append(f, "0")
		}
		out = append(out, strings.Join(f, " "))
	}
	return out
}
