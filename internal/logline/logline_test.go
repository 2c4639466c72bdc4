package logline

import (
	"os"
	"testing"
	"time"
)

var (
	cet = time.FixedZone("CET", 3600)
	now = time.Date(2026, time.November, 23, 12, 0, 0, 0, time.UTC)
)

func newParser() *Parser {
	return &Parser{Loc: time.UTC, Now: func() time.Time { return now }}
}

func TestParsePositive(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Line
	}{
		{"traditional space-padded day",
			"Nov  2 15:04:05 mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]",
			Line{time.Date(2026, 11, 2, 15, 4, 5, 0, time.UTC), "mx1", "postfix/smtpd", 1234, "connect from unknown[192.0.2.1]"}},
		{"traditional two-digit day",
			"Nov 12 00:00:00 mx1 postfix/qmgr[99]: 4F3A21C2: removed",
			Line{time.Date(2026, 11, 12, 0, 0, 0, 0, time.UTC), "mx1", "postfix/qmgr", 99, "4F3A21C2: removed"}},
		{"traditional zero-padded day",
			"Nov 02 23:59:59 mx1 dovecot: imap-login: Login: user=<bob>",
			Line{time.Date(2026, 11, 2, 23, 59, 59, 0, time.UTC), "mx1", "dovecot", 0, "imap-login: Login: user=<bob>"}},
		{"kernel without pid",
			"Nov 23 10:00:00 mx1 kernel: [12345.678] relayguard-egress: IN= OUT=eth0",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "mx1", "kernel", 0, "[12345.678] relayguard-egress: IN= OUT=eth0"}},
		{"submission syslog name",
			"Nov 23 10:00:00 mx1 postfix/submission/smtpd[7]: warning: hostname x does not resolve",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "mx1", "postfix/submission/smtpd", 7, "warning: hostname x does not resolve"}},
		{"trailing CRLF stripped",
			"Nov 23 10:00:00 mx1 relayguard[5]: time=x level=INFO msg=\"ban added\"\r\n",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "mx1", "relayguard", 5, "time=x level=INFO msg=\"ban added\""}},
		{"RFC 3164 with PRI",
			"<22>Nov 23 10:00:00 mx1 postfix/pickup[3]: 1A2B: uid=0 from=<root>",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "mx1", "postfix/pickup", 3, "1A2B: uid=0 from=<root>"}},
		{"no tag (MARK)",
			"Nov 23 10:00:00 mx1 -- MARK --",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "mx1", "", 0, "-- MARK --"}},
		{"non-numeric pid",
			"Nov 23 10:00:00 mx1 prog[abc]: hi",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "mx1", "prog", 0, "hi"}},
		{"empty message",
			"Nov 23 10:00:00 mx1 prog[1]:",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "mx1", "prog", 1, ""}},
		{"RFC 3339 colon offset fraction",
			"2026-11-23T10:00:00.123456+01:00 mx1 postfix/smtp[42]: 1A2B: to=<a@example.org>",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 123456000, cet), "mx1", "postfix/smtp", 42, "1A2B: to=<a@example.org>"}},
		{"RFC 3339 offset without colon (journalctl short-iso)",
			"2026-11-23T10:00:00+0100 mx1 postfix/smtp[42]: x",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, cet), "mx1", "postfix/smtp", 42, "x"}},
		{"RFC 3339 negative offset",
			"2026-11-23T10:00:00-05:30 mx1 p: x",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.FixedZone("", -(5*3600+30*60))), "mx1", "p", 0, "x"}},
		{"RFC 3339 Z nanoseconds",
			"2026-11-23T10:00:00.123456789Z mx1 p[1]: x",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC), "mx1", "p", 1, "x"}},
		{"RFC 3339 more than 9 fraction digits",
			"2026-11-23T10:00:00.1234567891Z mx1 p[1]: x",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC), "mx1", "p", 1, "x"}},
		{"RFC 5424 full",
			"<34>1 2026-11-23T10:00:00.003Z mx1.example.org postfix/smtpd 1234 - - connect from x",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 3000000, time.UTC), "mx1.example.org", "postfix/smtpd", 1234, "connect from x"}},
		{"RFC 5424 structured data with escapes and BOM",
			"<165>1 2026-11-23T10:00:00+01:00 mx1 relayguard 77 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\\]x\"][b@1 x=\"y\"] \xEF\xBB\xBFban added",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, cet), "mx1", "relayguard", 77, "ban added"}},
		{"RFC 5424 nil values and no message",
			"<13>1 - - - - - -",
			Line{time.Time{}, "", "", 0, ""}},
		{"RFC 5424 procid not numeric",
			"<13>1 2026-11-23T10:00:00Z h app proc-x - - m",
			Line{time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), "h", "app", 0, "m"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := newParser().Parse(tc.in)
			if !ok {
				t.Fatalf("Parse(%q) = false", tc.in)
			}
			if !got.Time.Equal(tc.want.Time) || got.Host != tc.want.Host || got.Program != tc.want.Program ||
				got.PID != tc.want.PID || got.Message != tc.want.Message {
				t.Fatalf("Parse(%q)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
			_, gotOff := got.Time.Zone()
			_, wantOff := tc.want.Time.Zone()
			if gotOff != wantOff {
				t.Fatalf("offset %d, want %d", gotOff, wantOff)
			}
		})
	}
}

