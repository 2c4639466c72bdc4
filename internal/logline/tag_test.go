package logline

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// The reading of a tag and of a month name as they were before parseTag
// and parseBSD were made cheaper (a search of the month names, three
// comparisons per byte, atoi of the PID): the differential tests below hold
// the new code to them.
var refMonths = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func refMonthOf(a, b, c byte) time.Month {
	for i, m := range refMonths {
		if a == m[0] && b == m[1] && c == m[2] {
			return time.Month(i + 1)
		}
	}
	return 0
}

func refParseTag(s string) (prog string, pid int, msg string) {
	i := 0
	for i < len(s) && s[i] != '[' && s[i] != ':' && s[i] != ' ' {
		i++
	}
	if i == 0 || i == len(s) || s[i] == ' ' {
		return "", 0, s
	}
	prog = s[:i]
	j := i
	if s[j] == '[' {
		k := j + 1
		for k < len(s) && s[k] != ']' {
			k++
		}
		if k == len(s) {
			return "", 0, s
		}
		pid = atoi(s[j+1 : k])
		j = k + 1
	}
	if j >= len(s) || s[j] != ':' {
		return "", 0, s
	}
	j++
	if j < len(s) && s[j] == ' ' {
		j++
	}
	return prog, pid, s[j:]
}

// TestMonthOf compares monthOf with a search of the names on every
// three-byte string over the letters and a few others.
func TestMonthOf(t *testing.T) {
	var alphabet []byte
	for c := 0; c < 256; c++ {
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == ' ' || c == 0 || c == 0xff || c == '1' {
			alphabet = append(alphabet, byte(c))
		}
	}
	n := 0
	for _, a := range alphabet {
		for _, b := range alphabet {
			for _, c := range alphabet {
				if got, want := monthOf(a, b, c), refMonthOf(a, b, c); got != want {
					t.Fatalf("monthOf(%q) = %v, want %v", []byte{a, b, c}, got, want)
				}
				if refMonthOf(a, b, c) != 0 {
					n++
				}
			}
		}
	}
	if n != 12 {
		t.Fatalf("%d months found, want 12", n)
	}
}

// TestParseTagSame compares parseTag with the reference on tags of every
// shape: PIDs too long, empty, signed or with letters, missing brackets
// and colons.
func TestParseTagSame(t *testing.T) {
	for _, s := range []string{
		"postfix/smtpd[164379]: connect from x", "dovecot: auth: x", "prog[]: m", "prog[12a]: m",
		"prog[-1]: m", "prog[123456789]: m", "prog[1234567890]: m", "prog[99999999999999999999]: m",
		"prog[12]:m", "prog[12] m", "prog[12", "prog", "prog:", ":x", "[1]: x", "a b: c", "p[1]x: y",
		"auth-worker(22401): x", "p[1]:", "", " ", "kernel: [ 1.0] x", "p[1]]: x", "p[[1]: x",
	} {
		gp, gid, gm := parseTag(s)
		wp, wid, wm := refParseTag(s)
		if gp != wp || gid != wid || gm != wm {
			t.Errorf("parseTag(%q) = %q %d %q, want %q %d %q", s, gp, gid, gm, wp, wid, wm)
		}
	}
}

func FuzzParseTag(f *testing.F) {
	f.Add("postfix/smtpd[164379]: connect from x")
	f.Add("prog[1234567890]: m")
	f.Fuzz(func(t *testing.T, s string) {
		gp, gid, gm := parseTag(s)
		wp, wid, wm := refParseTag(s)
		if gp != wp || gid != wid || gm != wm {
			t.Fatalf("parseTag(%q) = %q %d %q, want %q %d %q", s, gp, gid, gm, wp, wid, wm)
		}
	})
}

// checkTags parses tags with parseTag, and after a timestamp and host
// with ParseTo (which reads the usual tags itself), and with the reference.
func checkTags(t *testing.T, tags ...string) {
	t.Helper()
	p := Parser{Year: 2026, Loc: time.UTC}
	for _, s := range tags {
		gp, gid, gm := parseTag(s)
		wp, wid, wm := refParseTag(s)
		if gp != wp || gid != wid || gm != wm {
			t.Fatalf("in %q: parseTag(%q) = %q %d %q, want %q %d %q", tags, s, gp, gid, gm, wp, wid, wm)
		}
		if strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\r") {
			continue // (ParseTo drops them)
		}
		var l Line
		if !p.ParseTo(&l, "Nov 23 10:00:00 mx1 "+s) || l.Host != "mx1" || l.Program != wp || l.PID != wid || l.Message != wm {
			t.Fatalf("ParseTo(%q) = %q %d %q, want %q %d %q", s, l.Program, l.PID, l.Message, wp, wid, wm)
		}
	}
}

