package report

// Small types and helpers of the analyzer: counters that copy their keys,
// the nested detail tables, the per-hour clock cache and field parsers.

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// arena holds the copies of the keys the tables keep. The analyzer reads
// lines as strings into large read buffers, so every key a table keeps
// must be copied; copying each into its own allocation made hundreds of
// thousands of small objects on a botnet's log (one per address), which
// the garbage collector traced again at every cycle. Keys are appended
// to 64 KiB blocks instead, which hold no pointers, and the tables name a
// copy by a keyRef (an integer: no pointer per key for the collector to
// follow either).
type arena struct {
	blocks [][]byte // shared blocks of arenaBlock bytes, and one block per long key
	shared int      // the shared block being filled (an index in blocks); -1 or 0 with used == arenaBlock: none
	used   int      // bytes used of it
}

const arenaBlock = 64 << 10

// keyRef names a copy in an arena: the block's index << 32 | the offset
// << 16 | the length; a length of 0xffff is the whole block (a long key).
// The zero keyRef is the empty string.
type keyRef uint64

// put copies s into the arena.
func (ar *arena) put(s string) keyRef {
	switch {
	case s == "":
		return 0
	case len(s) > arenaBlock/16:
		ar.blocks = append(ar.blocks, []byte(s))
		return keyRef(len(ar.blocks)-1)<<32 | 0xffff
	}
	if len(ar.blocks) == 0 || arenaBlock-ar.used < len(s) {
		ar.blocks = append(ar.blocks, make([]byte, arenaBlock))
		ar.shared, ar.used = len(ar.blocks)-1, 0
	}
	n := ar.used
	copy(ar.blocks[ar.shared][n:], s)
	ar.used += len(s)
	return keyRef(ar.shared)<<32 | keyRef(n)<<16 | keyRef(len(s))
}

// str is the copy r names.
func (ar *arena) str(r keyRef) string {
	n := int(r & 0xffff)
	if n == 0 {
		return ""
	}
	b := ar.blocks[r>>32]
	if n == 0xffff {
		return unsafe.String(&b[0], len(b))
	}
	return unsafe.String(&b[int(r>>16&0xffff)], n)
}

// clone returns a copy of s that does not share s's memory.
func (ar *arena) clone(s string) string {
	if ar == nil {
		return strings.Clone(s)
	}
	return ar.str(ar.put(s))
}

// counter counts by key. The counts live in a slice indexed by the key's
// number, so that a table holds no pointer per entry.
type counter struct {
	keys         keyIndex
	n            []int64
	name, parent string // its keys in a tree2 or tree3
}

func newCounter(ar *arena) *counter { return &counter{keys: keyIndex{ar: ar}} }

// add adds n to k's count.
func (c *counter) add(k string, n int64) {
	i, ok := c.keys.get(k)
	if !ok {
		c.n = append(c.n, 0)
	}
	c.n[i] += n
}

func (c *counter) inc(k string) { c.add(k, 1) }

func (c *counter) len() int { return c.keys.len() }

// all yields every key with its count, in no order.
func (c *counter) all() iter.Seq2[string, int64] {
	return func(yield func(string, int64) bool) {
		for i := range c.keys.refs {
			if !yield(c.keys.key(int32(i)), c.n[i]) {
				return
			}
		}
	}
}

// total is the sum of the counts.
func (c *counter) total() int64 {
	var t int64
	for _, v := range c.n {
		t += v
	}
	return t
}

