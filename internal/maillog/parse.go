package maillog

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// aliases are messages older relayguard versions wrote for records of the
// vocabulary, so that their logs still read.
var aliases = map[string]Kind{
	"queue: delivered":                           KindDelivered,
	"queue: deferred":                            KindDeferred,
	"queue: delivery failed permanently":         KindBounced,
	"queue: delivery expired":                    KindBounced,
	"queue: message held on arrival":             KindHeld,
	"queue: delivery status notification queued": KindDSNQueued,
	"ban expired":                                KindUnbanned,
}

// IsRecord reports whether s starts like a record of relayguard's own log
// (slog's text handler starts with "time=", its JSON handler with `{"time":`).
func IsRecord(s string) bool {
	return strings.HasPrefix(s, "time=") || strings.HasPrefix(s, `{"time":`)
}

// Parse reads one record written by Logger through slog's text or JSON
// handler (without a syslog header: give the message part of a syslog
// line). It reports false for anything that is not a record of the
// vocabulary. Unknown keys are ignored, so records with extra attributes
// (a logger's With) still read. Time is the record's own time key, or zero.
func Parse(s string) (Record, bool) {
	var r Record
	if !ParseTo(&r, s) {
		return Record{}, false
	}
	return r, true
}

// ParseTo is Parse into *r, every field of which it overwrites (with the
// zero Record when s is not a record): for a reader that keeps records in
// place, since a Record is ~600 bytes to copy.
func ParseTo(r *Record, s string) bool {
	s = trimEOL(s)
	var ok bool
	if strings.HasPrefix(s, "{") {
		*r = Record{UID: -1}
		walkJSON(s, func(k, v string) {
			if r.set(k, v) {
				ok = true
			}
		})
	} else {
		ok, _ = walkText(s, r, nil, nil)
	}
	if !ok {
		*r = Record{}
		return false
	}
	if r.Kind == KindBounced && r.Reason == "" {
		r.Reason = "failed permanently"
	}
	return true
}

// ParseToUnless is ParseTo for a reader that counts nothing for some
// kinds of record (the report, for connections opened and closed: a third
// of serve's records): it reports false for a record whose kind skip
// reports true, as for a line that is not a record, and reads no other
// key of such a text record once its msg is read. For every other line it
// is ParseTo. When it reports false, *r holds no record (not necessarily
// the zero Record).
func ParseToUnless(r *Record, s string, skip func(Kind) bool) bool {
	return parseToUnless(r, s, skip, nil)
}

// A Parser is ParseToUnless with a cache of the last record's date and
// hour: a log's records come in order, most of them in the hour of the one
// before, and reading the date (days from the epoch, the checks) was most
// of reading a time. The zero Parser is ready; it is not safe for
// concurrent use.
type Parser struct{ tc timeCache }

// ParseToUnless is the package's ParseToUnless, the same Record and answer.
func (p *Parser) ParseToUnless(r *Record, s string, skip func(Kind) bool) bool {
	return parseToUnless(r, s, skip, &p.tc)
}

func parseToUnless(r *Record, s string, skip func(Kind) bool, tc *timeCache) bool {
	s = trimEOL(s)
	if !strings.HasPrefix(s, "{") {
		ok, redo := walkText(s, r, skip, tc)
		if !redo {
			if ok && r.Kind == KindBounced && r.Reason == "" {
				r.Reason = "failed permanently"
			}
			return ok
		}
		// (a skipped msg followed by another one, which decides: the keys
		// between them were not read)
	}
	return ParseTo(r, s) && !skip(r.Kind)
}

func trimEOL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// msg sets the record's kind from its message and reports whether the
// message is one of the vocabulary's.
func (r *Record) msg(v string) bool {
	kind, known := kindOf(v)
	if !known {
		return false
	}
	r.setKind(kind, v)
	return true
}

// kindOf is the kind of message v, if it is one of the vocabulary's (or
// an alias).
func kindOf(v string) (Kind, bool) {
	if i := kindAt(v); i >= 0 {
		return kindSlots[i].kind, true
	}
	return "", false
}

// kindAt is message v's slot in kindSlots, -1 if it is not one of the
// vocabulary's.
func kindAt(v string) int {
	if len(v) == 0 {
		return -1
	}
	for i := msgHash(v); kindSlots[i].msg != ""; i = (i + 1) % len(kindSlots) {
		if kindSlots[i].msg == v {
			return i
		}
	}
	return -1
}