func TestParseNegative(t *testing.T) {
	for _, in := range []string{
		"",
		"hello world",
		"Foo  2 15:04:05 mx1 p: x",                         // bad month
		"Nov 32 15:04:05 mx1 p: x",                         // bad day
		"Nov  0 15:04:05 mx1 p: x",                         // day 0
		"Nov  2 25:04:05 mx1 p: x",                         // bad hour
		"Nov  2 15:61:05 mx1 p: x",                         // bad minute
		"Nov  2 15:04 mx1 p: x",                            // short clock
		"Nov  2 15:04:05",                                  // no host
		"Nov  2 15:04:05 ",                                 // empty host
		"Nov  2 15:04:05 mx1",                              // host but nothing after
		"Nov  2 15:04:05mx1 p: x",                          // no space after time
		"2026-13-23T10:00:00Z mx1 p: x",                    // bad month
		"2026-11-23 10:00:00Z mx1 p: x",                    // space instead of T
		"2026-11-23T10:00:00 mx1 p: x",                     // no offset
		"2026-11-23T10:00:00+1 mx1 p: x",                   // short offset
		"2026-11-23T10:00:00+01:0 mx1 p: x",                // short offset
		"2026-11-23T10:00:00.Z mx1 p: x",                   // empty fraction
		"2026-11-23T10:00:00+25:00 mx1 p: x",               // offset hour
		"<34>2 junk",                                       // 5424 bad timestamp
		"<34>1 2026-11-23T10:00:00Z host app",              // 5424 missing fields
		"<34>1 2026-11-23T10:00:00Z h a p m [unterminated", // bad SD
		"<34>1 2026-11-23T10:00:00Z h a p m x msg",         // SD neither - nor [
		"<34",                      // unterminated PRI
		"<>Nov  2 15:04:05 h p: x", // empty PRI
		"<34>",                     // nothing after PRI
	} {
		if l, ok := newParser().Parse(in); ok {
			t.Errorf("Parse(%q) = %+v, true; want false", in, l)
		}
	}
}

// A timestamp more than a few days after Now belongs to last year.
func TestYearInferenceFuture(t *testing.T) {
	p := newParser() // now: 2026-11-23
	l, ok := p.Parse("Nov 28 10:00:00 h p: x")
	if !ok || l.Time.Year() != 2026 {
		t.Fatalf("5 days ahead: %v %v, want 2026", l.Time, ok)
	}
	p = newParser()
	l, ok = p.Parse("Dec 20 10:00:00 h p: x")
	if !ok || l.Time.Year() != 2025 {
		t.Fatalf("4 weeks ahead: %v %v, want 2025", l.Time, ok)
	}
	if p.Year != 2025 {
		t.Fatalf("state Year = %d, want 2025", p.Year)
	}
}

