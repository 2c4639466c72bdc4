package queue

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Put stores a message durably and returns its ID. When Put returns nil the
// message and its envelope are on stable storage.
func (s *Spool) Put(ctx context.Context, env *Envelope, data io.Reader) (string, error) {
	w, err := s.Create(env.ID)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, data); err != nil {
		w.Abort()
		return "", fmt.Errorf("spool: message %s: %w", w.ID(), err)
	}
	if err := w.Commit(ctx, env); err != nil {
		return "", err
	}
	return env.ID, nil
}

// Writer streams one message into the spool. Nothing is visible until
// Commit; Abort (or a failed Commit) leaves nothing behind.
type Writer struct {
	s   *Spool
	id  string
	mem []byte // journal mode: the message so far; nil once on file
	tmp string
	f   File
	bw  *bufio.Writer
	n   int64
	err error
}

// Create starts a new message; id may be "" for a new ID.
func (s *Spool) Create(id string) (*Writer, error) {
	if id == "" {
		id = NewID()
	}
	if !validID(id) {
		return nil, fmt.Errorf("spool: invalid message id %q", id)
	}
	if s.readOnly {
		return nil, errReadOnly
	}
	w := &Writer{s: s, id: id, tmp: filepath.Join(s.tmpDir, id+".msg")}
	if s.j != nil {
		w.mem = make([]byte, 0, 4096)
		return w, nil
	}
	if err := w.toFile(); err != nil {
		return nil, err
	}
	return w, nil
}

// toFile moves the message to its own file in tmp/: always without the
// journal, else once it outgrows journalMaxMessage.
func (w *Writer) toFile() error {
	f, err := w.s.fs.Create(w.tmp)
	if err != nil {
		return fmt.Errorf("spool: create %s: %w", w.tmp, err)
	}
	w.f, w.bw = f, bufio.NewWriterSize(f, 32<<10)
	if len(w.mem) > 0 {
		if _, err := w.bw.Write(w.mem); err != nil {
			return fmt.Errorf("spool: write %s: %w", w.tmp, err)
		}
	}
	w.mem = nil
	return nil
}

// ID is the message's spool ID.
func (w *Writer) ID() string { return w.id }

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.mem != nil {
		if len(w.mem)+len(p) <= journalMaxMessage-4096 {
			w.mem = append(w.mem, p...)
			w.n += int64(len(p))
			return len(p), nil
		}
		if w.err = w.toFile(); w.err != nil {
			return 0, w.err
		}
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("spool: write %s: %w", w.tmp, err)
	}
	return n, w.err
}

// Open flushes what was written and returns a reader of it, for checks
// that read the message before it is committed (DKIM and DMARC at the end
// of DATA). Writing may go on after the reader is closed.
func (w *Writer) Open() (io.ReadCloser, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.mem != nil {
		return io.NopCloser(bytes.NewReader(w.mem[:len(w.mem):len(w.mem)])), nil
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("spool: write %s: %w", w.tmp, err)
		return nil, w.err
	}
	f, err := os.Open(w.tmp)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, 0, w.n), f}, nil
}

// Abort discards the message.
func (w *Writer) Abort() {
	w.mem = nil
	if w.bw == nil {
		return // never on file
	}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	os.Remove(w.tmp)
}

// Commit makes the message durable with its envelope: data fsynced and
// renamed, envelope written the same way, then the directory fsynced
// (shared with concurrent commits). Only after Commit returns nil may the
// message be acknowledged.
func (w *Writer) Commit(ctx context.Context, env *Envelope) error {
	s := w.s
	env.ID = w.id
	if env.Received.IsZero() {
		env.Received = time.Now().UTC()
	}
	for i := range env.Recipients {
		if env.Recipients[i].Status == "" {
			env.Recipients[i].Status = StatusQueued
		}
	}
	env.Size = w.n + int64(len(env.Headers))
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil && !env.Held {
		if reason := gate(env); reason != "" {
			holdEnv(env, reason)
		}
	}
	err := w.err
	if err == nil && w.mem != nil {
		return w.commitJournal(ctx, env)
	}
	if err == nil {
		var b []byte
		if b, err = json.Marshal(env); err == nil {
			_, err = fmt.Fprintf(w.bw, "%s\n%s %d %d\n", b, trailerMagic, w.n, len(b)+1)
		}
	}
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	if err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("spool: write %s: %w", w.tmp, err)
	}
	msg := filepath.Join(s.msgDir, w.id+".msg")
	if err := s.fs.Rename(w.tmp, msg); err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("spool: rename %s: %w", w.tmp, err)
	}
	if err := s.syncMsgDir(ctx); err != nil {
		os.Remove(msg)
		return err
	}
	s.notify(w.id)
	return nil
}

// commitJournal appends the message with its envelope to the journal and
// returns once an fdatasync covered it.
func (w *Writer) commitJournal(ctx context.Context, env *Envelope) error {
	b, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("spool: envelope %s: %w", w.id, err)
	}
	dataLen := len(w.mem)
	payload := append(w.mem, b...)
	payload = append(payload, '\n')
	payload = fmt.Appendf(payload, "%s %d %d\n", trailerMagic, dataLen, len(b)+1)
	w.mem = nil
	if err := w.s.j.commit(ctx, w.id, payload, dataLen, payload[dataLen:dataLen+len(b)]); err != nil {
		return fmt.Errorf("spool: commit %s: %w", w.id, err)
	}
	w.s.notify(w.id)
	return nil
}

// notify tells the subscribers about a new message.
func (s *Spool) notify(id string) {
	s.mu.Lock()
	subs := s.subs
	s.mu.Unlock()
	for _, fn := range subs {
		fn(id)
	}
}
