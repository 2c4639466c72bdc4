package logline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// journalOrText returns br itself for a text log, or a reader that turns a
// `journalctl -o json` export into syslog lines. The decision is taken
// once, on the first line (peeked, not consumed): syslog lines never start
// with '{', so a text log costs one one-byte Peek. relayguard's own JSON log
// (`{"time":...`) has no journald fields and stays text.
func journalOrText(br *bufio.Reader) io.Reader {
	if c, err := br.Peek(1); err != nil || c[0] != '{' {
		return br
	}
	// Peek the first line only, reading no further than it: a live stream
	// (standard input) must not wait for more data than one line.
	head, _ := br.Peek(br.Buffered())
	for bytes.IndexByte(head, '\n') < 0 && len(head) < br.Size() {
		more, err := br.Peek(len(head) + 1)
		head = more
		if err != nil {
			break
		}
		head, _ = br.Peek(br.Buffered())
	}
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		head = head[:i]
	}
	var e struct {
		Cursor   *string `json:"__CURSOR"`
		Realtime *string `json:"__REALTIME_TIMESTAMP"`
	}
	if json.Unmarshal(head, &e) != nil || (e.Cursor == nil && e.Realtime == nil) {
		return br
	}
	return &journalText{br: br}
}

// journalText reads journal JSON entries and yields one syslog line per
// entry with a message and a time:
//
//	2026-12-06T08:31:46.123456+01:00 host prog[pid]: message
//
// in time.Local, as the live journal reader (logwatch) dates entries, with
// microseconds (the journal's precision) so that Parser.Parse gives back the
// instant exactly. A message's own line breaks become spaces (a syslog line
// cannot hold them). A missing _HOSTNAME is written "-". Entries without
// MESSAGE or __REALTIME_TIMESTAMP are skipped, as the live reader skips them;
// a line that is not JSON is an error naming its line number.
type journalText struct {
	br  *bufio.Reader
	n   int // lines read
	out []byte
	off int
	err error
}

func (j *journalText) Read(p []byte) (int, error) {
	for j.off == len(j.out) {
		if j.err != nil {
			return 0, j.err
		}
		j.out, j.off = j.out[:0], 0
		j.fill()
	}
	n := copy(p, j.out[j.off:])
	j.off += n
	return n, nil
}

// fill converts entries until some output is ready or the input ends.
func (j *journalText) fill() {
	for len(j.out) < 64<<10 && j.err == nil {
		line, err := j.br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			j.n++
			l, _, ok := ParseJournal(line, nil)
			switch {
			case ok && !l.Time.IsZero():
				j.out = appendJournalLine(j.out, l)
			case !ok && !json.Valid(line):
				j.err = fmt.Errorf("journal JSON: line %d is not JSON", j.n)
				return
			}
		}
		if err != nil {
			j.err = err // io.EOF at the end
		}
	}
}

func appendJournalLine(b []byte, l Line) []byte {
	b = l.Time.AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, ' ')
	if l.Host == "" {
		b = append(b, '-')
	} else {
		b = append(b, l.Host...)
	}
	b = append(b, ' ')
	if l.Program != "" {
		b = append(b, l.Program...)
		if l.PID != 0 {
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(l.PID), 10)
			b = append(b, ']')
		}
		b = append(b, ": "...)
	}
	msg := l.Message
	if strings.ContainsAny(msg, "\r\n") {
		msg = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg)
	}
	b = append(b, msg...)
	return append(b, '\n')
}
