package mtasts

import (
	"testing"
	"time"
)

// RFC 8461 §3.2 policies parse; broken ones are refused naming the
// problem; §4.1 matching: a wildcard covers exactly one label.
func TestParseAndMatch(t *testing.T) {
	p, err := Parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Backup.example.com.\r\nmax_age: 604800\r\nextension: ignored\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != Enforce || p.MaxAge != 7*24*time.Hour || len(p.MX) != 2 {
		t.Fatalf("%+v", p)
	}
	for host, want := range map[string]bool{
		"mail.example.com": true, "MAIL.example.com.": true, "a.backup.example.com": true,
		"a.b.backup.example.com": false, "backup.example.com": false, "evil.example.com": false, "mail.example.com.evil.test": false,
	} {
		if p.Matches(host) != want {
			t.Errorf("Matches(%q) = %v", host, !want)
		}
	}
	if p, _ := Parse("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 99999999999\n"); p != nil {
		t.Errorf("max_age beyond 32 bits accepted: %+v", p)
	}
	if p, _ := Parse("version: STSv1\nmode: none\nmax_age: 99999999\n"); p == nil || p.MaxAge != maxAgeLimit {
		t.Errorf("max_age not capped: %+v", p)
	}
	for _, bad := range []string{
		"mode: enforce\nmx: a\nmax_age: 1\n",                  // no version
		"version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",  // wrong version
		"version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",   // bad mode
		"version: STSv1\nmode: enforce\nmax_age: 1\n",         // no mx
		"version: STSv1\nmode: enforce\nmx: a\n",              // no max_age
		"version: STSv1\nmode enforce\nmx: a\nmax_age: 1\n",   // no colon
		"version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n", // negative
	} {
		if p, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v", bad, p)
		}
	}
}
