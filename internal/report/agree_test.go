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
	"github.com/relayguard/relayguard/internal/report/loggen"
)

// sections splits a pflogsumm-style text report into title → body lines.
func sections(text string) map[string][]string {
	out := map[string][]string{}
	lines := strings.Split(text, "\n")
	title := "(head)"
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if i+1 < len(lines) && l != "" && strings.Trim(lines[i+1], "-") == "" && len(lines[i+1]) == len(l) {
			title = strings.TrimSpace(l)
			i++
			continue
		}
		if strings.HasSuffix(l, ": none") {
			out[strings.TrimSuffix(l, ": none")] = nil
			continue
		}
		if l != "" {
			out[title] = append(out[title], l)
		}
	}
	return out
}

// TestAgreesWithPflogsumm generates a varied log, runs pflogsumm and our
// report on it and compares every pflogsumm section: Grand Totals, per-day
// and per-hour tables line for line; the other tables as sets of rows
// (pflogsumm orders equal counts by Perl hash order, which is random) plus
// a top-N run on tables whose ties are improbable, line for line.
func TestAgreesWithPflogsumm(t *testing.T) {
	pfl := requireBinary(t, "pflogsumm")
	dir := t.TempDir()
	logf := filepath.Join(dir, "maillog")
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	// Three days ending today, so pflogsumm's year guess (this year unless
	// the month is after the current one) holds.
	start := time.Now().AddDate(0, 0, -2).Truncate(24 * time.Hour)
	if err := loggen.Write(f, loggen.Options{Lines: 40000, Start: start, Seed: 7, Abuse: true}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	run := func(set func(*Options), args ...string) (string, string) {
		t.Helper()
		out, err := exec.Command(pfl, append(args, logf)...).Output()
		if err != nil {
			t.Fatalf("pflogsumm %v: %v", args, err)
		}
		o := DefaultOptions()
		if set != nil {
			set(&o)
		}
		a := NewAnalyzer(o)
		if err := a.ReadFiles(context.Background(), []string{logf}, func() *logline.Parser { return &logline.Parser{} }); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := a.Summary().WriteText(&b, nil); err != nil {
			t.Fatal(err)
		}
		return string(out), b.String()
	}
	// compare checks every pflogsumm section: the listed ones line for
	// line, the others as sets of rows.
	compare := func(name, want, got string, ordered ...string) map[string][]string {
		t.Helper()
		ws, gs := sections(want), sections(got)
		for title, wl := range ws {
			gl, ok := gs[title]
			if !ok {
				t.Errorf("%s: section %q missing from our report", name, title)
				continue
			}
			if slices.Contains(ordered, title) {
				if !slices.Equal(wl, gl) {
					t.Errorf("%s: section %q differs:\npflogsumm:\n%s\nours:\n%s", name, title, strings.Join(wl, "\n"), strings.Join(gl, "\n"))
				}
				continue
			}
			if !slices.Equal(slices.Sorted(slices.Values(wl)), slices.Sorted(slices.Values(gl))) {
				t.Errorf("%s: section %q rows differ:\npflogsumm:\n%s\nours:\n%s", name, title, strings.Join(wl, "\n"), strings.Join(gl, "\n"))
			}
		}
		return ws
	}
	want, got := run(nil)
	ordered := []string{"(head)", "Grand Totals", "Per-Day Traffic Summary", "Per-Hour Traffic Daily Average", "Per-Hour Traffic Summary"}
	ws := compare("default", want, got, ordered...)
	if len(ws) < 15 {
		t.Fatalf("pflogsumm printed only %d sections:\n%s", len(ws), want)
	}
	// The grand totals must be non-trivial for the comparison to mean anything.
	for _, must := range []string{"received", "delivered", "forwarded", "deferred", "bounced", "rejected", "held", "discarded"} {
		for _, l := range ws["Grand Totals"] {
			if strings.Contains(l, "  "+must) && strings.TrimSpace(l)[0] == '0' {
				t.Errorf("generated log has no %s messages: %q", must, l)
			}
		}
	}

	want, got = run(func(o *Options) { o.HostLimit, o.UserLimit = 3, 3 }, "-h", "3", "-u", "3")
	ws, gs := sections(want), sections(got)
	for _, title := range []string{"Host/Domain Summary: Message Delivery (top 3)", "Host/Domain Summary: Messages Received (top 3)",
		"top 3 Senders by message size", "top 3 Recipients by message size", "top 3 Recipients by message count"} {
		if len(ws[title]) == 0 || !slices.Equal(ws[title], gs[title]) {
			t.Errorf("top-N section %q differs:\npflogsumm:\n%s\nours:\n%s", title, strings.Join(ws[title], "\n"), strings.Join(gs[title], "\n"))
		}
	}

	// Further options, pflogsumm's spelling on its side.
	y := time.Now().AddDate(0, 0, -1)
	yday := time.Date(y.Year(), y.Month(), y.Day(), 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		args []string
		set  func(*Options)
	}{
		{[]string{"--smtpd-stats"}, func(o *Options) { o.SMTPDStats = true }},
		{[]string{"--problems-first", "--iso-date-time", "--zero-fill"}, func(o *Options) { o.ProblemsFirst, o.ISODateTime, o.ZeroFill = true, true, true }},
		{[]string{"--verbose-msg-detail", "-i"}, func(o *Options) { o.VerboseMsgDetail, o.IgnoreCase = true, true }},
		{[]string{"-d", "yesterday"}, func(o *Options) {
			o.From, o.To, o.DateLabel = yday, yday.AddDate(0, 0, 1), fmt.Sprintf("%s %2d", yday.Format("Jan"), yday.Day())
		}},
		{[]string{"--reject-detail", "0", "--bounce-detail", "0", "--smtp-detail", "0"}, func(o *Options) { o.RejectDetail, o.BounceDetail, o.SMTPDetail = 0, 0, 0 }},
	} {
		want, got := run(tc.set, tc.args...)
		compare(strings.Join(tc.args, " "), want, got, append(ordered, "Per-Hour SMTPD Connection Daily Average", "Per-Day SMTPD Connection Summary")...)
		if ours, theirs := sectionOrder(got), sectionOrder(want); !slices.Equal(ours[:len(theirs)], theirs) {
			t.Errorf("%v: section order %q, pflogsumm %q", tc.args, ours, theirs)
		}
	}
}

// sectionOrder lists the section titles (and ": none" lines) in order.
func sectionOrder(text string) []string {
	var out []string
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if i+1 < len(lines) && l != "" && len(lines[i+1]) == len(l) && strings.Trim(lines[i+1], "-") == "" {
			out = append(out, strings.TrimSpace(l))
		} else if strings.HasSuffix(l, ": none") && !strings.HasPrefix(l, " ") {
			out = append(out, strings.TrimSuffix(l, ": none"))
		}
	}
	return out
}
