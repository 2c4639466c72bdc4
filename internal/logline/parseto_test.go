package logline

import (
	"strings"
	"testing"
	"time"
)

// refParse is Parse as it was before ParseTo (returning its Line): ParseTo
// is held to it by TestParseToSame and FuzzParseTo.
func refParse(p *Parser, line string) (Line, bool) {
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	var l Line
	if len(line) > 0 && line[0] == '<' {
		i := 1
		for i < len(line) && i <= 4 && isDigit(line[i]) {
			i++
		}
		if i == 1 || i >= len(line) || line[i] != '>' {
			return l, false
		}
		rest := line[i+1:]
		if len(rest) >= 2 && isDigit(rest[0]) && rest[1] == ' ' {
			return p.parse5424(rest[2:])
		}
		line = rest
	}
	var rest string
	var ok bool
	switch {
	case len(line) >= 5 && isDigit(line[0]) && line[4] == '-':
		l.Time, rest, ok = p.parse3339(line)
	case len(line) > 25 && line[0] == '@':
		l.Time, rest, ok = parseTAI64N(line)
	default:
		l.Time, rest, ok = p.parseBSD(line)
	}
	if !ok || len(rest) == 0 || rest[0] != ' ' {
		return Line{}, false
	}
	rest = rest[1:]
	sp := strings.IndexByte(rest, ' ')
	if sp <= 0 {
		return Line{}, false
	}
	if rest[sp-1] == ':' {
		l.Program, l.PID, l.Message = refParseTag(rest)
		if l.Program == "" {
			l.Program, l.Message = rest[:sp-1], rest[sp+1:]
		}
		return l, true
	}
	l.Host = rest[:sp]
	rest = rest[sp+1:]
	l.Program, l.PID, l.Message = refParseTag(rest)
	return l, true
}

// parseToLines are lines of every shape Parse reads or refuses.
var parseToLines = []string{
	"Nov 23 10:00:00 mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]",
	"Nov 23 10:00:00 mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]\r\n",
	"Dec  6 02:04:12 auth: Info: passwd-file(bob,192.0.2.1): unknown user",
	"Dec  6 02:04:12 auth-worker(22401): Info: x",
	"Dec  6 02:04:12 mx1 -- MARK --",
	"Dec  6 02:04:12 mx1 relayguard[77]: time=2026-12-06T02:04:12Z level=INFO msg=x",
	"2026-11-23T10:00:00.123456+01:00 mx1 postfix/smtp[42]: 1A2B: to=<a@example.org>",
	"2026-11-23T10:00:00Z mx1 dovecot: imap-login: Login: user=<a>, rip=192.0.2.1",
	"<34>1 2026-11-23T10:00:00Z h a 1 - [x a=\"\\]\"] m",
	"<34>1 - h a 1 - - m",
	"<13>Nov 23 10:00:00 mx1 p[1]: m",
	"<13", "<>x", "", "Nov", "Nov 23 10:00:00", "Nov 23 10:00:00 ", "Nov 23 10:00:00 h",
	"Nov 23 10:00:00  h p: m", "@400000006564a8f00000000a mx1 p[1]: m", "2026-13-01T00:00:00Z h p: m",
	"Nov 23 10:00:00 mx1 postfix/smtpd[]: connect from x", "Nov 23 10:00:00 mx1 postfix/smtpd[1234567]: m",
	"Nov 23 10:00:00 mx1 postfix/smtpd[12345678]: m", "Nov 23 10:00:00 mx1 postfix/smtpd[0012]:m",
	"Nov 23 10:00:00 mx1 postfix/smtpd[12]x: m", "Nov 23 10:00:00 mx1 postfix/smtpd[1a]: m", "Nov 23 10:00:00 mx1 postfix/[1]: m",
	"Nov 23 10:00:00 mx1 postfix/smtpd[1]:", "Nov 23 10:00:00 mx1 postfix/smtpd[1]: ", "Nov 23 10:00:00 mx1 postfix/smtpd[1]",
	"Nov 23 10:00:00 mx1 postfix/submission/smtpd[9]: m",
	"Dec  4 02:39:58 mx1 dovecot: auth: passwd-file(support,192.0.2.1,<7b957d50>): unknown user",
	"Dec  4 02:39:58 mx1 dovecot:  two spaces", "Dec  4 02:39:58 mx1 dovecot:x", "Dec  4 02:39:58 mx1 dovecot:",
	"Dec  4 02:39:58 mx1 dovecot: ", "Dec  4 02:39:58 mx1 :x", "Dec  4 02:39:58 mx1 a-very-long-program-name: m",
	"Dec  4 02:39:58 mx1 dovecot:[1]: m", "Dec  4 02:39:58 mx1 dovecot: imap-login: Login: user=<a>", "Nov 23 10:00:00 mx1234567 p[1]: m", "Nov 23 10:00:00 mx12345678 p[1]: m",
}

