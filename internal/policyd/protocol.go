// Package policyd is the Postfix SMTP access policy delegation front door
// (Postfix SMTPD_POLICY_README): Postfix's smtpd connects, sends a request of
// name=value lines ended by an empty line, and reads back "action=..." and
// an empty line; one connection carries many requests. The reader is
// written by hand: it is a dozen lines of line framing that no library
// offers in this shape.
package policyd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/policy"
)

// Limits on one request. Postfix's requests are a few hundred bytes; the
// longest attributes are certificate subjects and issuers.
const (
	MaxLine       = 4096
	MaxAttributes = 100
	MaxRequest    = 64 << 10
)

// Attributes are the request attributes Postfix sends, up to Postfix 3.8
// (SMTPD_POLICY_README "Protocol description"). Others are ignored.
var Attributes = []string{
	"request", "protocol_state", "protocol_name", "helo_name", "queue_id", "sender", "recipient",
	"recipient_count", "client_address", "client_name", "reverse_client_name", "instance",
	"sasl_method", "sasl_username", "sasl_sender", "size", "ccert_subject", "ccert_issuer",
	"ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol", "encryption_cipher",
	"encryption_keysize", "etrn_domain", "stress", "client_port", "policy_context",
	"server_address", "server_port", "compatibility_level", "mail_version",
}

// ErrMalformed wraps every protocol violation; the connection must be closed.
var ErrMalformed = errors.New("malformed policy request")

// ReadAttrs reads one request: name=value lines up to an empty line. It
// returns io.EOF only at a clean end between requests.
func ReadAttrs(r *bufio.Reader) (map[string]string, error) {
	attrs := map[string]string{}
	total, lines := 0, 0
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > MaxLine {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrMalformed, MaxLine)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 && len(attrs) == 0 {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: connection closed inside a request", ErrMalformed)
			}
			return nil, err
		}
		total += len(line)
		if total > MaxRequest {
			return nil, fmt.Errorf("%w: request longer than %d bytes", ErrMalformed, MaxRequest)
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
		if s == "" {
			if len(attrs) == 0 {
				return nil, fmt.Errorf("%w: empty request", ErrMalformed)
			}
			return attrs, nil
		}
		name, value, ok := strings.Cut(s, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%w: line %q is not name=value", ErrMalformed, clip(s))
		}
		if lines++; lines > MaxAttributes {
			return nil, fmt.Errorf("%w: more than %d attributes", ErrMalformed, MaxAttributes)
		}
		attrs[name] = value
	}
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// ToRequest converts attributes to the engine's Request.
func ToRequest(a map[string]string) (*policy.Request, error) {
	if a["request"] != "smtpd_access_policy" {
		return nil, fmt.Errorf("%w: request=%q, want smtpd_access_policy", ErrMalformed, clip(a["request"]))
	}
	req := &policy.Request{
		Stage:        policy.Stage(strings.ToUpper(a["protocol_state"])),
		ClientName:   a["client_name"],
		ReverseName:  a["reverse_client_name"],
		Helo:         a["helo_name"],
		Sender:       a["sender"],
		Recipient:    a["recipient"],
		SASLMethod:   a["sasl_method"],
		SASLUsername: a["sasl_username"],
		TLS:          a["encryption_protocol"] != "",
		QueueID:      a["queue_id"],
		Instance:     a["instance"],
		Listener:     a["policy_context"],
	}
	if req.Stage == "" {
		return nil, fmt.Errorf("%w: no protocol_state", ErrMalformed)
	}
	if s := a["client_address"]; s != "" && s != "unknown" {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: client_address %q: %v", ErrMalformed, clip(s), err)
		}
		req.ClientAddress = ip.Unmap()
	}
	if s := a["server_address"]; s != "" && s != "unknown" {
		if ip, err := netip.ParseAddr(s); err == nil {
			req.ServerAddress = ip.Unmap()
		}
	}
	for _, f := range []struct {
		name string
		set  func(int64)
	}{
		{"recipient_count", func(v int64) { req.RecipientCount = int(v) }},
		{"size", func(v int64) { req.Size = v }},
		{"server_port", func(v int64) { req.ServerPort = int(v) }},
	} {
		if s := a[f.name]; s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("%w: %s=%q: not a number", ErrMalformed, f.name, clip(s))
			}
			f.set(v)
		}
	}
	return req, nil
}

// FormatAction renders a verdict as the value of "action=" (access(5)
// actions): OK, DUNNO, PREPEND header, DEFER_IF_PERMIT text, or an SMTP
// reply "4xx/5xx x.y.z text".
func FormatAction(v policy.Verdict) string {
	switch v.Action {
	case policy.Permit:
		return "OK"
	case policy.Reject, policy.Defer:
		text := oneLine(strings.TrimSpace(v.Enhanced + " " + v.Text))
		if v.Action == policy.Defer && v.IfPermit {
			return "DEFER_IF_PERMIT " + text
		}
		code := v.Code
		switch {
		case v.Action == policy.Reject && (code < 500 || code > 599):
			code = 554
		case v.Action == policy.Defer && (code < 400 || code > 499):
			code = 450
		}
		return strconv.Itoa(code) + " " + text
	}
	if v.Prepend != "" {
		return "PREPEND " + oneLine(v.Prepend)
	}
	return "DUNNO"
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// WriteAttrs writes a request in the wire format (for clients and tests).
func WriteAttrs(w io.Writer, a map[string]string) error {
	var b strings.Builder
	for _, k := range Attributes {
		if v, ok := a[k]; ok {
			b.WriteString(k + "=" + v + "\n")
		}
	}
	for k, v := range a {
		if !known[k] {
			b.WriteString(k + "=" + v + "\n")
		}
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

var known = func() map[string]bool {
	m := map[string]bool{}
	for _, a := range Attributes {
		m[a] = true
	}
	return m
}()
