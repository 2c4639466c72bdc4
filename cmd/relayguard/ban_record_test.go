package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPermanentBanRecord: the log record of a permanent ban says
// until=permanent; it said until=0001-01-01T00:00:00Z (the zero time
// formatted), a date an operator or a log tool reads as long past. The
// report reads both forms as permanent (logs written before stay readable)
// and a temporary ban's end as before.
func TestPermanentBanRecord(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	_, errOut, code := runRG(t, bin, "--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "ban", "add", "2001:db8:bad::/48")
	if code != 0 {
		t.Fatalf("ban add: %d %s", code, errOut)
	}
	var rec string
	for _, l := range strings.Split(errOut, "\n") {
		if strings.Contains(l, "msg=banned") {
			rec = l
		}
	}
	if !strings.Contains(rec, " until=permanent ") || strings.Contains(rec, "0001-01-01") {
		t.Fatalf("the permanent ban's record: %q, want until=permanent", rec)
	}
	log := filepath.Join(dir, "mail.log")
	os.WriteFile(log, []byte(strings.Join([]string{
		`time=2026-12-03T00:00:05Z level=WARN msg=banned prefix=198.51.100.7/32 until=2026-12-03T01:00:05Z count=1 reason="auth failures"`,
		`time=2026-12-03T00:00:06Z level=WARN msg=banned prefix=203.0.113.0/24 until=0001-01-01T00:00:00Z count=1 reason="manual ban"`,
		rec, "",
	}, "\n")), 0o644)
	out, errOut, code := runRG(t, bin, "report", "--format", "json", log)
	if code != 0 {
		t.Fatalf("report: %d %s", code, errOut)
	}
	var r struct {
		Abuse struct {
			Bans []struct{ Prefix, Until string }
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("report --format json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, b := range r.Abuse.Bans {
		got[b.Prefix] = b.Until
	}
	want := map[string]string{"198.51.100.7/32": "2026-12-03T01:00:05Z", "203.0.113.0/24": "", "2001:db8:bad::/48": ""}
	for p, u := range want {
		if g, ok := got[p]; !ok || g != u {
			t.Errorf("report: ban %s until %q (listed %v), want %q; all: %v", p, g, ok, u, got)
		}
	}
}
