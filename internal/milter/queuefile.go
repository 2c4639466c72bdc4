package milter

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Postfix does not send the Received: header its pickup daemon writes for
// mail submitted with sendmail ("Received: by HOST (Postfix, from userid
// N)") to milters, and no milter macro carries the submitting uid. The
// header is in the queue file, which cleanup has written when it asks the
// milter at end of message; LocalUID reads it there. Postfix's queue file
// format (src/global/record.c) is a sequence of records: a type byte, a
// length in 7-bit groups (least significant first, high bit on all but the
// last), and that many bytes. No Go library reads it, and only the first
// header line after the start of the message content is needed, so this
// is written by hand.

// Record types (src/global/rec_type.h) this reader looks at.
const (
	recMesg = 'M' // start of message content
	recNorm = 'N' // a line of content
	recPtr  = 'p' // pointer to the next record, used by cleanup's edits
	recXtra = 'X' // end of message content
	recEnd  = 'E' // end of the queue file
)

// maxRecord bounds a record's length: content lines are at most
// line_length_limit (2048) long; envelope records are short.
const maxRecord = 1 << 20

// (Compiled on first use, as every package-level expression of a package
// `relayguard report` does not use: their compiling was part of every
// command's start.)
var fromUserid = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^Received: by \S+ \(Postfix, from userid (\d+)\)`) })

// ErrNotLocal says the message was not submitted with sendmail (its first
// header is not pickup's Received: line).
var ErrNotLocal = errors.New("not a local submission")

// LocalUID returns the uid Postfix's pickup recorded for queue file qid in
// queueDir (incoming/QID, or incoming/H/QID with hashed queues), ErrNotLocal
// when the message came another way, or an error naming the file.
func LocalUID(queueDir, qid string) (int, error) {
	if qid == "" || strings.ContainsAny(qid, "/.\x00") {
		return 0, fmt.Errorf("queue id %q: not a Postfix queue id", qid)
	}
	path := filepath.Join(queueDir, "incoming", qid)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// hash_queue_names may include incoming: one level of
		// subdirectories named by the queue id's characters.
		if m, _ := filepath.Glob(filepath.Join(queueDir, "incoming", "*", qid)); len(m) == 1 {
			path = m[0]
			f, err = os.Open(path)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("postfix queue file: %w", err)
	}
	defer f.Close()
	line, err := firstContentLine(f)
	if err != nil {
		return 0, fmt.Errorf("postfix queue file %s: %w", path, err)
	}
	m := fromUserid().FindStringSubmatch(line)
	if m == nil {
		return 0, ErrNotLocal
	}
	uid, err := strconv.Atoi(m[1])
	if err != nil || uid < 0 {
		return 0, fmt.Errorf("postfix queue file %s: userid %q", path, m[1])
	}
	return uid, nil
}

// firstContentLine returns the first line of message content: the first
// 'N' record after the 'M' record, following pointer records.
func firstContentLine(f *os.File) (string, error) {
	r := bufio.NewReader(f)
	inContent := false
	for jumps := 0; ; {
		typ, data, err := readRecord(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", errors.New("no message content")
			}
			return "", err
		}
		switch typ {
		case recMesg:
			inContent = true
		case recNorm:
			if inContent {
				return string(data), nil
			}
		case recPtr:
			off, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
			if err != nil || off < 0 {
				return "", fmt.Errorf("bad pointer record %q", data)
			}
			if off == 0 {
				continue
			}
			if jumps++; jumps > 100 {
				return "", errors.New("pointer records loop")
			}
			if _, err := f.Seek(off, io.SeekStart); err != nil {
				return "", err
			}
			r.Reset(f)
		case recXtra, recEnd:
			return "", errors.New("no message content")
		}
	}
}

func readRecord(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, unexpected(err)
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		if shift += 7; shift > 28 {
			return 0, nil, errors.New("bad record length")
		}
	}
	if n > maxRecord {
		return 0, nil, fmt.Errorf("record of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, unexpected(err)
	}
	return typ, data, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
