package maillog

import (
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"github.com/relayguard/relayguard/internal/logline"
)

// A key is one of the vocabulary's keys (keyNone: any other), by which a
// record's field is set (setKey): keyOf's string switch is made once per
// key, or not at all where the key is known (walkText's predicted keys).
type key uint8

const (
	keyNone key = iota
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
	// The keys walkText reads itself (setKey: time only), after the
	// fields' (walkText's test for a field's key is k < keyMsg).
	keyMsg
	keyTime
	keyLevel
)

// keyOf is key k's key (keyNone: not one of the vocabulary's).
func keyOf(k string) key {
	switch k {
	case "msg":
		return keyMsg
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

// stringFields are the offsets in a Record of the fields that are the
// key's value as it is (0: a field setKey reads the value into): a
// field set without setKey's call (walkText's loop keeps its registers)
// nor its switch.
var stringFields = func() (t [keyLevel + 1]uintptr) {
	var r Record
	for k, f := range map[key]*string{
		keyCID: &r.CID, keyListener: &r.Listener, keyHelo: &r.Helo, keyUser: &r.User, keyMechanism: &r.Mech,
		keyReason: &r.Reason, keyRule: &r.Rule, keyCode: &r.Code, keyRcpt: &r.Rcpt,
		keyText:  &r.Text, // (and "command": serve's non-SMTP record before maillog)
		keyAfter: &r.After, keyErr: &r.Err, keyID: &r.ID, keyFrom: &r.From, keyRelay: &r.Relay, keyReply: &r.Reply,
		keyDSNID: &r.DSNID, keyLimit: &r.Limit, keyValue: &r.Value, keyStage: &r.Stage, keyAction: &r.Action,
		keyExe: &r.Exe, keyCmdline: &r.Cmdline, keyCwd: &r.Cwd, keyParentCmdline: &r.Parent,
	} {
		t[k] = uintptr(unsafe.Pointer(f)) - uintptr(unsafe.Pointer(&r))
	}
	return t
}()

// setKey sets key k's field to v.
func (r *Record) setKey(k key, v string) {
	if off := stringFields[k]; off != 0 {
		*(*string)(unsafe.Add(unsafe.Pointer(r), off)) = v
		return
	}
	r.setValue(k, v)
}

// setValue sets the field of key k, one that is not a string field
// (stringFields), from its value v.
func (r *Record) setValue(k key, v string) {
	switch k {
	case keyTime:
		if t, ok := parseTime(v); ok {
			r.Time = t
		}
	case keyLevel:
		r.Level = level(v)
	case keyClient:
		if a, ok := parseAddr(v); ok {
			r.Client = a
		}
	case keyNrcpt:
		r.Nrcpt = atoi(v)
	case keySize:
		r.Size, _ = strconv.ParseInt(v, 10, 64)
	case keyAttempt:
		r.Attempt = atoi(v)
	case keyRetryIn:
		r.RetryIn, _ = time.ParseDuration(v)
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
	case keyPPID:
		r.PPID = atoi(v)
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
