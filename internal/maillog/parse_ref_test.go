package maillog

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The parser as it was before it was made faster (walkText scanning byte
// by byte, time.Parse, slog's level parser, a closure per key), kept as
// the reference the fast one is held to (TestParseSameAsReference,
// FuzzParseSameAsReference). walkJSON, atoi and levelOf are shared.

// aliases are messages older relayguard versions wrote for records of the
// vocabulary, so that their logs still read.
var refAliases = map[string]Kind{
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
func refIsRecord(s string) bool {
	return strings.HasPrefix(s, "time=") || strings.HasPrefix(s, `{"time":`)
}

// Parse reads one record written by Logger through slog's text or JSON
// handler (without a syslog header: give the message part of a syslog
// line). It reports false for anything that is not a record of the
// vocabulary. Unknown keys are ignored, so records with extra attributes
// (a logger's With) still read. Time is the record's own time key, or zero.
func refParse(s string) (Record, bool) {
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
			} else if kind, known := refAliases[v]; known {
				r.Kind, ok = kind, true
				if v == "queue: delivery expired" {
					r.Reason = "expired"
				} else if v == "ban expired" {
					r.Reason = "expired"
				}
			}
			return
		}
		r.refSet(k, v)
	}
	if strings.HasPrefix(s, "{") {
		walkJSON(s, set)
	} else {
		refWalkText(s, set)
	}
	if !ok {
		return Record{}, false
	}
	if r.Kind == KindBounced && r.Reason == "" {
		r.Reason = "failed permanently"
	}
	return r, true
}

func (r *Record) refSet(k, v string) {
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

// walkText calls fn for each key=value of a slog TextHandler record. Values
// are bare words or double-quoted with Go escapes (slog quotes with
// strconv.Quote). Bare words without "=" are skipped.
func refWalkText(s string, fn func(k, v string)) {
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
