package logline

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Open opens a log file for reading: "-" is standard input; a file is
// recognised as gzip (RFC 1952 section 2.3.1: 1f 8b) or xz (the xz file
// format's magic FD '7zXZ' 00) by its first bytes, not by its name, so a
// rotated "mail.log.1" that logrotate compressed in place still reads.
// gzip is decoded with compress/gzip; xz through the xz(1) program (the
// standard library has no xz decoder; Debian's xz-utils provides it).
// A saved `journalctl -o json` export (plain or inside gzip/xz) is also
// recognised by content, once per file: its first line is a JSON object
// with journald's __CURSOR or __REALTIME_TIMESTAMP field. Each entry is
// then turned by ParseJournal (the live journal reader's converter) into
// one RFC 3339 syslog line that Parser.Parse reads back as the same Line.
// This is the one opener of `watch`, `report` and `egress report`.
// Standard input is recognised the same way (`cat mail.log.1.gz | report -`
// read the compressed bytes as text lines, found nothing and exited 0); it
// is not closed.
func Open(ctx context.Context, name string) (io.ReadCloser, error) {
	var f io.ReadCloser = stdin{}
	if name != "-" {
		var err error
		if f, err = os.Open(name); err != nil {
			return nil, err
		}
	}
	br := bufio.NewReaderSize(f, 256<<10)
	magic, _ := br.Peek(6)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", Name(name), err)
		}
		return &multiCloser{Reader: journalOrText(bufio.NewReaderSize(gzipReader{zr}, 256<<10)), closers: []io.Closer{f}}, nil
	case bytes.Equal(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		cmd := exec.CommandContext(ctx, "xz", "-dc")
		cmd.Stdin = br
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			f.Close()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: running xz -dc (install xz-utils): %w", Name(name), err)
		}
		x := &xzReader{out: out, cmd: cmd, f: f, stderr: &stderr}
		x.Reader = journalOrText(bufio.NewReaderSize(xzOutput{x}, 256<<10))
		return x, nil
	}
	r := journalOrText(br)
	_, text := r.(*bufio.Reader)
	return &multiCloser{Reader: r, closers: []io.Closer{f}, plain: text && regular(f)}, nil
}

// Name is how an error or a note names the input Open was given: "-" is
// "standard input" ("relayguard: -: gzip: unexpected EOF" named nothing
// an operator would recognise).
func Name(name string) string {
	if name == "-" {
		return "standard input"
	}
	return name
}

// regular reports whether f is a regular file, one that PlainFile's
// readers may map and read from its start. A named pipe (a FIFO, or
// the /dev/fd/N of `watch --replay <(zcat ...)`) is an *os.File too, but
// its size is 0 and what Open peeked is gone from it: mapped, it read as
// empty (lines=0, exit 0).
func regular(f io.Reader) bool {
	osf, ok := f.(*os.File)
	if !ok {
		return false
	}
	fi, err := osf.Stat()
	return err == nil && fi.Mode().IsRegular()
}

// stdin is standard input for Open: read, never closed (the process may
// read it again, or not own it).
type stdin struct{}

func (stdin) Read(p []byte) (int, error) { return os.Stdin.Read(p) }
func (stdin) Close() error               { return nil }

type multiCloser struct {
	io.Reader
	closers []io.Closer
	plain   bool // the file's own bytes, plain text (PlainFile)
}

func (m *multiCloser) Close() error {
	var errs []error
	for _, c := range m.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// A damaged compressed file is an error of the reading, not of Close: the
// readers of Open (report, watch --replay, egress report, audit, the
// follower's rotated siblings) stop at the first read error, and several of
// them never look at Close's. The error does not name the file; like a
// journal export's "line N is not JSON", the caller names it.

// gzipReader reads a gzip stream; a truncated or damaged one is "gzip: ...".
// (gzip.Reader reports a truncation as io.ErrUnexpectedEOF, which a reader
// using io.ReadFull would take for a short last read and ignore.)
type gzipReader struct{ zr *gzip.Reader }

func (g gzipReader) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("gzip: %w", err)
	}
	return n, err
}