// checkParseTo parses lines with ParseTo into a slot holding another
// line, and with the old Parse, each with its own parser: the lines, the
// results and the year state must agree at every step.
func checkParseTo(t *testing.T, lines []string) {
	t.Helper()
	now := func() time.Time { return time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC) }
	p, ref := &Parser{Now: now, Loc: time.UTC}, &Parser{Now: now, Loc: time.UTC}
	left := Line{Time: now(), Host: "left", Program: "over", PID: 7, Message: "from before"}
	for _, line := range lines {
		got := left
		gok := p.ParseTo(&got, line)
		want, wok := refParse(ref, line)
		if gok != wok || !sameLine(got, want) || p.Year != ref.Year || p.lastMonth != ref.lastMonth {
			t.Fatalf("%q: ParseTo %+v %v (year %d), the old Parse %+v %v (year %d)", line, got, gok, p.Year, want, wok, ref.Year)
		}
		if l, ok := (&Parser{Now: now, Loc: time.UTC, Year: p.Year}).Parse(line); ok != wok || ok && l.Message != want.Message {
			t.Fatalf("%q: Parse %+v %v, the old Parse %+v %v", line, l, ok, want, wok)
		}
	}
}

// sameLine compares two lines, their times as instants in zones of the
// same name and offset (each parser makes its own zone for a numeric
// offset).
func sameLine(a, b Line) bool {
	an, ao := a.Time.Zone()
	bn, bo := b.Time.Zone()
	a.Time, b.Time = a.Time.UTC(), b.Time.UTC()
	return a == b && an == bn && ao == bo
}

// TestParseToSame holds ParseTo (and Parse, which calls it) to the old
// Parse on every shape of line and on each line cut at every length.
func TestParseToSame(t *testing.T) {
	checkParseTo(t, parseToLines)
	for _, line := range parseToLines {
		var cuts []string
		for n := range len(line) + 1 {
			cuts = append(cuts, line[:n])
		}
		checkParseTo(t, cuts)
	}
}

func FuzzParseTo(f *testing.F) {
	for _, l := range parseToLines {
		f.Add(l, l)
	}
	f.Fuzz(func(t *testing.T, a, b string) { checkParseTo(t, []string{a, b, a}) })
}

// TestParseUsual: the usual lines (the timestamp of the line before, a
// short host, "prog[pid]: " or "prog: ") are read by parseUsual, and
// every line, read by it or not, as the old Parse reads it. Each line
// follows one with its timestamp, so that parseBSD's cache holds it.
func TestParseUsual(t *testing.T) {
	const ts = "Dec  4 02:39:58 "
	for _, c := range []struct {
		rest  string
		usual bool
	}{
		{"mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]", true},
		{"mx1 postfix/smtpd[1234567]: connect from unknown[192.0.2.1]", true},
		{"mx1 postfix/smtpd[]: connect from unknown[192.0.2.1]", true},
		{"mx1 postfix/smtpd[12]:connect from unknown[192.0.2.1]", true},
		{"mx1 postfix/smtpd[12]:  two spaces before the message", true},
		{"mx1 postfix/qmgr[77]: 1A2B3C: from=<a@example.org>, size=1", true},
		{"mx1 dovecot: imap-login: Login: user=<a>, rip=192.0.2.1", true},
		{"mx1234 postfix/bounce[9]: 1A2B3C: sender non-delivery notification", true},
		{"mx1 kernel: [12.5] eth0: link up at somewhat long length", true},
		{"mx1 dovecot:x with no space after the colon and more", true},
		{"mx1 postfix/smtpd[12345678]: eight digits: not the usual", false},
		{"mx1 postfix/smtpd[12a]: connect from unknown[192.0.2.1]", false},
		{"mx1 postfix/smtpd[12]x connect from unknown[192.0.2.1]", false},
		{"mx1 postfix/submission/smtpd[9]: connect from unknown[192.0.2.1]", false},
		{"mx1 relayguard[77]: time=2026-12-06T02:04:12Z level=INFO msg=x", false},
		{"mx12345 postfix/smtpd[1234]: a host of seven bytes and more", true},
		{"mx123456 postfix/smtpd[1234]: a host of eight bytes and more", false},
		{"mx1 -- MARK -- and a message long enough to be looked at", false},
		{"mx1 [12]: a tag with no program name and some more text", false},
		{"auth: Info: passwd-file(bob,192.0.2.1): unknown user and more", false},
		{"mx1 postfix/smtpd[1]: short", false},
		{"mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]\r", false},
		{"mx1 postfix/smtpd[1234]: connect from unknown[192.0.2.1]\n", false},
	} {
		now := func() time.Time { return time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC) }
		p := &Parser{Now: now, Loc: time.UTC}
		p.Parse(ts + "mx1 postfix/smtpd[1]: the line before")
		var l Line
		if got := p.parseUsual(&l, ts+c.rest); got != c.usual {
			t.Errorf("%q: parseUsual %v, want %v", c.rest, got, c.usual)
		}
		checkParseTo(t, []string{ts + "mx1 postfix/smtpd[1]: the line before", ts + c.rest, ts + c.rest})
	}
}
