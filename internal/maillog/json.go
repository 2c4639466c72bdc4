package maillog

import (
	"encoding/binary"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// The records of slog's JSON handler: a small scanner of their flat fields.

// walkJSON calls fn for each top-level key of a slog JSONHandler record
// whose value is a string, number or boolean (groups are skipped). It is a
// small scanner rather than encoding/json because it runs once per line
// and needs only the flat fields.
func walkJSON(s string, fn func(k, v string)) {
	i := 1 // past '{'
	for {
		i = skipSpace(s, i)
		if i >= len(s) || s[i] == '}' {
			return
		}
		if s[i] == ',' {
			i++
			continue
		}
		k, n, ok := jsonString(s, i)
		if !ok {
			return
		}
		i = skipSpace(s, n)
		if i >= len(s) || s[i] != ':' {
			return
		}
		i = skipSpace(s, i+1)
		if i >= len(s) {
			return
		}
		switch s[i] {
		case '"':
			v, n, ok := jsonString(s, i)
			if !ok {
				return
			}
			fn(k, v)
			i = n
		case '{', '[':
			n := skipNested(s, i)
			if n < 0 {
				return
			}
			i = n
		default:
			j := i
			for j < len(s) && s[j] != ',' && s[j] != '}' && s[j] != ' ' {
				j++
			}
			if v := s[i:j]; v != "null" {
				fn(k, v)
			}
			i = j
		}
	}
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// jsonString reads the JSON string starting at s[i] == '"' and returns its
// value and the index after it (RFC 8259 section 7).
func jsonString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	j, esc := i+1, false
	for j < len(s) && s[j] != '"' {
		if s[j] == '\\' {
			esc = true
			j++
		}
		j++
	}
	if j >= len(s) {
		return "", 0, false
	}
	if !esc {
		return s[i+1 : j], j + 1, true
	}
	return unescapeJSON(s[i+1 : j]), j + 1, true
}

func unescapeJSON(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+4 < len(s) {
				if n, err := strconv.ParseUint(s[i+1:i+5], 16, 32); err == nil {
					r := rune(n)
					i += 4
					// a surrogate pair: \uD83D\uDE00
					if r >= 0xD800 && r < 0xDC00 && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
						if n2, err := strconv.ParseUint(s[i+3:i+7], 16, 32); err == nil && n2 >= 0xDC00 && n2 < 0xE000 {
							r = (r-0xD800)<<10 + (rune(n2) - 0xDC00) + 0x10000
							i += 6
						}
					}
					b.WriteRune(r)
					continue
				}
			}
			b.WriteByte('u')
		default: // \" \\ \/
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// skipNested returns the index after the object or array at s[i].
func skipNested(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '"':
			_, n, ok := jsonString(s, i)
			if !ok {
				return -1
			}
			i = n - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// levelOf is slog's level for lvl text ("WARN", "INFO+2").
func levelOf(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}

// level is levelOf without its parser for the four names slog writes.
func level(s string) slog.Level {
	switch s {
	case "INFO":
		return slog.LevelInfo
	case "WARN":
		return slog.LevelWarn
	case "ERROR":
		return slog.LevelError
	case "DEBUG":
		return slog.LevelDebug
	}
	return levelOf(s)
}

// parseTime is time.Parse(time.RFC3339Nano, s), read by hand for the form
// slog writes in UTC ("2026-12-03T00:00:00.093Z": a record's time key, on
// every line) and by time.Parse for any other; the result is the same
// value time.Parse builds (time.Date's: time.Unix(sec, nsec).UTC()).
func parseTime(s string) (time.Time, bool) {
	n := len(s)
	if n < len("2006-01-02T15:04:05Z") || s[n-1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return parseTimeSlow(s)
	}
	century, yy := digits2(s[0:2]), digits2(s[2:4])
	year := century*100 + yy
	if century < 0 || yy < 0 {
		year = -1
	}
	month, day := digits2(s[5:7]), digits2(s[8:10])
	hour, min, sec := digits2(s[11:13]), digits2(s[14:16]), digits2(s[17:19])
	nsec := 0
	if frac := s[19 : n-1]; frac != "" {
		// "." and 1 to 9 digits, scaled to nanoseconds
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return parseTimeSlow(s)
		}
		for i := 1; i < len(frac); i++ {
			c := frac[i] - '0'
			if c > 9 {
				return parseTimeSlow(s)
			}
			nsec = nsec*10 + int(c)
		}
		nsec *= pow10[10-len(frac)]
	}
	// (digits2 gives -1 for a non-digit)
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59 {
		return parseTimeSlow(s)
	}
	secs := (daysFromCivil(year, month, day)*24+int64(hour))*3600 + int64(min*60+sec)
	return time.Unix(secs, int64(nsec)).UTC(), true
}

// timeCache is parseTime's answer for the hour of the last time it read
// in the form slog writes in UTC: the first 13 bytes of that time
// ("2026-12-03T00", a valid date and hour) and the seconds of its hour.
type timeCache struct {
	w0, w1 uint64 // s[0:8] and s[5:13] of the time, little-endian
	base   int64  // seconds from the epoch to its hour; valid: base set
	valid  bool
}

// parseTime is parseTime(s) (the package function), the date and hour
// taken from c when they are those of c's last time; c nil: no cache.
func (c *timeCache) parseTime(s string) (time.Time, bool) {
	n := len(s)
	if c == nil || n < len("2006-01-02T15:04:05Z") || s[n-1] != 'Z' || s[13] != ':' || s[16] != ':' {
		return parseTime(s)
	}
	b := unsafe.Slice(unsafe.StringData(s), n)
	w0, w1 := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[5:])
	if !c.valid || w0 != c.w0 || w1 != c.w1 {
		t, ok := parseTime(s)
		if ok && s[4] == '-' && s[7] == '-' && s[10] == 'T' { // (the fast form: its hour is valid)
			min, sec := digits2(s[14:16]), digits2(s[17:19])
			c.w0, c.w1, c.base, c.valid = w0, w1, t.Unix()-int64(min*60+sec), true
		}
		return t, ok
	}
	// The date and hour are c's (valid, in the fast form): the rest as
	// parseTime reads it.
	min, sec := digits2(s[14:16]), digits2(s[17:19])
	nsec := 0
	if frac := s[19 : n-1]; frac != "" {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return parseTimeSlow(s)
		}
		for i := 1; i < len(frac); i++ {
			d := frac[i] - '0'
			if d > 9 {
				return parseTimeSlow(s)
			}
			nsec = nsec*10 + int(d)
		}
		nsec *= pow10[10-len(frac)]
	}
	if min < 0 || min > 59 || sec < 0 || sec > 59 {
		return parseTimeSlow(s)
	}
	return time.Unix(c.base+int64(min*60+sec), int64(nsec)).UTC(), true
}

// pow10 scales a fraction of n digits to nanoseconds (pow10[10-(n+1)]).
var pow10 = [...]int{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}

// digits2 is the number two decimal digits s[0:2] write, or -1 if one is
// not a digit.
func digits2(s string) int {
	a, b := s[0]-'0', s[1]-'0'
	if a > 9 || b > 9 {
		return -1
	}
	return int(a)*10 + int(b)
}

// daysFromCivil is the number of days from 1970-01-01 to year-month-day of
// the proleptic Gregorian calendar (H. Hinnant's days_from_civil), valid
// for year >= 0.
func daysFromCivil(year, month, day int) int64 {
	y := int64(year)
	if month <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400 // [0, 399]
	mp := int64(month+9) % 12
	doy := (153*mp+2)/5 + int64(day) - 1   // [0, 365]
	doe := yoe*365 + yoe/4 - yoe/100 + doy // [0, 146096]
	return era*146097 + doe - 719468
}

func parseTimeSlow(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// daysIn is the number of days of month in year (proleptic Gregorian).
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