// kindSlots are kindByMsg and aliases in an open-addressed table by
// msgHash: one or two string comparisons per record instead of a map's
// hash of the whole message. Each has its kind's usual keys (kindKeys),
// the keys walkText predicts after its msg.
var kindSlots = func() (t [128]struct {
	msg  string
	kind Kind
	keys *keyWord
}) {
	add := func(msg string, kind Kind) {
		i := msgHash(msg)
		for t[i].msg != "" {
			i = (i + 1) % len(t)
		}
		t[i].msg, t[i].kind, t[i].keys = msg, kind, keyWords(kindKeys[kind]...)
	}
	for msg, kind := range kindByMsg {
		add(msg, kind)
	}
	for msg, kind := range aliases {
		add(msg, kind)
	}
	return t
}()

// headKey is the key walkText predicts after the time and level slog's
// text handler starts a record with (slogHead): its message.
var headKey = keyWords("msg")

// kindKeys are the keys Logger writes after the message of the kinds a
// log has most of, in the order it writes them (maillog.go): walkText
// predicts a record's next key from them while they come in this order,
// and reads such a key without a search for its end nor a switch on its
// name.
var kindKeys = map[Kind][]string{
	KindConnected:    {"cid", "client", "listener"},
	KindDisconnected: {"cid", "client", "listener", "helo", "tls", "user", "messages", "bad_commands", "auth_failures", "duration"},
	KindAuthOK:       {"cid", "client", "listener", "mechanism", "user"},
	KindAuthFailed:   {"cid", "client", "listener", "mechanism", "user", "reason"},
	KindAccepted:     {"cid", "client", "listener", "id", "user", "from", "nrcpt", "size"},
	KindRejected:     {"cid", "client", "listener", "rule", "code", "rcpt", "text"},
	KindRelayDenied:  {"cid", "client", "listener", "rule", "code", "rcpt", "text"},
	KindDelivered:    {"id", "rcpt", "attempt", "reply", "relay"},
	KindDeferred:     {"id", "rcpt", "attempt", "reply", "retry_in"},
	KindBounced:      {"id", "rcpt", "attempt", "reply", "reason"},
	KindDSNQueued:    {"id", "dsn_id", "rcpt", "nrcpt", "size"},
	KindBanned:       {"prefix", "until", "count", "reason"},
	KindUnbanned:     {"prefix", "reason"},
}

// A keyWord is a predicted key: the space before it, its name and the "="
// after it as the 16 bytes from the space load (two little-endian words,
// each with the mask of those bytes in it), known at a place by two loads
// and compares; and the key predicted after it.
type keyWord struct {
	w0, m0, w1, m1 uint64
	n              int // len(" name=")
	k              key
	next           *keyWord // (noKey: none)
}

// noKey is the prediction of no key: it is never at any place (its masked
// word is 0, its word is not), so its next is never read.
var noKey = keyWord{w0: 1}

// keyWords is the prediction of names (of up to 14 bytes), in their order.
func keyWords(names ...string) *keyWord {
	next := &noKey
	for i := len(names) - 1; i >= 0; i-- {
		name := names[i]
		kw := &keyWord{k: keyOf(name), n: len(" =") + len(name), next: next}
		var w, m [16]byte
		copy(w[:], " "+name+"=")
		for i := range kw.n {
			m[i] = 0xff
		}
		kw.w0, kw.w1 = load8(w[:], 0), load8(w[:], 8)
		kw.m0, kw.m1 = load8(m[:], 0), load8(m[:], 8)
		next = kw
	}
	return next
}

// msgHash is a message's slot in kindSlots (v is not empty).
func msgHash(v string) int {
	return (len(v)*31 + int(v[0])*7 + int(v[len(v)-1])*3 + int(v[len(v)/2])) % 128
}

// setKind sets the kind of message v (an older message also says why).
func (r *Record) setKind(kind Kind, v string) {
	r.Kind = kind
	if v == "queue: delivery expired" || v == "ban expired" {
		r.Reason = "expired"
	}
}

// set sets key k's field to v; it reports whether k is "msg" with a
// message of the vocabulary (the record's kind).
func (r *Record) set(k, v string) bool {
	if k == "msg" {
		return r.msg(v)
	}
	r.setKey(keyOf(k), v)
	return false
}

