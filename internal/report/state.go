package report

// Small types and helpers of the analyzer: counters that copy their keys,
// the nested detail tables, the per-hour clock cache and field parsers.

import (
	"strconv"
	"strings"
	"time"
)

// counter counts by key. Values are pointers so that counting an existing
// key never assigns to the map: Go's map assignment rewrites a string key,
// which would make the map keep a substring of the (large) read buffer
// alive instead of the key's own copy.
type counter map[string]*int64

// add adds n to k's count; a new key is copied.
func (c counter) add(k string, n int64) {
	p := c[k]
	if p == nil {
		p = new(int64)
		c[strings.Clone(k)] = p
	}
	*p += n
}

func (c counter) inc(k string) { c.add(k, 1) }

// plain returns the counts as a plain map.
func (c counter) plain() map[string]int64 {
	m := make(map[string]int64, len(c))
	for k, p := range c {
		m[k] = *p
	}
	return m
}

// sorted returns the rows by count, descending (at most n; n < 0: all).
func (c counter) sorted(n int) []CountRow { return sortCounts(c.plain(), n) }

// tree2 and tree3 are pflogsumm's nested detail hashes.
type (
	tree2 map[string]counter
	tree3 map[string]map[string]counter
)

// add counts one entry; keys are copied when first inserted.
func (t tree2) add(a, b string) {
	m := t[a]
	if m == nil {
		m = counter{}
		t[strings.Clone(a)] = m
	}
	m.inc(b)
}

func (t tree3) add(k rejectKey) {
	m := t[k.typ]
	if m == nil {
		m = map[string]counter{}
		t[strings.Clone(k.typ)] = m
	}
	n := m[k.reason]
	if n == nil {
		n = counter{}
		m[strings.Clone(k.reason)] = n
	}
	n.inc(k.data)
}

// stripSolarisID removes Solaris's "[ID nnnnnn facility.level] " prefix.
func stripSolarisID(msg string) string {
	if strings.HasPrefix(msg, "[ID ") {
		if i := strings.Index(msg, "] "); i > 0 {
			return msg[i+2:]
		}
	}
	return msg
}

// rejectCandidate reports whether a Postfix message may be a
// reject/reject_warning/hold/discard line (the reading goroutine condenses
// those ahead of the counting; the counting decides).
func rejectCandidate(msg string) bool {
	i := 0
	for i < len(msg) && msg[i] != ':' && msg[i] != ' ' && msg[i] != '\t' {
		i++
	}
	switch msg[:i] {
	case "reject", "reject_warning", "hold", "discard":
		return true
	}
	r := msg[i:]
	return strings.HasPrefix(r, ": reject: ") || strings.HasPrefix(r, ": reject_warning: ") ||
		strings.HasPrefix(r, ": hold: ") || strings.HasPrefix(r, ": discard: ")
}

// clockCache remembers the local hour of the last time converted: lines
// come in runs within one hour.
type clockCache struct {
	loc      *time.Location
	from, to int64 // the hour, in Unix seconds
	hr       int
	day      dayKey
}

func (c *clockCache) clock(t time.Time) (int, dayKey) {
	sec := t.Unix()
	if t.Location() == c.loc && sec >= c.from && sec < c.to {
		return c.hr, c.day
	}
	c.hr, c.day = clock(t)
	c.loc = t.Location()
	c.from = sec - int64(t.Minute()*60+t.Second())
	c.to = c.from + 3600
	return c.hr, c.day
}

// cutField expects "name=VALUE, " at the start of s (VALUE without commas).
func cutField(s, name string) (val, rest string, ok bool) {
	r, ok := strings.CutPrefix(s, name)
	if !ok {
		return "", s, false
	}
	k := strings.IndexByte(r, ',')
	if k <= 0 || !strings.HasPrefix(r[k:], ", ") {
		return "", s, false
	}
	return r[:k], r[k+2:], true
}

// stripCode removes a leading "NNN " SMTP reply code.
func stripCode(s string) string {
	if len(s) >= 4 && s[3] == ' ' && isDigitByte(s[0]) && isDigitByte(s[1]) && isDigitByte(s[2]) {
		return s[4:]
	}
	return s
}

func isDigitByte(c byte) bool { return '0' <= c && c <= '9' }

// perlNum converts the numeric prefix of s as Perl does ("0.5" → 0.5, "x" → 0).
func perlNum(s string) float64 {
	// Fast path for Postfix's plain decimals ("0.12", "3630"): an exact
	// integer divided by an exact power of ten rounds the same as ParseFloat.
	var mant uint64
	digits, frac, dot := 0, 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigitByte(c) && digits < 15:
			mant = mant*10 + uint64(c-'0')
			digits++
			if dot {
				frac++
			}
			continue
		case c == '.' && !dot:
			dot = true
			continue
		}
		digits = -1
		break
	}
	if digits > 0 {
		return float64(mant) / pow10[frac]
	}
	k := 0
	for k < len(s) && (isDigitByte(s[k]) || s[k] == '.' || (k == 0 && (s[k] == '-' || s[k] == '+'))) {
		k++
	}
	for k > 0 {
		if f, err := strconv.ParseFloat(s[:k], 64); err == nil {
			return f
		}
		k--
	}
	return 0
}

var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}
