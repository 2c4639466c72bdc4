package maillog

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sameCorpus is what the fast parser is held to the reference with: every
// record the writers produce (text and JSON), records cut short at every
// byte, odd quoting, and the times and levels slog may write.
func sameCorpus(t testing.TB) []string {
	var out []string
	for _, json := range []bool{false, true} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, nil)
		if json {
			h = slog.NewJSONHandler(&buf, nil)
		}
		m := New(slog.New(h))
		for _, rt := range roundTrips {
			rt.write(context.Background(), m)
		}
		sc := bufio.NewScanner(&buf)
		for sc.Scan() {
			out = append(out, sc.Text())
		}
	}
	n := len(out)
	for _, l := range out[:n] {
		for i := range len(l) {
			out = append(out, l[:i]) // cut short anywhere
		}
	}
	out = append(out,
		`time=2026-12-03T00:00:00.093Z level=INFO msg="relay access denied" cid=1 client=27.218.104.1 listener=mx rule=reject_unauth_destination code="554 5.7.1" rcpt=victim19@yahoo.example text="Relay access denied"`,
		`time=2026-12-03T00:00:01.276Z level=INFO msg="message accepted" cid=3 client=142.116.222.229 listener=mx id=0dde0a915473f2d7 user="" from=news@s5223.de nrcpt=1 size=19315`,
		`time=2026-12-03T00:00:01.276+01:00 level=WARN+2 msg=delivered id=x rcpt=a@b attempt=1 reply="250 2.0.0 \"saved\"" relay=maildir`,
		`time=2026-02-29T00:00:00Z level=info msg=banned prefix=192.0.2.0/24 until=2026-03-01T00:00:00Z`,
		`time=2024-02-29T23:59:59.123456789Z level=ERROR msg=banned prefix=192.0.2.7`,
		`time=2024-02-29T23:59:59.1234567891Z msg=banned`,
		`time=2024-13-01T00:00:00Z msg=banned`, `time=2024-04-31T00:00:00Z msg=banned`,
		`time=2024-04-30T24:00:00Z msg=banned`, `time=2024-04-30T23:60:00Z msg=banned`,
		`time=2024-04-30T23:59:60Z msg=banned`, `time=2024-04-30T23:59:59.Z msg=banned`,
		`time=2024-04-30T23:59:59,5Z msg=banned`, `time=-024-04-30T23:59:59Z msg=banned`,
		`time=2024-04-30t23:59:59z msg=banned`, `time=0000-01-01T00:00:00Z msg=banned`,
		`msg=banned msg=nonsense`, `msg=nonsense msg=banned`, `msg="queue: delivery expired"`,
		`msg="ban expired" reason=manual`, `msg=delivered text="a\"b" rcpt="x\\"`, `msg=delivered rcpt="\`,
		`msg=delivered rcpt="a\qb"`, `bare words msg=delivered more words=`, `  msg=delivered  `,
		`msg=delivered rcpt=a"b"c`, "msg=delivered\r\n", `msg="message accepted" size=x nrcpt=-3 uid=7`,
		`level=DEBUG-4 msg=egress_blocked dst=[2001:db8::1]:25 uid=0`,
	)
	return out
}

// TestParseSameAsReference: the parser gives exactly the reference's
// Record (parse_ref_test.go: the code before it was made faster) on the
// corpus and on relayguard's lines of a log named by REPORT_SAME_LOG (the
// messages after "relayguard[pid]: "), if set. ParseTo over a record left
// from another line gives the same.
func TestParseSameAsReference(t *testing.T) {
	lines := sameCorpus(t)
	if name := os.Getenv("REPORT_SAME_LOG"); name != "" {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if _, msg, ok := strings.Cut(sc.Text(), "]: time="); ok {
				lines = append(lines, "time="+msg)
			}
		}
	}
	var dirty Record
	for _, l := range lines {
		checkSame(t, l, &dirty)
	}
	t.Logf("%d lines", len(lines))
}

func checkSame(t *testing.T, l string, dirty *Record) {
	t.Helper()
	want, wantOK := refParse(l)
	got, ok := Parse(l)
	if ok != wantOK || !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse(%q) = %+v, %v; the reference gives %+v, %v", l, got, ok, want, wantOK)
	}
	if ok := ParseTo(dirty, l); ok != wantOK || !reflect.DeepEqual(*dirty, want) {
		t.Fatalf("ParseTo(%q) over another record = %+v, %v; want %+v, %v", l, *dirty, ok, want, wantOK)
	}
}

func FuzzParseSameAsReference(f *testing.F) {
	for _, l := range sameCorpus(f) {
		f.Add(l)
	}
	var dirty Record
	f.Fuzz(func(t *testing.T, l string) { checkSame(t, l, &dirty) })
}

// TestParseTimeSameAsTimeParse: every day of four years around a leap
// year and the days past each month's end, with 0 to 10 fraction digits
// and other zones, read as time.Parse(time.RFC3339Nano) reads them.
func TestParseTimeSameAsTimeParse(t *testing.T) {
	check := func(s string) {
		want, err := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTime(s)
		if ok != (err == nil) || got != want && !reflect.DeepEqual(got, want) {
			t.Fatalf("parseTime(%q) = %v, %v; time.Parse gives %v, %v", s, got, ok, want, err)
		}
	}
	for y := 1999; y <= 2001; y++ {
		for m := 1; m <= 13; m++ {
			for d := 0; d <= 32; d++ {
				base := strings.Replace(strings.Replace(strings.Replace("YYYY-MM-DDT23:59:59", "YYYY", itoa(y, 4), 1), "MM", itoa(m, 2), 1), "DD", itoa(d, 2), 1)
				check(base + "Z")
				check(base + ".5Z")
				check(base + "+02:00")
			}
		}
	}
	for _, frac := range []string{"", ".", ".1", ".12", ".123", ".1234", ".12345", ".123456", ".1234567", ".12345678", ".123456789", ".1234567891", ".x"} {
		check("2026-12-03T00:00:01" + frac + "Z")
		check("2026-12-03T00:00:01" + frac + "-07:00")
	}
	for _, s := range []string{"2026-12-03T24:00:00Z", "2026-12-03T23:60:00Z", "2026-12-03T23:59:60Z", "2026-12-03 23:59:59Z", "2026-12-03T23:59:59", "", "Z", "+026-12-03T23:59:59Z", "2026-1a-03T23:59:59Z"} {
		check(s)
	}
}

func FuzzParseTime(f *testing.F) {
	f.Add("2026-12-03T00:00:00.093Z")
	f.Add("2024-02-29T23:59:59.123456789Z")
	f.Fuzz(func(t *testing.T, s string) {
		want, err := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTime(s)
		if ok != (err == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("parseTime(%q) = %v, %v; time.Parse gives %v, %v", s, got, ok, want, err)
		}
	})
}

func itoa(n, width int) string {
	s := ""
	for ; width > 0; width-- {
		s = string(rune('0'+n%10)) + s
		n /= 10
	}
	return s
}
