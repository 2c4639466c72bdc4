package msgauth

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// maxField bounds one header field held while deciding whether to drop
// it; a longer field is passed on as it is.
const maxField = 64 << 10

// AuthResultsFilter copies a message to an io.Writer and drops, from its
// header, the Authentication-Results fields that claim authserv-id id. RFC
// 8601 §5: a receiver removes such fields that arrive from outside, so that
// what downstream filters read under its name is only what it wrote. The
// body and every other field pass unchanged. It is a stream filter (the
// SMTP server writes the message through it into the spool as it
// arrives), hence written here rather than on a parsed message.
type AuthResultsFilter struct {
	w     io.Writer
	id    string
	body  bool   // past the header
	line  []byte // partial line
	field []byte // current field, first line and continuations, held for the decision
	// An overlong field is decided on what was held of it (the
	// authserv-id comes first) and its rest is then passed or dropped as
	// it streams by, up to the next field.
	long    bool
	drop    bool // the long field is being dropped
	midLine bool // inside a line of the long field whose start went by
	Removed int  // fields dropped
}

// NewAuthResultsFilter returns a filter writing to w for authserv-id id
// (compared case-insensitively).
func NewAuthResultsFilter(w io.Writer, id string) *AuthResultsFilter {
	return &AuthResultsFilter{w: w, id: strings.TrimSuffix(strings.ToLower(id), ".")}
}

// Write implements io.Writer.
func (f *AuthResultsFilter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if f.body {
			if _, err := f.w.Write(p); err != nil {
				return 0, err
			}
			return n, nil
		}
		i := bytes.IndexByte(p, '\n')
		if f.midLine {
			chunk := p
			if i >= 0 {
				chunk, p = p[:i+1], p[i+1:]
				f.midLine = false
			} else {
				p = nil
			}
			if err := f.longWrite(chunk); err != nil {
				return 0, err
			}
			continue
		}
		if i < 0 {
			f.line = append(f.line, p...)
			if len(f.line)+len(f.field) > maxField {
				if err := f.overlong(); err != nil {
					return 0, err
				}
			}
			return n, nil
		}
		f.line = append(f.line, p[:i+1]...)
		p = p[i+1:]
		if err := f.endLine(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func continuation(line []byte) bool { return line[0] == ' ' || line[0] == '\t' }

// endLine handles one complete header line.
func (f *AuthResultsFilter) endLine() error {
	line := f.line
	f.line = nil
	switch {
	case continuation(line) && f.long:
		return f.longWrite(line)
	case continuation(line) && f.field != nil:
		f.field = append(f.field, line...)
		if len(f.field) > maxField {
			return f.overlong()
		}
		return nil
	case len(bytes.TrimRight(line, "\r\n")) == 0:
		// The empty line: the header ends.
		if err := f.flushField(); err != nil {
			return err
		}
		f.body = true
		_, err := f.w.Write(line)
		return err
	}
	if err := f.flushField(); err != nil {
		return err
	}
	f.field = line
	return nil
}

// overlong decides a field that grew past maxField on what is held of it
// (with the partial line), and streams the rest.
func (f *AuthResultsFilter) overlong() error {
	if len(f.line) > 0 && !continuation(f.line) {
		// A new field starts with an overlong line: decide the old one.
		if err := f.flushField(); err != nil {
			return err
		}
	}
	held := append(f.field, f.line...)
	f.field, f.line = nil, nil
	f.midLine = len(held) > 0 && held[len(held)-1] != '\n'
	if !f.long {
		f.long, f.drop = true, f.ours(held)
	}
	return f.longWrite(held)
}

func (f *AuthResultsFilter) longWrite(b []byte) error {
	if f.drop {
		return nil
	}
	_, err := f.w.Write(b)
	return err
}

// ours reports whether a (possibly partial) field is an
// Authentication-Results field claiming our authserv-id.
func (f *AuthResultsFilter) ours(fl []byte) bool {
	name, value, ok := bytes.Cut(fl, []byte(":"))
	if !ok || !strings.EqualFold(strings.TrimSpace(string(name)), "Authentication-Results") {
		return false
	}
	return AuthservID(string(value)) == f.id
}

// flushField ends the field in progress: writes the held field, or drops
// it if it is one of ours.
func (f *AuthResultsFilter) flushField() error {
	if f.long {
		if f.drop {
			f.Removed++
		}
		f.long, f.drop = false, false
		return nil
	}
	fl := f.field
	f.field = nil
	if fl == nil {
		return nil
	}
	if f.ours(fl) {
		f.Removed++
		return nil
	}
	_, err := f.w.Write(fl)
	return err
}

// Close writes what is still held (a message whose header never ended).
func (f *AuthResultsFilter) Close() error {
	if f.body {
		return nil
	}
	if len(f.line) > 0 {
		if err := f.endLine(); err != nil {
			return err
		}
	}
	return f.flushField()
}

// ClaimedAuthResults returns the positions (1-based, counting only
// Authentication-Results fields, as the milter protocol's header change
// does) of the Authentication-Results fields in the header read from r
// that claim authserv-id id: what a front door that cannot filter the
// message as it streams (the milter) asks Postfix to delete.
func ClaimedAuthResults(r io.Reader, id string) []int {
	_, fields, _ := readHeader(bufio.NewReader(r))
	id = strings.TrimSuffix(strings.ToLower(id), ".")
	var out []int
	n := 0
	for _, f := range fields {
		if !strings.EqualFold(f.name, "Authentication-Results") {
			continue
		}
		n++
		if AuthservID(f.value()) == id {
			out = append(out, n)
		}
	}
	return out
}