// walkText sets r's fields from the key=value pairs of a slog TextHandler
// record and reports whether its msg is one of the vocabulary's (a later
// msg key decides, as any later key does). Values are bare words or
// double-quoted with Go escapes (slog quotes with strconv.Quote). Bare
// words without "=" are skipped; an unterminated quote (a line cut short)
// ends the record.
//
// r is cleared (Record{UID: -1}) before the first field is set, and time
// and level are set at the end: a record whose msg skip reports true (nil:
// none) is thus read to its end for a later msg key only, and ok is false.
// redo says such a record has a later msg key that is not skipped (the
// keys before it were not read: the caller parses it again without skip).
// When ok is false (and the kind is not skipped) r is not cleared.
func walkText(s string, r *Record, skip func(Kind) bool, tc *timeCache) (ok, redo bool) {
	var w textState
	b := unsafe.Slice(unsafe.StringData(s), len(s)) // (read only: for load8)
	n, p := len(s), w.slogHead(b)
	// next is the key predicted to come next, after one space: msg after
	// slog's head, then the kind's usual keys (kindKeys) in their order.
	// The key predicted is known by two masked compares, without a search
	// for its end nor keyOf's switch on its name; the first key that is
	// not ends the prediction. (It decides nothing: the key is the one the
	// search would find, its '=' where the search would stop.)
	next := &noKey
	if p > 0 {
		next = headKey
	}
	for p < n {
		var k key
		if kw := next; n-p >= 8 && load8(b, p)&kw.m0 == kw.w0 && (kw.m1 == 0 || n-p >= 16 && load8(b, p+8)&kw.m1 == kw.w1) {
			k, p, next = kw.k, p+kw.n, kw.next
		} else {
			next = &noKey
			if s[p] == ' ' {
				p++
				continue
			}
			// The key: to the first '=' (a ' ' first: a bare word, skipped).
			i := p
			for {
				if n-i < 8 {
					for i < n && s[i] != '=' && s[i] != ' ' {
						i++
					}
					break
				}
				if m := marks(load8(b, i), '=', ' '); m != 0 {
					i += bits.TrailingZeros64(m) >> 3
					break
				}
				i += 8
			}
			if i >= n {
				break
			}
			if s[i] == ' ' {
				p = i
				continue
			}
			k = keyOf(s[p:i])
			p = i + 1
		}
		var v string
		if p < n && s[p] == '"' {
			// To the closing quote; a backslash before it: escapes.
			j := p + 1
			for {
				if n-j < 8 {
					for j < n && s[j] != '"' && s[j] != '\\' {
						j++
					}
					break
				}
				if m := marks(load8(b, j), '"', '\\'); m != 0 {
					j += bits.TrailingZeros64(m) >> 3
					break
				}
				j += 8
			}
			if j >= n { // unterminated (a line cut short)
				break
			}
			if s[j] == '"' {
				v, p = s[p+1:j], j+1
			} else {
				var rest string
				var terminated bool
				if v, rest, terminated = quoted(s[p:]); !terminated {
					break
				}
				p = n - len(rest)
			}
		} else {
			j := p
			for {
				if n-j < 8 {
					for j < n && s[j] != ' ' {
						j++
					}
					break
				}
				if m := marks(load8(b, j), ' ', ' '); m != 0 {
					j += bits.TrailingZeros64(m) >> 3
					break
				}
				j += 8
			}
			v, p = s[p:j], j
		}
		if k < keyMsg { // a field's (or keyNone: no field)
			if w.skipping {
				continue
			}
			if !w.cleared {
				w.clear(r)
			}
			if off := stringFields[k]; off != 0 { // (setKey's first step, without its call)
				*(*string)(unsafe.Add(unsafe.Pointer(r), off)) = v
			} else {
				r.setValue(k, v)
			}
			continue
		}
		switch k {
		case keyMsg:
			at := kindAt(v)
			if at < 0 { // (a later unknown msg does not undo a known one)
				continue
			}
			kind := kindSlots[at].kind
			switch {
			case skip != nil && skip(kind):
				w.skipping = true
				// The rest is read only for a later msg key: there is
				// none without a "msg=" in it.
				if !hasMsgKey(s[p:]) {
					return false, false
				}
			case w.skipping:
				return false, true
			default:
				if !w.cleared {
					w.clear(r)
				}
				r.setKind(kind, v)
				ok = true
				next = kindSlots[at].keys
			}
		case keyTime:
			w.time(v)
		case keyLevel:
			w.lv, w.hasL = v, true
		}
	}
	if !ok || w.skipping {
		return false, false
	}
	if w.hasT {
		if t, valid := tc.parseTime(w.tv); valid {
			r.Time = t
		} else if w.hasPrev {
			r.Time = w.tPrev
		}
	}
	if w.hasL {
		r.Level = level(w.lv)
	}
	return true, false
}

