// Package dsn holds the SMTP Delivery Status Notification parameters of
// RFC 3461 — RET and ENVID at MAIL, NOTIFY and ORCPT at RCPT — as the SMTP
// server reads them, the queue keeps them and the SMTP client relays them,
// and the xtext encoding they travel in (RFC 3461 §4). It is small and
// written here: no Go library has it on its own.
package dsn

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// NOTIFY keywords (RFC 3461 §4.1).
const (
	Never   = "NEVER"
	Success = "SUCCESS"
	Failure = "FAILURE"
	Delay   = "DELAY"
)

// RET values (RFC 3461 §4.3).
const (
	Full = "FULL"
	Hdrs = "HDRS"
)

// Length limits: ENVID 100 octets (§4.4), ORCPT 500 (§4.2), as xtext.
const (
	maxEnvID = 100
	maxORCPT = 500
)

// ParseNotify checks a NOTIFY value and returns it canonical (upper case,
// in the order SUCCESS, FAILURE, DELAY): NEVER alone, or one or more of
// the others.
func ParseNotify(v string) (string, error) {
	seen := map[string]bool{}
	for _, k := range strings.Split(strings.ToUpper(v), ",") {
		switch k {
		case Never, Success, Failure, Delay:
			if seen[k] {
				return "", fmt.Errorf("NOTIFY=%s: %s given twice", v, k)
			}
			seen[k] = true
		default:
			return "", fmt.Errorf("NOTIFY=%s: %q is not NEVER, SUCCESS, FAILURE or DELAY", v, k)
		}
	}
	if seen[Never] {
		if len(seen) > 1 {
			return "", fmt.Errorf("NOTIFY=%s: NEVER with other keywords", v)
		}
		return Never, nil
	}
	var out []string
	for _, k := range []string{Success, Failure, Delay} {
		if seen[k] {
			out = append(out, k)
		}
	}
	return strings.Join(out, ","), nil
}

// Wants reports whether a NOTIFY value asks for a notice of kind
// (Success, Failure or Delay). An empty value is the default of RFC 3461
// §4.1: FAILURE and DELAY.
func Wants(notify, kind string) bool {
	if notify == "" {
		return kind == Failure || kind == Delay
	}
	for _, k := range strings.Split(notify, ",") {
		if k == kind {
			return true
		}
	}
	return false
}

// ParseRet checks a RET value.
func ParseRet(v string) (string, error) {
	switch u := strings.ToUpper(v); u {
	case Full, Hdrs:
		return u, nil
	}
	return "", fmt.Errorf("RET=%s: want FULL or HDRS", v)
}

// ParseEnvID decodes an ENVID value (xtext, at most 100 octets).
func ParseEnvID(v string) (string, error) {
	if len(v) > maxEnvID {
		return "", fmt.Errorf("ENVID longer than %d octets", maxEnvID)
	}
	s, err := DecodeXtext(v)
	if err != nil {
		return "", fmt.Errorf("ENVID: %w", err)
	}
	return s, nil
}

// ParseORCPT decodes an ORCPT value, "addr-type;xtext" (RFC 3461 §4.2),
// into "addr-type;address" with the type lower case: rfc822, or utf-8
// (RFC 6533 §3, whose address is UTF-8 with \x{..} escapes left as they
// are).
func ParseORCPT(v string) (string, error) {
	if len(v) > maxORCPT {
		return "", fmt.Errorf("ORCPT longer than %d octets", maxORCPT)
	}
	typ, addr, ok := strings.Cut(v, ";")
	if !ok || typ == "" || addr == "" {
		return "", fmt.Errorf("ORCPT=%s: want addr-type;address", v)
	}
	typ = strings.ToLower(typ)
	if typ != "rfc822" && typ != "utf-8" {
		return "", fmt.Errorf("ORCPT=%s: address type %q is not rfc822 or utf-8", v, typ)
	}
	a, err := DecodeXtext(addr)
	if err != nil {
		return "", fmt.Errorf("ORCPT: %w", err)
	}
	return typ + ";" + a, nil
}

// DecodeXtext decodes xtext (RFC 3461 §4): printable ASCII except "+"
// and "=", with "+XX" for any octet.
func DecodeXtext(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) {
				return "", fmt.Errorf("xtext %q: truncated +XX", s)
			}
			h, ok := unhex(s[i+1 : i+3])
			if !ok {
				return "", fmt.Errorf("xtext %q: bad +XX", s)
			}
			b.WriteByte(h)
			i += 2
		case c < '!' || c > '~' || c == '=':
			return "", fmt.Errorf("xtext %q: character %q", s, c)
		default:
			b.WriteByte(c)
		}
	}
	if !utf8.ValidString(b.String()) {
		return "", fmt.Errorf("xtext %q: not UTF-8", s)
	}
	return b.String(), nil
}

func unhex(s string) (byte, bool) {
	var v byte
	for i := 0; i < 2; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		default:
			return 0, false // RFC 3461: upper-case hex only
		}
	}
	return v, true
}

// EncodeXtext encodes s as xtext: "+", "=", controls, space and non-ASCII
// octets as "+XX".
func EncodeXtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// EncodeORCPT renders a stored "type;address" ORCPT for the wire.
func EncodeORCPT(v string) string {
	typ, addr, _ := strings.Cut(v, ";")
	return typ + ";" + EncodeXtext(addr)
}