type xzReader struct {
	io.Reader
	out    io.ReadCloser // xz's standard output
	waited bool          // xz was waited for
	end    error         // what a read after that returns: io.EOF, xz's failure, os.ErrClosed
	cmd    *exec.Cmd
	f      io.Closer
	stderr *bytes.Buffer
}

// Close closes xz's output before it waits for xz: a reader that stops
// before the end (report's firstTime reads one line) leaves xz blocked on
// a full pipe, which would never exit. xz then fails on the closed pipe;
// that is not an error of the file's. A damaged file's error was the
// read's (xzOutput).
func (x *xzReader) Close() error {
	x.out.Close()
	if !x.waited {
		x.waited, x.end = true, os.ErrClosed
		_ = x.cmd.Wait()
	}
	return x.f.Close()
}

// xzOutput reads xz's output; at its end it waits for xz, and a failure of
// xz's (a damaged or truncated file) is the read's error in place of
// io.EOF: "xz -dc: exit status 1: xz: (stdin): Unexpected end of input".
type xzOutput struct{ x *xzReader }

func (o xzOutput) Read(p []byte) (int, error) {
	x := o.x
	if x.waited {
		return 0, x.end
	}
	n, err := x.out.Read(p)
	if err == io.EOF {
		x.waited, x.end = true, io.EOF
		if werr := x.cmd.Wait(); werr != nil {
			x.end = fmt.Errorf("xz -dc: %v: %s", werr, strings.TrimSpace(x.stderr.String()))
		}
		return n, x.end
	}
	return n, err
}

// journalEntry is the part of journalctl's JSON export (`journalctl -o
// json`) that is read. MESSAGE is a string, or an array of byte values
// when it is not valid UTF-8.
type journalEntry struct {
	Message    json.RawMessage `json:"MESSAGE"`
	Identifier string          `json:"SYSLOG_IDENTIFIER"`
	SyslogPID  string          `json:"SYSLOG_PID"`
	PID        string          `json:"_PID"`
	Hostname   string          `json:"_HOSTNAME"`
	Realtime   string          `json:"__REALTIME_TIMESTAMP"`
	Cursor     string          `json:"__CURSOR"`
}

// ParseJournal parses one line of `journalctl -o json` into a Line (time in
// loc; nil means time.Local; zero when the entry has no
// __REALTIME_TIMESTAMP) and the entry's cursor. It reports false for a line
// that is not a journal entry with a message.
func ParseJournal(line []byte, loc *time.Location) (Line, string, bool) {
	var e journalEntry
	if err := json.Unmarshal(line, &e); err != nil {
		return Line{}, "", false
	}
	msg, ok := journalString(e.Message)
	if !ok {
		return Line{}, e.Cursor, false
	}
	if loc == nil {
		loc = time.Local
	}
	var t time.Time
	if us, err := strconv.ParseInt(e.Realtime, 10, 64); err == nil {
		t = time.UnixMicro(us).In(loc)
	}
	pid := e.SyslogPID
	if pid == "" {
		pid = e.PID
	}
	return Line{Time: t, Host: e.Hostname, Program: e.Identifier, PID: atoi(pid), Message: msg}, e.Cursor, true
}

func journalString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var ints []int
	if json.Unmarshal(raw, &ints) != nil {
		return "", false
	}
	b := make([]byte, len(ints))
	for i, v := range ints {
		b[i] = byte(v)
	}
	return string(b), true
}

// PlainFile returns the file under r, a reader from Open, when Open found
// it to be plain text (not compressed, not a journal export): a reader that
// maps the file into memory instead of reading it (logwatch's replay) takes
// it from there. The file is read from its start, whatever r has read.
func PlainFile(r io.Reader) (*os.File, bool) {
	m, ok := r.(*multiCloser)
	if !ok || !m.plain {
		return nil, false
	}
	f, ok := m.closers[0].(*os.File)
	return f, ok
}
