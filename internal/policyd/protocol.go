// Package policyd is the Postfix SMTP access policy delegation front door
// (Postfix SMTPD_POLICY_README): Postfix's smtpd connects, sends a request of
// name=value lines ended by an empty line, and reads back "action=..." and
// an empty line; one connection carries many requests. The reader is
// written by hand: it is a dozen lines of line framing that no library
// offers in this shape.
package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

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

// reader reads the requests of one connection, reusing its buffers from
// one request to the next: a request costs one allocation (its text, of
// which the request's strings are parts), not a map and a string per
// attribute.
type reader struct {
	r     *bufio.Reader
	text  []byte // the request's name=value lines, without line ends
	pairs []pair // offsets of each attribute in text, in order
}

// pair locates one attribute: the name is text[start:eq], the value
// text[eq+1:end].
type pair struct{ start, eq, end int32 }

// read reads one request: name=value lines up to an empty line. It
// returns io.EOF only at a clean end between requests.
func (rd *reader) read() error {
	rd.text, rd.pairs = rd.text[:0], rd.pairs[:0]
	total := 0
	for {
		line, err := rd.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > MaxLine {
			return fmt.Errorf("%w: line longer than %d bytes", ErrMalformed, MaxLine)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 && len(rd.pairs) == 0 {
				return io.EOF
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: connection closed inside a request", ErrMalformed)
			}
			return err
		}
		total += len(line)
		if total > MaxRequest {
			return fmt.Errorf("%w: request longer than %d bytes", ErrMalformed, MaxRequest)
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if len(rd.pairs) == 0 {
				return fmt.Errorf("%w: empty request", ErrMalformed)
			}
			return nil
		}
		eq := bytes.IndexByte(line, '=')
		if eq <= 0 {
			return fmt.Errorf("%w: line %q is not name=value", ErrMalformed, clip(string(line)))
		}
		if len(rd.pairs) >= MaxAttributes {
			return fmt.Errorf("%w: more than %d attributes", ErrMalformed, MaxAttributes)
		}
		p := pair{start: int32(len(rd.text))}
		p.eq = p.start + int32(eq)
		rd.text = append(rd.text, line...)
		p.end = int32(len(rd.text))
		rd.pairs = append(rd.pairs, p)
	}
}

