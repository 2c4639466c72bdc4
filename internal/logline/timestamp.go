package logline

// The timestamps of the traditional BSD (RFC 3164 section 4.1.2) and RFC 3339
// forms, read by hand (moved unchanged from logline.go).

import (
	"encoding/binary"
	"time"
	"unsafe"
)

// monthOf is the month of an English abbreviation ("Jan" … "Dec"), 0
// for anything else: a switch instead of a search of months
// (parseBSD runs once per line; December was twelve comparisons).
func monthOf(a, b, c byte) time.Month {
	var m time.Month
	switch a {
	case 'J':
		switch {
		case b == 'a' && c == 'n':
			m = time.January
		case b == 'u' && c == 'n':
			m = time.June
		case b == 'u' && c == 'l':
			m = time.July
		}
	case 'F':
		if b == 'e' && c == 'b' {
			m = time.February
		}
	case 'M':
		switch {
		case b == 'a' && c == 'r':
			m = time.March
		case b == 'a' && c == 'y':
			m = time.May
		}
	case 'A':
		switch {
		case b == 'p' && c == 'r':
			m = time.April
		case b == 'u' && c == 'g':
			m = time.August
		}
	case 'S':
		if b == 'e' && c == 'p' {
			m = time.September
		}
	case 'O':
		if b == 'c' && c == 't' {
			m = time.October
		}
	case 'N':
		if b == 'o' && c == 'v' {
			m = time.November
		}
	case 'D':
		if b == 'e' && c == 'c' {
			m = time.December
		}
	}
	return m
}

// parseBSD parses "Mmm dd hh:mm:ss" (the day space- or zero-padded) and
// returns the rest of the line.
func (p *Parser) parseBSD(s string) (time.Time, string, bool) {
	if len(s) < 15 || s[3] != ' ' {
		return time.Time{}, "", false
	}
	// The same bytes as the last timestamp, in the state that one left:
	// parsed again they would give the same time and leave the state as it
	// is (the year and month after a parse are those of the branch that
	// reads them back unchanged: the default one, or the stray line's,
	// which changes nothing).
	base := unsafe.Pointer(unsafe.StringData(s))
	w0 := binary.LittleEndian.Uint64((*[8]byte)(base)[:]) // (s is not written: reads of 15 of its bytes, len(s) >= 15)
	w1 := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(base, 7))[:])
	if c := &p.ts; w0 == c.w0 && w1 == c.w1 && c.month != 0 && c.month == p.lastMonth && c.year == p.Year && c.loc == p.Loc {
		return c.t, s[15:], true
	}
	t, rest, ok := p.parseBSDFull(s)
	if ok && len(rest) == len(s)-15 && p.Year != 0 && p.lastMonth != 0 { // (not "Aug 3 15:30:49", one byte shorter)
		p.ts = tsCache{w0: w0, w1: w1, year: p.Year, month: p.lastMonth, loc: p.Loc, t: t}
	}
	return t, rest, ok
}

// parseBSDFull is parseBSD without the cache.
func (p *Parser) parseBSDFull(s string) (time.Time, string, bool) {
	mon := monthOf(s[0], s[1], s[2])
	if mon == 0 {
		return time.Time{}, "", false
	}
	var day int
	switch {
	case s[4] == ' ' && isDigit(s[5]):
		day = int(s[5] - '0')
	case isDigit(s[4]) && isDigit(s[5]):
		day = int(s[4]-'0')*10 + int(s[5]-'0')
	case isDigit(s[4]) && s[5] == ' ':
		// "Aug 3 15:30:49": a single-digit day with one space, written by
		// some syslog daemons and log shippers: parse it shifted by one.
		t, rest, ok := p.parseBSD(s[:4] + " " + s[4:])
		if !ok || len(rest) > len(s)-14 {
			return time.Time{}, "", false
		}
		return t, s[14:], true
	default:
		return time.Time{}, "", false
	}
	if day < 1 || day > 31 || s[6] != ' ' {
		return time.Time{}, "", false
	}
	hh, mm, ss, ok := parseClock(s[7:15])
	if !ok {
		return time.Time{}, "", false
	}
	loc := p.Loc
	if loc == nil {
		loc = time.Local
	}
	year := p.Year
	switch {
	case year == 0:
		now := p.now()
		year = now.Year()
		if time.Date(year, mon, day, hh, mm, ss, 0, loc).After(now.Add(futureSlack)) {
			year--
		}
		p.Year, p.lastMonth = year, mon
	case p.lastMonth == 0:
		p.lastMonth = mon
	case mon+6 < p.lastMonth: // Dec → Jan: a new year began
		p.Year++
		year = p.Year
		p.lastMonth = mon
	case mon > p.lastMonth+6: // a stray line from before New Year
		year--
	default:
		p.lastMonth = mon
	}
	key := year*1000000 + int(mon)*10000 + day*100 + hh
	if key != p.hourKey || loc != p.hourLoc {
		p.hourKey, p.hourLoc, p.hourBase = key, loc, time.Date(year, mon, day, hh, 0, 0, 0, loc)
	}
	// Within one hour the wall clock and the instant advance together
	// (zone transitions fall on whole hours in practice).
	return p.hourBase.Add(time.Duration(mm*60+ss) * time.Second), s[15:], true
}

