package maillog

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
)

// A key is one of the vocabulary's keys other than msg (keyNone: any
// other), by which a record's field is set (setKey): keyOf's string
// switch is made once per key, or not at all where the key is known
// (a kind's usual keys, kindTemplate).
type key uint8

const (
	keyNone key = iota
	keyTime
	keyLevel
	keyCID
	keyClient
	keyListener
	keyHelo
	keyUser
	keyMechanism
	keyReason
	keyRule
	keyCode
	keyRcpt
	keyText
	keyAfter
	keyErr
	keyID
	keyFrom
	keyNrcpt
	keySize
	keyRelay
	keyAttempt
	keyReply
	keyRetryIn
	keyDSNID
	keyLimit
	keyValue
	keyPrefix
	keyUntil
	keyCount
	keyTLS
	keyMessages
	keyBadCommands
	keyAuthFailures
	keyDuration
	keyStage
	keyAction
	keyUID
	keyDst
	keySrcPort
	keyPID
	keyExe
	keyCmdline
	keyCwd
	keyPPID
	keyParentCmdline
)

// keyOf is key k's key (keyNone: not one of the vocabulary's).
func keyOf(k string) key {
	switch k {
	case "time":
		return keyTime
	case "level":
		return keyLevel
	case "cid":
		return keyCID
	case "client":
		return keyClient
	case "listener":
		return keyListener
	case "helo":
		return keyHelo
	case "user":
		return keyUser
	case "mechanism":
		return keyMechanism
	case "reason":
		return keyReason
	case "rule":
		return keyRule
	case "code":
		return keyCode
	case "rcpt":
		return keyRcpt
	case "text", "command":
		return keyText
	case "after":
		return keyAfter
	case "err":
		return keyErr
	case "id":
		return keyID
	case "from":
		return keyFrom
	case "nrcpt":
		return keyNrcpt
	case "size":
		return keySize
	case "relay":
		return keyRelay
	case "attempt":
		return keyAttempt
	case "reply":
		return keyReply
	case "retry_in":
		return keyRetryIn
	case "dsn_id":
		return keyDSNID
	case "limit":
		return keyLimit
	case "value":
		return keyValue
	case "prefix":
		return keyPrefix
	case "until":
		return keyUntil
	case "count":
		return keyCount
	case "tls":
		return keyTLS
	case "messages":
		return keyMessages
	case "bad_commands":
		return keyBadCommands
	case "auth_failures":
		return keyAuthFailures
	case "duration":
		return keyDuration
	case "stage":
		return keyStage
	case "action":
		return keyAction
	case "uid":
		return keyUID
	case "dst":
		return keyDst
	case "src_port":
		return keySrcPort
	case "pid":
		return keyPID
	case "exe":
		return keyExe
	case "cmdline":
		return keyCmdline
	case "cwd":
		return keyCwd
	case "ppid":
		return keyPPID
	case "parent_cmdline":
		return keyParentCmdline
	}
	return keyNone
}

// setKey sets key k's field to v.
func (r *Record) setKey(k key, v string) {
	switch k {
	case keyTime:
		if t, ok := parseTime(v); ok {
			r.Time = t
		}
	case keyLevel:
		r.Level = level(v)
	case keyCID:
		r.CID = v
	case keyClient:
		if a, ok := parseAddr(v); ok {
			r.Client = a
		}
	case keyListener:
		r.Listener = v
	case keyHelo:
		r.Helo = v
	case keyUser:
		r.User = v
	case keyMechanism:
		r.Mech = v
	case keyReason:
		r.Reason = v
	case keyRule:
		r.Rule = v
	case keyCode:
		r.Code = v
	case keyRcpt:
		r.Rcpt = v
	case keyText:
		// command: serve's non-SMTP record before maillog
		r.Text = v
	case keyAfter:
		r.After = v
	case keyErr:
		r.Err = v
	case keyID:
		r.ID = v
	case keyFrom:
		r.From = v
	case keyNrcpt:
		r.Nrcpt = atoi(v)
	case keySize:
		r.Size, _ = strconv.ParseInt(v, 10, 64)
	case keyRelay:
		r.Relay = v
	case keyAttempt:
		r.Attempt = atoi(v)
	case keyReply:
		r.Reply = v
	case keyRetryIn:
		r.RetryIn, _ = time.ParseDuration(v)
	case keyDSNID:
		r.DSNID = v
	case keyLimit:
		r.Limit = v
	case keyValue:
		r.Value = v
	case keyPrefix:
		if p, err := netip.ParsePrefix(v); err == nil {
			r.Prefix = p
		} else if a, err := netip.ParseAddr(v); err == nil {
			r.Prefix = netip.PrefixFrom(a, a.BitLen())
		}
	case keyUntil:
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			r.Until = t
		}
	case keyCount:
		r.Count = atoi(v)
	case keyTLS:
		r.TLS = v == "true"
	case keyMessages:
		r.Messages = atoi(v)
	case keyBadCommands:
		r.BadCmds = atoi(v)
	case keyAuthFailures:
		r.AuthFails = atoi(v)
	case keyDuration:
		r.Duration, _ = time.ParseDuration(v)
	case keyStage:
		r.Stage = v
	case keyAction:
		r.Action = v
	case keyUID:
		if n, err := strconv.Atoi(v); err == nil {
			r.UID = n
		}
	case keyDst:
		if ap, err := netip.ParseAddrPort(v); err == nil {
			r.Dst = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	case keySrcPort:
		r.SrcPort = atoi(v)
	case keyPID:
		r.PID = atoi(v)
	case keyExe:
		r.Exe = v
	case keyCmdline:
		r.Cmdline = v
	case keyCwd:
		r.Cwd = v
	case keyPPID:
		r.PPID = atoi(v)
	case keyParentCmdline:
		r.Parent = v
	}
}

// parseAddr is netip.ParseAddr(v).Unmap(), with the dotted quad of an
// IPv4 client (most records' client key) read by hand.
func parseAddr(v string) (netip.Addr, bool) {
	if a, n, ok := logline.DottedQuad(v); ok && n == len(v) {
		return a, true
	}
	a, err := netip.ParseAddr(v)
	return a.Unmap(), err == nil
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}