// sorted returns the rows by count, descending (at most n; n < 0: all).
func (c *counter) sorted(n int) []CountRow {
	rows := make([]CountRow, 0, c.len())
	for k, v := range c.all() {
		rows = append(rows, CountRow{k, v})
	}
	return byHost(rows, n, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
}

// tree2 and tree3 are pflogsumm's nested detail hashes; their counters
// share one arena, and their leaf counts are made through p (pending).
// Lines come in runs of one first key (and reason): the counter of the
// last pair is kept, where a lookup in the map at every line was.
type (
	tree2 struct {
		m    map[string]*counter
		ar   *arena
		p    *pending
		last *counter // the counter used last (its name is its key in m)
	}
	tree3 struct {
		m    map[string]map[string]*counter
		ar   *arena
		p    *pending
		last *counter // the counter used last (its names are its keys)
	}
)

func newTree2(ar *arena, p *pending) *tree2 { return &tree2{m: map[string]*counter{}, ar: ar, p: p} }
func newTree3(ar *arena, p *pending) *tree3 {
	return &tree3{m: map[string]map[string]*counter{}, ar: ar, p: p}
}

// rows is the number of leaf rows (the summary's share of work).
func (t *tree2) rows() int {
	n := 0
	for _, c := range t.m {
		n += c.len()
	}
	return n
}

func (t *tree3) rows() int {
	n := 0
	for _, m := range t.m {
		for _, c := range m {
			n += c.len()
		}
	}
	return n
}

// add counts one entry.
func (t *tree2) add(a, b string) {
	c := t.last
	if c == nil || c.name != a {
		c = t.m[a]
		if c == nil {
			c = newCounter(t.ar)
			c.name = t.ar.clone(a)
			t.m[c.name] = c
		}
		t.last = c
	}
	t.p.inc(c, b)
}

func (t *tree3) add(k rejectKey) {
	c := t.last
	if c == nil || c.name != k.reason || c.parent != k.typ {
		m := t.m[k.typ]
		if m == nil {
			m = map[string]*counter{}
			t.m[t.ar.clone(k.typ)] = m
		}
		c = m[k.reason]
		if c == nil {
			c = newCounter(t.ar)
			c.name, c.parent = t.ar.clone(k.reason), t.ar.clone(k.typ)
			m[c.name] = c
		}
		t.last = c
	}
	t.p.inc(c, k.data)
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
	i := wordEnd(msg)
	switch msg[:i] {
	case "reject", "reject_warning", "hold", "discard":
		return true
	}
	r := msg[i:]
	if len(r) < 8 || r[0] != ':' || r[1] != ' ' || r[2] != 'r' && r[2] != 'h' && r[2] != 'd' { // (most lines: no keyword after the queue ID)
		return false
	}
	return strings.HasPrefix(r, ": reject: ") || strings.HasPrefix(r, ": reject_warning: ") ||
		strings.HasPrefix(r, ": hold: ") || strings.HasPrefix(r, ": discard: ")
}

// wordEnd is the index of the first ':', ' ' or '\t' in msg, or len(msg):
// the end of a Postfix message's queue ID (or "warning", "NOQUEUE"),
// found eight bytes at a time (the reader and add each look for it).
func wordEnd(msg string) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	i := 0
	base := unsafe.Pointer(unsafe.StringData(msg))
	for ; i+8 <= len(msg); i += 8 {
		w := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(base, i))[:]) // (msg is not written: a read of 8 of its bytes, i+8 <= len(msg); no unsafe.Slice: its wrap check was 4 instructions a word)
		a, b, c := w^(lo*':'), w^(lo*' '), w^(lo*'\t')
		// The zero bytes of a, b or c get their high bit: the lowest mark
		// is the first match (a false mark lies only above a true one).
		if m := ((a-lo)&^a | (b-lo)&^b | (c-lo)&^c) & hi; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for i < len(msg) && msg[i] != ':' && msg[i] != ' ' && msg[i] != '\t' {
		i++
	}
	return i
}

// clockCache remembers the local hour of the last time converted: lines
// come in runs within one hour.
type clockCache struct {
	loc      *time.Location
	from, to int64 // the hour, in Unix seconds
	hr       int
	day      dayKey
	last     time.Time // the last time asked (lines come several to a second)
}

func (c *clockCache) clock(t time.Time) (int, dayKey) {
	if t == c.last && c.loc != nil {
		return c.hr, c.day
	}
	c.last = t
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
