package report

import (
	"bytes"
	"context"
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

	run := func(args ...string) (string, string) {
		t.Helper()
		out, err := exec.Command(pfl, append(args, logf)...).Output()
		if err != nil {
			t.Fatalf("pflogsumm %v: %v", args, err)
		}
		o := DefaultOptions()
		fs := map[string]*int{"-h": &o.HostLimit, "-u": &o.UserLimit}
		for i := 0; i < len(args); i += 2 {
			n := 0
			for _, c := range args[i+1] {
				n = n*10 + int(c-'0')
			}
			*fs[args[i]] = n
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
	want, got := run()
	ws, gs := sections(want), sections(got)
	if len(ws) < 15 {
		t.Fatalf("pflogsumm printed only %d sections:\n%s", len(ws), want)
	}
	ordered := []string{"Grand Totals", "Per-Day Traffic Summary", "Per-Hour Traffic Daily Average"}
	for title, wl := range ws {
		gl, ok := gs[title]
		if !ok {
			t.Errorf("section %q missing from our report", title)
			continue
		}
		if slices.Contains(ordered, title) {
			if !slices.Equal(wl, gl) {
				t.Errorf("section %q differs:\npflogsumm:\n%s\nours:\n%s", title, strings.Join(wl, "\n"), strings.Join(gl, "\n"))
			}
			continue
		}
		ws, gs := slices.Sorted(slices.Values(wl)), slices.Sorted(slices.Values(gl))
		if !slices.Equal(ws, gs) {
			t.Errorf("section %q rows differ:\npflogsumm:\n%s\nours:\n%s", title, strings.Join(wl, "\n"), strings.Join(gl, "\n"))
		}
	}
	// The grand totals must be non-trivial for the comparison to mean anything.
	for _, must := range []string{"received", "delivered", "forwarded", "deferred", "bounced", "rejected", "held", "discarded"} {
		for _, l := range ws["Grand Totals"] {
			if strings.HasSuffix(l, "  "+must) && strings.TrimSpace(l)[0] == '0' {
				t.Errorf("generated log has no %s messages: %q", must, l)
			}
		}
	}

	want, got = run("-h", "3", "-u", "3")
	ws, gs = sections(want), sections(got)
	for _, title := range []string{"Host/Domain Summary: Message Delivery (top 3)", "Host/Domain Summary: Messages Received (top 3)",
		"top 3 Senders by message size", "top 3 Recipients by message size", "top 3 Recipients by message count"} {
		if len(ws[title]) == 0 || !slices.Equal(ws[title], gs[title]) {
			t.Errorf("top-N section %q differs:\npflogsumm:\n%s\nours:\n%s", title, strings.Join(ws[title], "\n"), strings.Join(gs[title], "\n"))
		}
	}
}
