package report

import (
	"bytes"
	"strings"
	"testing"
)

// The account containment table (6b9da90) leaves nothing in the HTML page
// of a log without account records: its template's line ended after the
// {{if}}'s {{end}}, so every HTML report (the four benchmark shapes', an
// empty log's) gained a blank line before "Top attacking subnets" and was
// no longer byte-identical to the one before (review10). With records,
// the table is followed by that heading on the next line.
func TestHTMLAccountContainmentSeam(t *testing.T) {
	const heading = "<h2>Top attacking subnets</h2>"
	for _, c := range []struct {
		name, log string
		before    string // what the heading follows, on the line before it
	}{
		{"no lines", "", "<p>none</p>\n"},
		{"no account records", "Dec  3 00:00:01 mx postfix/smtpd[1]: connect from unknown[192.0.2.1]\n", "<p>none</p>\n"},
		{"a suspension", `Dec  3 00:00:02 mx relayguard[1]: time=2026-12-03T00:00:02Z level=WARN msg="account suspended" user=carol rule=max_recipients_per_hour reason="412 recipients in 1h"` + "\n", "</table>\n"},
	} {
		a := NewAnalyzer(DefaultOptions())
		if err := a.ReadLines(strings.NewReader(c.log), fixtureParser()); err != nil {
			t.Fatal(err)
		}
		s := a.Summary()
		var text, page bytes.Buffer
		s.WriteText(&text, nil)
		if err := s.WriteHTML(&page, text.String()); err != nil {
			t.Fatal(err)
		}
		p := page.String()
		i := strings.Index(p, heading)
		if i < 0 {
			t.Fatalf("%s: no %q in the page", c.name, heading)
		}
		if !strings.HasSuffix(p[:i], c.before) || strings.HasSuffix(p[:i], "\n\n") {
			t.Errorf("%s: the heading follows %q, want a line ending in %q", c.name, p[max(0, i-60):i], c.before)
		}
	}
}