// A file spanning New Year rolls the year forward and keeps it.
func TestYearInferenceNewYear(t *testing.T) {
	p := &Parser{Loc: time.UTC, Now: func() time.Time { return time.Date(2027, 1, 3, 0, 0, 0, 0, time.UTC) }}
	want := []struct {
		line string
		year int
	}{
		{"Dec 30 23:59:58 h p: x", 2026},
		{"Dec 31 23:59:59 h p: x", 2026},
		{"Jan  1 00:00:00 h p: x", 2027},
		{"Dec 31 23:59:59 h p: late line", 2026}, // stray line written before midnight
		{"Jan  1 00:00:01 h p: x", 2027},
		{"Feb  1 00:00:01 h p: x", 2027},
	}
	for _, w := range want {
		l, ok := p.Parse(w.line)
		if !ok || l.Time.Year() != w.year {
			t.Fatalf("Parse(%q) = %v %v, want year %d", w.line, l.Time, ok, w.year)
		}
	}
}

// A preset Year is used as is; Loc is applied to traditional timestamps.
func TestPresetYearAndLoc(t *testing.T) {
	p := &Parser{Year: 2019, Loc: cet, Now: func() time.Time { return now }}
	l, ok := p.Parse("Dec 31 23:00:00 h p: x")
	if !ok || !l.Time.Equal(time.Date(2019, 12, 31, 22, 0, 0, 0, time.UTC)) {
		t.Fatalf("got %v, want 2019-12-31 23:00 CET", l.Time)
	}
	l, _ = p.Parse("Jan  1 01:00:00 h p: x")
	if l.Time.Year() != 2020 {
		t.Fatalf("rollover from preset year: %v", l.Time)
	}
}

// The zero Parser works (time.Local, time.Now).
func TestZeroParser(t *testing.T) {
	var p Parser
	l, ok := p.Parse("Jan  1 00:00:00 h p: x")
	if !ok || l.Time.Location() != time.Local {
		t.Fatalf("got %v %v", l.Time, ok)
	}
	if y := time.Now().Year(); l.Time.Year() != y && l.Time.Year() != y-1 {
		t.Fatalf("year %d", l.Time.Year())
	}
}

func TestParseAllocs(t *testing.T) {
	p := newParser()
	lines := []string{
		"Nov 23 10:00:00 mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]",
		"2026-11-23T10:00:00.123456+01:00 mx1 postfix/smtp[42]: 1A2B: to=<a@example.org>",
		"<34>1 2026-11-23T10:00:00.003Z mx1 postfix/smtpd 1234 - - connect from x",
	}
	p.Parse(lines[1]) // first numeric offset allocates its zone once
	allocs := testing.AllocsPerRun(100, func() {
		for _, s := range lines {
			if _, ok := p.Parse(s); !ok {
				t.Fatal("parse failed")
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

func BenchmarkParseTraditional(b *testing.B) {
	p := newParser()
	s := "Nov 23 10:00:00 mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]"
	b.ReportAllocs()
	for b.Loop() {
		p.Parse(s)
	}
}

func BenchmarkParseRFC3339(b *testing.B) {
	p := newParser()
	s := "2026-11-23T10:00:00.123456+01:00 mx1 postfix/smtp[42]: 1A2B: to=<a@example.org>"
	b.ReportAllocs()
	for b.Loop() {
		p.Parse(s)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("Nov 23 10:00:00 mx1 postfix/smtpd[1234]: connect")
	f.Add("2026-11-23T10:00:00.123456+01:00 mx1 p[42]: x")
	f.Add("<34>1 2026-11-23T10:00:00Z h a 1 - [x a=\"\\]\"] m")
	f.Fuzz(func(t *testing.T, s string) {
		p := newParser()
		p.Parse(s) // must not panic
	})
}

// The per-hour cache gives what time.Date gives, across days, zones and a
// daylight-saving change.
func TestHourCacheMatchesTimeDate(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no tzdata (CI installs Debian package tzdata):", err)
		}
		t.Skip("no tzdata:", err)
	}
	p := &Parser{Year: 2026, Loc: berlin, Now: func() time.Time { return now }}
	start := time.Date(2026, 3, 28, 22, 0, 0, 0, time.UTC) // spans the 29 March change
	for i := 0; i < 3*24*60; i += 7 {
		w := start.Add(time.Duration(i) * time.Minute).In(berlin)
		line := w.Format(time.Stamp) + " h p[1]: x"
		l, ok := p.Parse(line)
		want := time.Date(2026, w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, berlin)
		if !ok || !l.Time.Equal(want) {
			t.Fatalf("Parse(%q) = %v, want %v", line, l.Time, want)
		}
	}
}