// TestParseTagNearNames parses, after a program name of every length from
// 1 to 17, names that share its bytes and then end, go on, or differ in
// one byte, at every position ("postfix/" among them: progEnd skips it);
// and PIDs of every length around a word (tagFrom reads up to seven
// digits a word at a time).
func TestParseTagNearNames(t *testing.T) {
	const long = "postfix/submission/smtpd[123]: connect from x"
	for n := 1; n <= 17; n++ {
		name := []string{"abcdefghijklmnopq", "postfix/smtpd/xyz"}[n%2][:n]
		first := name + "[1]: message of some length"
		for _, end := range []string{"[2]: m", ": m", " m", "[]: m", "x[3]: m", "[12345678]: m", "[1234567]: m", "[1234567]:m",
			"[123456]x: m", "[0000007]: m", "[99999999999]: m", "[1a]: m", "[-1]: m", "[", "", ":"} {
			for _, pad := range []string{"", " and some more bytes after it"} {
				checkTags(t, first, name+end+pad)
				for i := 0; i < n; i++ { // one byte changed, to a non-end and to each end
					for _, c := range []byte{'Z', '[', ':', ' ', 0x80, 0x00} {
						b := []byte(name + end + pad)
						b[i] = c
						checkTags(t, first, string(b))
					}
				}
				checkTags(t, first, name[:n-1]+end+pad)
			}
		}
	}
	for k := 0; k <= 12; k++ {
		pid := "9876543210987"[:k]
		checkTags(t, long, "postfix/smtpd["+pid+"]: connect from unknown[192.0.2.1]", "postfix/smtpd["+pid+"]x", "postfix/smtpd["+pid)
	}
}

func FuzzParseTags(f *testing.F) {
	f.Add("postfix/smtpd[164379]: connect from x", "postfix/smtpd[1]: disconnect from y")
	f.Add("dovecot: auth: x", "dovecot[12]: y")
	f.Fuzz(func(t *testing.T, a, b string) {
		checkTags(t, a, b, a, b+a)
	})
}

// TestParseTagEveryOffset puts each end of a program name at every offset
// of the first three 8-byte words, after bytes that upset a word-wise
// search (0x00, 0x01, 0x7f, 0x80, 0xff and the end bytes' neighbours).
func TestParseTagEveryOffset(t *testing.T) {
	for _, fill := range []byte{'a', 0x00, 0x01, 0x7f, 0x80, 0xff, 'Z', '[' + 1, ':' - 1, ' ' + 1} {
		for n := 0; n < 24; n++ {
			for _, end := range []string{"[42]: msg", ": msg", " msg", "[x]: m", ""} {
				name := make([]byte, n)
				for i := range name {
					name[i] = fill
				}
				s := string(name) + end
				gp, gid, gm := parseTag(s)
				wp, wid, wm := refParseTag(s)
				if gp != wp || gid != wid || gm != wm {
					t.Fatalf("parseTag(%q) = %q %d %q, want %q %d %q", s, gp, gid, gm, wp, wid, wm)
				}
			}
		}
	}
}

// timestampSequence is a log's worth of traditional timestamps drawn from
// few values, so that lines repeat the one before (the cache's case) and
// also come back after others: month jumps over New Year both ways, stray
// lines, single-digit days with one space, a month name in lower case, a
// preset year or zone changed between lines, and lines that are no
// timestamp at all.
func timestampSequence(seed uint64, n int) (lines []string, years []int, locs []*time.Location) {
	r := rand.New(rand.NewPCG(seed, 19))
	berlin := time.FixedZone("X", 3600)
	months := [...]string{"Jan", "Feb", "Jun", "Jul", "Aug", "Dec", "jan", "Xyz"}
	days := [...]string{" 1", " 3", "3 ", "31", "00", "29"}
	clocks := [...]string{"00:00:00", "23:59:59", "12:30:60", "12:30:61", "24:00:00", "07:07:07"}
	year, zones := 0, []*time.Location{nil, time.UTC, berlin}
	loc := zones[0]
	for range n {
		if r.IntN(50) == 0 {
			year = []int{0, 2025, 2026}[r.IntN(3)]
		}
		if r.IntN(50) == 0 {
			loc = zones[r.IntN(len(zones))]
		}
		var line string
		if len(lines) > 0 && r.IntN(3) > 0 {
			line = lines[len(lines)-1] // the same second again
		} else {
			d := days[r.IntN(len(days))]
			line = months[r.IntN(len(months))] + " " + d + " " + clocks[r.IntN(len(clocks))] + " h p[1]: m"
			if d == "3 " {
				line = months[r.IntN(len(months))] + " 3 " + clocks[r.IntN(len(clocks))] + " h p[1]: m"
			}
		}
		lines, years, locs = append(lines, line), append(years, year), append(locs, loc)
	}
	return lines, years, locs
}

// checkTimestampCache parses the sequence with one parser and with one whose
// timestamp cache is emptied before every line: the lines and the year
// state must agree at every step.
func checkTimestampCache(t *testing.T, seed uint64) {
	lines, years, locs := timestampSequence(seed, 400)
	now := func() time.Time { return time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC) }
	p, ref := &Parser{Now: now}, &Parser{Now: now}
	for i, line := range lines {
		if years[i] != 0 && (i == 0 || years[i] != years[i-1]) {
			p.Year, ref.Year = years[i], years[i]
		}
		p.Loc, ref.Loc = locs[i], locs[i]
		ref.ts = tsCache{}
		got, gok := p.Parse(line)
		want, wok := ref.Parse(line)
		if gok != wok || got != want || p.Year != ref.Year || p.lastMonth != ref.lastMonth {
			t.Fatalf("seed %d line %d %q: got %+v %v (year %d, month %d), without the cache %+v %v (year %d, month %d)",
				seed, i, line, got, gok, p.Year, p.lastMonth, want, wok, ref.Year, ref.lastMonth)
		}
	}
}

// TestTimestampCacheSame holds parseBSD's cache of the last timestamp to
// the parse without it.
func TestTimestampCacheSame(t *testing.T) {
	for seed := range uint64(300) {
		checkTimestampCache(t, seed)
	}
}

func FuzzTimestampCache(f *testing.F) {
	f.Add(uint64(1))
	f.Fuzz(func(t *testing.T, seed uint64) { checkTimestampCache(t, seed) })
}
