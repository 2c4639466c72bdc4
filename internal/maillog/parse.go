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
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	var r Record
	r.UID = -1
	ok := false
	set := func(k, v string) {
		if k == "msg" {
			if kind, known := kindByMsg[v]; known {
				r.Kind, ok = kind, true
			} else if kind, known := aliases[v]; known {
				r.Kind, ok = kind, true
				if v == "queue: delivery expired" {
					r.Reason = "expired"
				} else if v == "ban expired" {
					r.Reason = "expired"
				}
			}
			return
		}
		r.set(k, v)
	}
	if strings.HasPrefix(s, "{") {
		walkJSON(s, set)
	} else {
		walkText(s, set)
	}
	if !ok {
		return Record{}, false
	}
	if r.Kind == KindBounced && r.Reason == "" {
		r.Reason = "failed permanently"
	}
	return r, true
}

func (r *Record) set(k, v string) {
	switch k {
	case "time":
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			r.Time = t
		}
	case "level":
		r.Level = levelOf(v)
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
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// walkText calls fn for each key=value of a slog TextHandler record. Values
// are bare words or double-quoted with Go escapes (slog quotes with
// strconv.Quote). Bare words without "=" are skipped.
func walkText(s string, fn func(k, v string)) {
	for len(s) > 0 {
		for len(s) > 0 && s[0] == ' ' {
			s = s[1:]
		}
		i := 0
		for i < len(s) && s[i] != '=' && s[i] != ' ' {
			i++
		}
		if i >= len(s) {
			return
		}
		if s[i] == ' ' { // a bare word
			s = s[i:]
			continue
		}
		k := s[:i]
		s = s[i+1:]
		var v string
		if len(s) > 0 && s[0] == '"' {
			end, esc := 1, false
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					esc = true
					end++
				}
				end++
			}
			if end >= len(s) { // unterminated (a line cut short): stop
				return
			} else {
				v = s[1:end]
				if esc {
					if u, err := strconv.Unquote(s[:end+1]); err == nil {
						v = u
					}
				}
				s = s[end+1:]
			}
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			v, s = s[:sp], s[sp:]
		}
		fn(k, v)
	}
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