// load8 is b[i:i+8] as a little-endian word.
func load8(b []byte, i int) uint64 { return binary.LittleEndian.Uint64(b[i:]) }

// marks sets the high bit of each byte of w that is a or b. The lowest
// mark is the first such byte (the zero-byte test of each xor: its false
// marks lie only above a true one). walkText finds the end of every key
// and value with it, eight bytes at a time: a loop of comparisons a byte
// was the costliest part of reading a record.
func marks(w uint64, a, b byte) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	x, y := w^(lo*uint64(a)), w^(lo*uint64(b))
	return ((x-lo)&^x | (y-lo)&^y) & hi
}

// hasMsgKey reports whether s holds "msg=" (cheaper than strings.Contains,
// whose search for 'm' stops at every 'm' of a record).
func hasMsgKey(s string) bool {
	for i := 2; i < len(s); i++ {
		j := strings.IndexByte(s[i:], 'g')
		if j < 0 {
			return false
		}
		i += j
		if i+1 < len(s) && s[i+1] == '=' && s[i-2] == 'm' && s[i-1] == 's' {
			return true
		}
	}
	return false
}

// textState is what walkText keeps between keys.
type textState struct {
	cleared  bool      // r is Record{UID: -1} and fields are set
	skipping bool      // the last msg of the vocabulary is skipped
	hasT     bool      // tv is set
	hasL     bool      // lv is set
	hasPrev  bool      // tPrev is set
	tv, lv   string    // the last time and level values
	tPrev    time.Time // the last time before tv that parses
}

// slogHead reads the time and the level slog's text handler starts a
// record with, when they are in the form it writes in UTC ("time=2026-12-
// 03T00:00:00.093Z level=INFO "), as the walk would (both bare words
// followed by a space), and returns where the walk goes on (0: not in that
// form). Every record has them: their search was a sixth of the walk.
func (w *textState) slogHead(b []byte) int {
	const t0, t1 = len("time="), len("time=2006-01-02T15:04:05.000Z")
	const l0 = t1 + len(" level=")
	if len(b) < l0+len("INFO ") || string(b[:t0]) != "time=" || b[t1] != ' ' || string(b[t1+1:l0]) != "level=" ||
		b[t0] == '"' || marks(load8(b, t0), ' ', ' ')|marks(load8(b, t0+8), ' ', ' ')|marks(load8(b, t0+16), ' ', ' ') != 0 {
		return 0
	}
	var n int
	switch string(b[l0 : l0+4]) {
	case "INFO", "WARN":
		n = 4
	case "ERRO", "DEBU":
		n = 5
	default:
		return 0
	}
	if len(b) <= l0+n || b[l0+n] != ' ' || n == 5 && b[l0+4] != 'R' && b[l0+4] != 'G' {
		return 0
	}
	w.time(unsafe.String(&b[t0], t1-t0))
	w.lv, w.hasL = unsafe.String(&b[l0], n), true
	return l0 + n
}

// clear makes r Record{UID: -1} before the first field is set.
func (w *textState) clear(r *Record) {
	*r = Record{} // (a clear, not a copy of a Record made on the stack)
	r.UID = -1
	w.cleared = true
}

// time notes time value v: the last one that parses is the record's.
func (w *textState) time(v string) {
	if w.hasT {
		if t, valid := parseTime(w.tv); valid {
			w.tPrev, w.hasPrev = t, true
		}
	}
	w.tv, w.hasT = v, true
}

// quoted reads the quoted value with escapes at the start of s and
// returns it and the rest of s after it; terminated is false when the
// quote does not end.
func quoted(s string) (v, rest string, terminated bool) {
	end := 1
	for end < len(s) && s[end] != '"' {
		if s[end] == '\\' {
			end++
		}
		end++
	}
	if end >= len(s) {
		return "", "", false
	}
	v = s[1:end]
	if u, err := strconv.Unquote(s[:end+1]); err == nil {
		v = u
	}
	return v, s[end+1:], true
}
