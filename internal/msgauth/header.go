package msgauth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/relayguard/relayguard/internal/address"
)

// maxHeader bounds the header section read into memory. smtpd refuses
// messages larger than max_message_size anyway; this keeps a message whose
// "header" never ends from being held whole.
const maxHeader = 1 << 20

// field is one header field as it appears in the message: name, colon,
// value and folded continuation lines, with the line endings.
type field struct {
	name string // as written
	raw  []byte
}

// value is the unfolded field body (RFC 5322 §2.2.3), trimmed.
func (f field) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte(":"))
	s := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
	return strings.TrimSpace(s)
}

// readHeader reads the header section and the empty line after it. The
// fields are split here rather than by net/textproto because signing needs
// every field in order, with its exact bytes and its repetitions, and a
// malformed line must not stop the message from being handled (it is
// skipped: it cannot be signed or looked at).
func readHeader(br *bufio.Reader) (raw []byte, fields []field, err error) {
	var buf bytes.Buffer
	var starts []int // offset in buf of each field's first line
	var names []string
	atLineStart := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return nil, nil, err
		}
		start := buf.Len()
		buf.Write(line)
		if buf.Len() > maxHeader {
			return nil, nil, fmt.Errorf("header longer than %d octets", maxHeader)
		}
		if atLineStart && len(line) > 0 {
			trim := bytes.TrimRight(line, "\r\n")
			switch {
			case len(trim) == 0 && line[len(line)-1] == '\n':
				// The empty line ends the header.
				return buf.Bytes(), split(buf.Bytes(), start, starts, names), nil
			case line[0] == ' ' || line[0] == '\t':
				// continuation of the previous field
			default:
				name, _, ok := bytes.Cut(trim, []byte(":"))
				if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
					name = nil // not a field: skipped
				}
				starts = append(starts, start)
				names = append(names, string(name))
			}
		}
		atLineStart = err != bufio.ErrBufferFull
		if err == io.EOF {
			return buf.Bytes(), split(buf.Bytes(), buf.Len(), starts, names), nil
		}
	}
}

// split cuts the header bytes all[:end] at the fields' starts.
func split(all []byte, end int, starts []int, names []string) []field {
	var out []field
	for i, s := range starts {
		e := end
		if i+1 < len(starts) {
			e = starts[i+1]
		}
		if names[i] != "" {
			out = append(out, field{name: names[i], raw: all[s:e]})
		}
	}
	return out
}

// count returns how many fields are named name (case-insensitively).
func count(fields []field, name string) int {
	n := 0
	for _, f := range fields {
		if strings.EqualFold(f.name, name) {
			n++
		}
	}
	return n
}

// ErrNoAuthor is wrapped by the errors about a message without a single
// author domain (no From:, several From: fields, authors in several
// domains): such a message cannot be signed, and DMARC cannot judge it.
var ErrNoAuthor = errors.New("no usable From: field")

// addrParser reads From: fields without failing on an encoded display
// name in an unknown charset: only the addresses matter here.
var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// FromDomain returns the author domain (RFC 7489 §3.1.1): the domain of
// the address in the message's single From: field, as a lower-case A-label.
// A message with no From:, several From: fields, or addresses in more than
// one domain has none.
func fromDomain(fields []field) (string, error) {
	var from []field
	for _, f := range fields {
		if strings.EqualFold(f.name, "From") {
			from = append(from, f)
		}
	}
	if len(from) != 1 {
		return "", fmt.Errorf("%w: %d From fields", ErrNoAuthor, len(from))
	}
	v := from[0].value()
	list, err := addrParser.ParseList(v)
	if err != nil || len(list) == 0 {
		return "", fmt.Errorf("%w: %q: %v", ErrNoAuthor, truncate(v, 80), err)
	}
	dom := ""
	for _, a := range list {
		at := strings.LastIndexByte(a.Address, '@')
		if at < 0 {
			return "", fmt.Errorf("%w: %q has no domain", ErrNoAuthor, truncate(a.Address, 80))
		}
		d, err := address.CanonicalDomain(a.Address[at+1:])
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoAuthor, err)
		}
		if dom != "" && d != dom {
			return "", fmt.Errorf("%w: authors in %s and %s", ErrNoAuthor, dom, d)
		}
		dom = d
	}
	return dom, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