// pending reports whether a whole further request is already buffered
// (the peer pipelines): its answer can go out in the same write.
func (rd *reader) pending() bool {
	n := rd.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := rd.r.Peek(n)
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// ReadAttrs reads one request: name=value lines up to an empty line. It
// returns io.EOF only at a clean end between requests.
func ReadAttrs(r *bufio.Reader) (map[string]string, error) {
	rd := reader{r: r}
	if err := rd.read(); err != nil {
		return nil, err
	}
	attrs := make(map[string]string, len(rd.pairs))
	for _, p := range rd.pairs {
		attrs[string(rd.text[p.start:p.eq])] = string(rd.text[p.eq+1 : p.end])
	}
	return attrs, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// The attributes the engine reads, by index into a fields array.
const (
	fRequest = iota
	fProtocolState
	fClientAddress
	fClientName
	fReverseClientName
	fHeloName
	fSender
	fRecipient
	fRecipientCount
	fSASLMethod
	fSASLUsername
	fEncryptionProtocol
	fQueueID
	fInstance
	fPolicyContext
	fServerAddress
	fServerPort
	fSize
	nFields
)

var fieldNames = [nFields]string{"request", "protocol_state", "client_address", "client_name", "reverse_client_name",
	"helo_name", "sender", "recipient", "recipient_count", "sasl_method", "sasl_username", "encryption_protocol",
	"queue_id", "instance", "policy_context", "server_address", "server_port", "size"}

// fieldOf returns the index of an attribute the engine reads, -1 for the
// others (a switch on string(b) does not allocate).
func fieldOf(name []byte) int {
	switch string(name) {
	case "request":
		return fRequest
	case "protocol_state":
		return fProtocolState
	case "client_address":
		return fClientAddress
	case "client_name":
		return fClientName
	case "reverse_client_name":
		return fReverseClientName
	case "helo_name":
		return fHeloName
	case "sender":
		return fSender
	case "recipient":
		return fRecipient
	case "recipient_count":
		return fRecipientCount
	case "sasl_method":
		return fSASLMethod
	case "sasl_username":
		return fSASLUsername
	case "encryption_protocol":
		return fEncryptionProtocol
	case "queue_id":
		return fQueueID
	case "instance":
		return fInstance
	case "policy_context":
		return fPolicyContext
	case "server_address":
		return fServerAddress
	case "server_port":
		return fServerPort
	case "size":
		return fSize
	}
	return -1
}

// request converts the request just read into req (overwritten whole).
// The request's strings share one allocation that holds only the values
// the engine reads (a fifth of a request's text: the garbage per request
// sets how often the collector runs, and requests that arrive during a
// collection wait longer); frequent values ("unknown", the stage names)
// are constants and take no room.
func (rd *reader) request(req *policy.Request) error {
	var at [nFields]pair
	for _, p := range rd.pairs {
		if i := fieldOf(rd.text[p.start:p.eq]); i >= 0 {
			at[i] = p // the last one wins, as in a map
		}
	}
	var f [nFields]string
	size := 0
	for i, p := range at {
		if p.end <= p.eq+1 { // absent or empty
			continue
		}
		if c, ok := common(rd.text[p.eq+1 : p.end]); ok {
			f[i], at[i] = c, pair{}
		} else {
			size += int(p.end - p.eq - 1)
		}
	}
	var b strings.Builder
	b.Grow(size)
	for _, p := range at {
		if p.end > p.eq+1 {
			b.Write(rd.text[p.eq+1 : p.end])
		}
	}
	vals, off := b.String(), 0
	for i, p := range at {
		if n := int(p.end - p.eq - 1); n > 0 {
			f[i] = vals[off : off+n]
			off += n
		}
	}
	return toRequest(&f, req)
}

// common returns the constant for a value many requests carry, so that
// it needs no copy (a switch on string(b) does not allocate).
func common(b []byte) (string, bool) {
	switch string(b) {
	case "smtpd_access_policy":
		return "smtpd_access_policy", true
	case "unknown":
		return "unknown", true
	case "RCPT":
		return "RCPT", true
	case "MAIL":
		return "MAIL", true
	case "DATA":
		return "DATA", true
	case "END-OF-MESSAGE":
		return "END-OF-MESSAGE", true
	case "CONNECT":
		return "CONNECT", true
	case "EHLO":
		return "EHLO", true
	case "0":
		return "0", true
	}
	return "", false
}

// ToRequest converts attributes to the engine's Request.
func ToRequest(a map[string]string) (*policy.Request, error) {
	var f [nFields]string
	for i, n := range fieldNames {
		f[i] = a[n]
	}
	req := new(policy.Request)
	if err := toRequest(&f, req); err != nil {
		return nil, err
	}
	return req, nil
}

func toRequest(a *[nFields]string, req *policy.Request) error {
	if a[fRequest] != "smtpd_access_policy" {
		return fmt.Errorf("%w: request=%q, want smtpd_access_policy", ErrMalformed, clip(a[fRequest]))
	}
	*req = policy.Request{
		Stage:        policy.Stage(strings.ToUpper(a[fProtocolState])),
		ClientName:   a[fClientName],
		ReverseName:  a[fReverseClientName],
		Helo:         a[fHeloName],
		Sender:       a[fSender],
		Recipient:    a[fRecipient],
		SASLMethod:   a[fSASLMethod],
		SASLUsername: a[fSASLUsername],
		TLS:          a[fEncryptionProtocol] != "",
		QueueID:      a[fQueueID],
		Instance:     a[fInstance],
		Listener:     a[fPolicyContext],
	}
	if req.Stage == "" {
		return fmt.Errorf("%w: no protocol_state", ErrMalformed)
	}
	if s := a[fClientAddress]; s != "" && s != "unknown" {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%w: client_address %q: %v", ErrMalformed, clip(s), err)
		}
		req.ClientAddress = ip.Unmap()
	}
	if s := a[fServerAddress]; s != "" && s != "unknown" {
		if ip, err := netip.ParseAddr(s); err == nil {
			req.ServerAddress = ip.Unmap()
		}
	}
	for _, i := range [...]int{fRecipientCount, fSize, fServerPort} {
		s := a[i]
		if s == "" {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return fmt.Errorf("%w: %s=%q: not a number", ErrMalformed, fieldNames[i], clip(s))
		}
		switch i {
		case fRecipientCount:
			req.RecipientCount = int(v)
		case fSize:
			req.Size = v
		case fServerPort:
			req.ServerPort = int(v)
		}
	}
	return nil
}

// FormatAction renders a verdict as the value of "action=" (access(5)
// actions): OK, DUNNO, PREPEND header, DEFER_IF_PERMIT text, or an SMTP
// reply "4xx/5xx x.y.z text".
func FormatAction(v policy.Verdict) string { return string(appendAction(nil, v)) }

// appendAction appends FormatAction(v) to b; the frequent answers (OK,
// DUNNO) allocate nothing.
func appendAction(b []byte, v policy.Verdict) []byte {
	switch v.Action {
	case policy.Permit:
		return append(b, "OK"...)
	case policy.Reject, policy.Defer:
		if v.Action == policy.Defer && v.IfPermit {
			b = append(b, "DEFER_IF_PERMIT "...)
		} else {
			code := v.Code
			switch {
			case v.Action == policy.Reject && (code < 500 || code > 599):
				code = 554
			case v.Action == policy.Defer && (code < 400 || code > 499):
				code = 450
			}
			b = strconv.AppendInt(b, int64(code), 10)
			b = append(b, ' ')
		}
		n := len(b)
		b = append(append(append(b, v.Enhanced...), ' '), v.Text...)
		t := bytes.TrimSpace(b[n:])
		return oneLineAt(b[:n+copy(b[n:], t)], n)
	}
	if v.Prepend != "" {
		b = append(b, "PREPEND "...)
		n := len(b)
		return oneLineAt(append(b, v.Prepend...), n)
	}
	return append(b, "DUNNO"...)
}

// oneLineAt turns the line breaks of b[n:] into spaces, in place, so that
// a client-supplied string cannot end the reply.
func oneLineAt(b []byte, n int) []byte {
	if !utf8.Valid(b[n:]) {
		return append(b[:n], oneLine(string(b[n:]))...) // as strings.Map: invalid bytes become U+FFFD
	}
	for i := n; i < len(b); i++ {
		if b[i] == '\r' || b[i] == '\n' {
			b[i] = ' '
		}
	}
	return b
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
