package maillog

import (
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"
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
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	*r = Record{UID: -1}
	var ok bool
	if strings.HasPrefix(s, "{") {
		walkJSON(s, func(k, v string) {
			if r.set(k, v) {
				ok = true
			}
		})
	} else {
		ok = walkText(s, r)
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

// msg sets the record's kind from its message and reports whether the
// message is one of the vocabulary's.
func (r *Record) msg(v string) bool {
	if kind, known := kindByMsg[v]; known {
		r.Kind = kind
		return true
	}
	kind, known := aliases[v]
	if !known {
		return false
	}
	r.Kind = kind
	if v == "queue: delivery expired" || v == "ban expired" {
		r.Reason = "expired"
	}
	return true
}

// set sets key k's field to v; it reports whether k is "msg" with a
// message of the vocabulary (the record's kind).
func (r *Record) set(k, v string) bool {
	switch k {
	case "msg":
		return r.msg(v)
	case "time":
		if t, ok := parseTime(v); ok {
			r.Time = t
		}
	case "level":
		r.Level = level(v)
	case "cid":
		r.CID = v
	case "client":
		if a, err := netip.ParseAddr(v); err == nil {
			r.Client = a.Unmap()
		}
	case "listener":
		r.Listener = v
	case "helo":
		r.Helo = v
	case "user":
		r.User = v
	case "mechanism":
		r.Mech = v
	case "reason":
		r.Reason = v
	case "rule":
		r.Rule = v
	case "code":
		r.Code = v
	case "rcpt":
		r.Rcpt = v
	case "text", "command": // command: serve's non-SMTP record before maillog
		r.Text = v
	case "after":
		r.After = v
	case "err":
		r.Err = v
	case "id":
		r.ID = v
	case "from":
		r.From = v
	case "nrcpt":
		r.Nrcpt = atoi(v)
	case "size":
		r.Size, _ = strconv.ParseInt(v, 10, 64)
	case "relay":
		r.Relay = v
	case "attempt":
		r.Attempt = atoi(v)
	case "reply":
		r.Reply = v
	case "retry_in":
		r.RetryIn, _ = time.ParseDuration(v)
	case "dsn_id":
		r.DSNID = v
	case "limit":
		r.Limit = v
	case "value":
		r.Value = v
	case "prefix":
		if p, err := netip.ParsePrefix(v); err == nil {
			r.Prefix = p
		} else if a, err := netip.ParseAddr(v); err == nil {
			r.Prefix = netip.PrefixFrom(a, a.BitLen())
		}
	case "until":
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			r.Until = t
		}
	case "count":
		r.Count = atoi(v)
	case "tls":
		r.TLS = v == "true"
	case "messages":
		r.Messages = atoi(v)
	case "bad_commands":
		r.BadCmds = atoi(v)
	case "auth_failures":
		r.AuthFails = atoi(v)
	case "duration":
		r.Duration, _ = time.ParseDuration(v)
	case "stage":
		r.Stage = v
	case "action":
		r.Action = v
	case "uid":
		if n, err := strconv.Atoi(v); err == nil {
			r.UID = n
		}
	case "dst":
		if ap, err := netip.ParseAddrPort(v); err == nil {
			r.Dst = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	case "src_port":
		r.SrcPort = atoi(v)
	case "pid":
		r.PID = atoi(v)
	case "exe":
		r.Exe = v
	case "cmdline":
		r.Cmdline = v
	case "cwd":
		r.Cwd = v
	case "ppid":
		r.PPID = atoi(v)
	case "parent_cmdline":
		r.Parent = v
	}
	return false
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// walkText sets r's fields from the key=value pairs of a slog TextHandler
// record and reports whether its msg is one of the vocabulary's (a later
// msg key decides, as any later key does). Values are bare words or
// double-quoted with Go escapes (slog quotes with strconv.Quote). Bare
// words without "=" are skipped; an unterminated quote (a line cut short)
// ends the record.
func walkText(s string, r *Record) bool {
	ok := false
	for len(s) > 0 {
		for len(s) > 0 && s[0] == ' ' {
			s = s[1:]
		}
		i := 0
		for i < len(s) && s[i] != '=' && s[i] != ' ' {
			i++
		}
		if i >= len(s) {
			break
		}
		if s[i] == ' ' { // a bare word
			s = s[i:]
			continue
		}
		k := s[:i]
		s = s[i+1:]
		var v string
		if len(s) > 0 && s[0] == '"' {
			end := strings.IndexByte(s[1:], '"') + 1
			if end == 0 { // unterminated (a line cut short)
				break
			}
			if strings.IndexByte(s[1:end], '\\') < 0 {
				v, s = s[1:end], s[end+1:]
			} else {
				var terminated bool
				if v, s, terminated = quoted(s); !terminated {
					break
				}
			}
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			v, s = s[:sp], s[sp:]
		}
		if k == "msg" {
			if r.msg(v) { // (a later unknown msg does not undo a known one)
				ok = true
			}
		} else {
			r.set(k, v)
		}
	}
	return ok
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
// time.Date value time.Parse builds.
func parseTime(s string) (time.Time, bool) {
	n := len(s)
	if n < len("2006-01-02T15:04:05Z") || s[n-1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return parseTimeSlow(s)
	}
	num := func(s string) int {
		v := 0
		for i := 0; i < len(s); i++ {
			c := s[i] - '0'
			if c > 9 {
				return -1
			}
			v = v*10 + int(c)
		}
		return v
	}
	year, month, day := num(s[0:4]), num(s[5:7]), num(s[8:10])
	hour, min, sec := num(s[11:13]), num(s[14:16]), num(s[17:19])
	nsec := 0
	if frac := s[19 : n-1]; frac != "" {
		// "." and 1 to 9 digits, scaled to nanoseconds
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return parseTimeSlow(s)
		}
		if nsec = num(frac[1:]); nsec < 0 {
			return parseTimeSlow(s)
		}
		for range 10 - len(frac) {
			nsec *= 10
		}
	}
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59 {
		return parseTimeSlow(s)
	}
	return time.Date(year, time.Month(month), day, hour, min, sec, nsec, time.UTC), true
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