func (p *Parser) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// parseClock parses "hh:mm:ss".
func parseClock(s string) (hh, mm, ss int, ok bool) {
	if len(s) < 8 || s[2] != ':' || s[5] != ':' {
		return 0, 0, 0, false
	}
	// (a byte below '0' wraps around past 9)
	h0, h1, m0, m1, s0, s1 := s[0]-'0', s[1]-'0', s[3]-'0', s[4]-'0', s[6]-'0', s[7]-'0'
	if h0 > 9 || h1 > 9 || m0 > 9 || m1 > 9 || s0 > 9 || s1 > 9 {
		return 0, 0, 0, false
	}
	hh = int(h0)*10 + int(h1)
	mm = int(m0)*10 + int(m1)
	ss = int(s0)*10 + int(s1)
	if hh > 23 || mm > 59 || ss > 60 {
		return 0, 0, 0, false
	}
	if ss == 60 { // leap second: time.Date would normalise it anyway
		ss = 59
	}
	return hh, mm, ss, true
}

// parse3339 parses an RFC 3339 section 5.6 date-time ("T" or " " between
// date and time is not accepted: syslog writers use "T"), with optional
// fractional seconds and an offset of "Z", "+hh:mm" or "+hhmm".
func (p *Parser) parse3339(s string) (time.Time, string, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') {
		return time.Time{}, "", false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isDigit(s[i]) {
			return time.Time{}, "", false
		}
	}
	year := int(s[0]-'0')*1000 + int(s[1]-'0')*100 + int(s[2]-'0')*10 + int(s[3]-'0')
	mon := int(s[5]-'0')*10 + int(s[6]-'0')
	day := int(s[8]-'0')*10 + int(s[9]-'0')
	if mon < 1 || mon > 12 || day < 1 || day > 31 {
		return time.Time{}, "", false
	}
	hh, mm, ss, ok := parseClock(s[11:])
	if !ok {
		return time.Time{}, "", false
	}
	i := 19
	nsec := 0
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		scale := 100000000
		for i < len(s) && isDigit(s[i]) {
			if scale > 0 {
				nsec += int(s[i]-'0') * scale
				scale /= 10
			}
			i++
		}
		if i == start {
			return time.Time{}, "", false
		}
	}
	if i >= len(s) {
		return time.Time{}, "", false
	}
	var loc *time.Location
	if s[10] == ' ' {
		// "2013-08-11 03:56:40 ": Dovecot's log_timestamp = "%Y-%m-%d %H:%M:%S ",
		// local time without an offset.
		if s[i] != ' ' {
			return time.Time{}, "", false
		}
		loc = p.Loc
		if loc == nil {
			loc = time.Local
		}
		return time.Date(year, time.Month(mon), day, hh, mm, ss, nsec, loc), s[i:], true
	}
	switch c := s[i]; {
	case c == 'Z' || c == 'z':
		loc = time.UTC
		i++
	case c == '+' || c == '-':
		// "+hh:mm" or "+hhmm"
		if i+5 > len(s) || !isDigit(s[i+1]) || !isDigit(s[i+2]) {
			return time.Time{}, "", false
		}
		oh := int(s[i+1]-'0')*10 + int(s[i+2]-'0')
		j := i + 3
		if s[j] == ':' {
			j++
		}
		if j+2 > len(s) || !isDigit(s[j]) || !isDigit(s[j+1]) {
			return time.Time{}, "", false
		}
		om := int(s[j]-'0')*10 + int(s[j+1]-'0')
		if oh > 23 || om > 59 {
			return time.Time{}, "", false
		}
		off := (oh*60 + om) * 60
		if c == '-' {
			off = -off
		}
		loc = p.fixedZone(off)
		i = j + 2
	default:
		return time.Time{}, "", false
	}
	return time.Date(year, time.Month(mon), day, hh, mm, ss, nsec, loc), s[i:], true
}

func (p *Parser) fixedZone(off int) *time.Location {
	if off == 0 {
		return time.UTC
	}
	if p.zone == nil || p.zoneOff != off {
		p.zone, p.zoneOff = time.FixedZone("", off), off
	}
	return p.zone
}
