// Package queue is relayguard's durable spool and, on top of it, the
// delivery scheduler.
//
// On-disk layout under the spool directory:
//
//	tmp/<id>.msg, tmp/<id>.env.* files being written (garbage after a crash)
//	msg/<id>.msg                 the message as received (CRLF, Received header
//	                             prepended), then the envelope as JSON, then a
//	                             trailer line "RGSPOOL1 <data-size> <json-size>\n"
//	msg/<id>.env                 the envelope as last updated by the scheduler
//	                             (absent until the first update)
//
// A message is acknowledged (250 after DATA) only after its .msg file was
// written to tmp/, fsynced, renamed into msg/, and msg/ itself was fsynced:
// one file fsync per message, and one directory fsync shared by all the
// messages committed at the same moment (group commit). Keeping the first
// envelope inside the message file means a message is one atomic rename: it
// is either wholly there or not at all. An .env without its .msg is a
// leftover of a removal and is deleted when the spool is opened.
package queue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relayguard/relayguard/internal/safeio"
)

// RcptStatus is the delivery state of one recipient.
type RcptStatus string

// Recipient states.
const (
	StatusQueued    RcptStatus = "queued"
	StatusDelivered RcptStatus = "delivered"
	StatusFailed    RcptStatus = "failed"
	StatusHeld      RcptStatus = "held"
)

// Recipient is one envelope recipient and its delivery state.
type Recipient struct {
	Addr        string     `json:"addr"`
	Status      RcptStatus `json:"status"`
	Attempts    int        `json:"attempts,omitempty"`
	NextAttempt time.Time  `json:"next_attempt,omitzero"`
	LastError   string     `json:"last_error,omitempty"`
	LastCode    int        `json:"last_code,omitempty"`
	Updated     time.Time  `json:"updated,omitzero"`
	// DSN parameters of RFC 3461 given at RCPT: NOTIFY (canonical, "" when
	// not given) and ORCPT ("type;address", decoded).
	Notify string `json:"notify,omitempty"`
	ORcpt  string `json:"orcpt,omitempty"`
	// Relayed: delivered to a peer that does not offer DSN, so the
	// recipient's final fate is unknown (RFC 3461 §5.2.2 "relayed").
	Relayed bool `json:"relayed,omitempty"`

	// success is the Action of the SUCCESS notice this delivery round
	// owes the sender ("delivered" or "relayed"), "" for none; never
	// stored.
	success string
}

// Envelope is everything about a message except its bytes.
type Envelope struct {
	ID         string      `json:"id"`
	Received   time.Time   `json:"received"`
	From       string      `json:"from"` // "" is the null sender <>
	Recipients []Recipient `json:"recipients"`
	AuthUser   string      `json:"auth_user,omitempty"`
	ClientIP   string      `json:"client_ip,omitempty"`
	Helo       string      `json:"helo,omitempty"`
	Listener   string      `json:"listener,omitempty"`
	Mode       string      `json:"mode,omitempty"` // mx, submission, submissions, local
	SMTPUTF8   bool        `json:"smtputf8,omitempty"`
	Body8Bit   bool        `json:"body_8bit,omitempty"`
	Size       int64       `json:"size"`
	Held       bool        `json:"held,omitempty"`
	HoldReason string      `json:"hold_reason,omitempty"`
	Trusted    bool        `json:"trusted,omitempty"`
	// Headers are header fields added once the whole message was there
	// (the Authentication-Results of check_dmarc, the quarantine tag),
	// each ending in CRLF. They are kept here rather than rewriting the
	// message, and Spool.Open puts them in front of it for every reader.
	Headers string `json:"headers,omitempty"`
	// DSN parameters of RFC 3461 given at MAIL: RET (FULL or HDRS, "" when
	// not given) and ENVID (decoded).
	DSNRet   string `json:"dsn_ret,omitempty"`
	DSNEnvID string `json:"dsn_envid,omitempty"`
}

// FS is the file-system surface the spool writes through, so tests can
// inject failures (the idea of chasquid's safeio).
type FS interface {
	Create(path string) (File, error)
	Rename(from, to string) error
	SyncDir(dir string) error
}

// File is a writable, syncable file.
type File interface {
	io.Writer
	Sync() error
	Close() error
}

type osFS struct{}

func (osFS) Create(p string) (File, error) {
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
}
func (osFS) Rename(from, to string) error { return os.Rename(from, to) }
func (osFS) SyncDir(dir string) error     { return safeio.SyncDir(dir) }

// Spool is the durable message store.
type Spool struct {
	dir    string
	msgDir string
	tmpDir string
	fs     FS
	log    *slog.Logger

	groupWait time.Duration
	syncReq   chan chan error
	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup // the committer, waited for by Close

	mu   sync.Mutex
	subs []func(id string)
	gate func(env *Envelope) string

	lock *os.File // exclusive flock held by the owning server

	j *journal // the intake journal (journal.go); nil: every message is its own file
	// readOnly (OpenReadOnly): every change is refused; j, if set, is a
	// view of a running server's journal.
	readOnly bool
}

// OpenSpool opens (creating) the spool at dir and removes leftovers of
// messages that were never acknowledged. groupCommit is the longest time a
// writer waits for others to share its directory fsync.
//
// Messages up to journalMaxMessage are committed through the intake
// journal (journal.go): one fdatasync shared by all the sessions committing
// at the same moment.
func OpenSpool(dir string, groupCommit time.Duration, log *slog.Logger) (*Spool, error) {
	return openSpoolJournal(dir, groupCommit, log, osFS{}, true)
}

// openSpool opens a spool whose every message is its own file, written
// through fs (the tests that inject failures into those files).
func openSpool(dir string, groupCommit time.Duration, log *slog.Logger, fs FS) (*Spool, error) {
	return openSpoolJournal(dir, groupCommit, log, fs, false)
}

func openSpoolJournal(dir string, groupCommit time.Duration, log *slog.Logger, fs FS, withJournal bool) (*Spool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{
		dir: dir, msgDir: filepath.Join(dir, "msg"), tmpDir: filepath.Join(dir, "tmp"),
		fs: fs, log: log, groupWait: groupCommit,
		syncReq: make(chan chan error, 1024), done: make(chan struct{}),
	}
	for _, d := range []string{s.msgDir, s.tmpDir} {
		created := false
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			created = true
		}
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("spool %s: %w", d, err)
		}
		if created {
			// The new directory entry itself must survive a crash.
			if err := fs.SyncDir(dir); err != nil {
				return nil, fmt.Errorf("spool: fsync %s: %w", dir, err)
			}
		}
	}
	// Only one server owns a spool: recovery deletes half-written files,
	// which would destroy another live server's messages in flight.
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool %s is in use by another relayguard process (use the queue commands to inspect it): %w", dir, err)
	}
	s.lock = lock
	if err := s.recover(withJournal); err != nil {
		lock.Close()
		return nil, err
	}
	s.wg.Go(s.committer)
	if s.j != nil {
		s.wg.Go(s.j.committer)
		s.wg.Go(s.j.maintain)
	}
	return s, nil
}

// Dir is the spool directory.
func (s *Spool) Dir() string { return s.dir }

// Close stops the group committer; pending Puts fail. The messages still
// in the journal become msg/ files, as the queue commands of another
// process read them.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.wg.Wait()
		if s.j != nil && !s.readOnly {
			s.j.settle(true)
			// What could not be retired is replayed at the next open;
			// the removals recorded since the last tick are written so
			// that it does not bring those messages back.
			s.j.mu.Lock()
			if len(s.j.dels) > 0 && len(s.j.segs) > 0 {
				if sg, err := s.j.appendLocked(0, func(uint64) []byte { return nil }); err == nil {
					s.j.fdatasync(sg.f)
				}
			}
			for _, sg := range s.j.segs {
				sg.f.Close()
			}
			s.j.mu.Unlock()
		}
		if s.lock != nil {
			s.lock.Close()
		}
	})
	return nil
}

// recover removes tmp files, replays the journal (which a spool opened
// without one replays too, so that nothing it holds is left behind), and
// removes half-present messages.
func (s *Spool) recover(withJournal bool) error {
	tmp, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.tmpDir, err)
	}
	for _, e := range tmp {
		os.Remove(filepath.Join(s.tmpDir, e.Name()))
	}
	j, err := openJournal(s, filepath.Join(s.dir, "journal"), withJournal)
	if err != nil {
		return err
	}
	if withJournal {
		s.j = j
	}
	ents, err := os.ReadDir(s.msgDir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.msgDir, err)
	}
	have := map[string]int{}
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasSuffix(n, ".msg"):
			have[strings.TrimSuffix(n, ".msg")] |= 1
		case strings.HasSuffix(n, ".env"):
			have[strings.TrimSuffix(n, ".env")] |= 2
		}
	}
	for id, bits := range have {
		if bits&1 == 0 && (s.j == nil || s.j.idx[id] == nil) {
			s.log.Warn("spool: removing envelope without message", "id", id)
			os.Remove(filepath.Join(s.msgDir, id+".env"))
		}
	}
	return nil
}

// committer batches directory fsyncs of msg/: every request waiting when a
// sync starts is answered by that one sync.
func (s *Spool) committer() {
	for {
		batch, ok := gather(s.syncReq, s.done, s.groupWait)
		if !ok {
			return
		}
		err := s.fs.SyncDir(s.msgDir)
		if err != nil {
			err = fmt.Errorf("spool: fsync %s: %w", s.msgDir, err)
		}
		for _, r := range batch {
			r <- err
		}
	}
}

// gather waits for a first request on ch, then up to wait for others (the
// writers whose commit is under way), and takes whatever else is already
// waiting: the batch one sync answers. ok is false once done is closed.
func gather[T any](ch chan T, done chan struct{}, wait time.Duration) (batch []T, ok bool) {
	select {
	case <-done:
		return nil, false
	case r := <-ch:
		batch = append(batch, r)
	}
	if wait > 0 {
		timer := time.NewTimer(wait)
	collect:
		for {
			select {
			case r := <-ch:
				batch = append(batch, r)
			case <-timer.C:
				break collect
			}
		}
	}
	for {
		select {
		case r := <-ch:
			batch = append(batch, r)
		default:
			return batch, true
		}
	}
}

func (s *Spool) syncMsgDir(ctx context.Context) error {
	r := make(chan error, 1)
	select {
	case s.syncReq <- r:
	case <-s.done:
		return errors.New("spool: closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r:
		return err
	case <-s.done:
		return errors.New("spool: closed")
	}
}

// NewID returns a new, sortable message ID.
func NewID() string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%016x", time.Now().UnixNano()) + hex.EncodeToString(b[:])
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// writeFile writes a file in tmp/ through fill, fsyncs it, and renames it to dst.
func (s *Spool) writeFile(name, dst string, fill func(w io.Writer) (int64, error)) (int64, error) {
	tmp := filepath.Join(s.tmpDir, name)
	f, err := s.fs.Create(tmp)
	if err != nil {
		return 0, fmt.Errorf("spool: create %s: %w", tmp, err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	n, err := fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return n, fmt.Errorf("spool: write %s: %w", tmp, err)
	}
	if err := s.fs.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return n, fmt.Errorf("spool: rename %s: %w", tmp, err)
	}
	return n, nil
}

func (s *Spool) writeEnvelope(env *Envelope) error {
	b, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("spool: envelope %s: %w", env.ID, err)
	}
	_, err = s.writeFile(env.ID+".env."+hex.EncodeToString(randBytes(4)), filepath.Join(s.msgDir, env.ID+".env"),
		func(w io.Writer) (int64, error) { n, err := w.Write(b); return int64(n), err })
	return err
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Update rewrites an envelope durably (temp file, fsync, rename, dir fsync).
func (s *Spool) Update(env *Envelope) error {
	if !validID(env.ID) {
		return fmt.Errorf("spool: invalid message id %q", env.ID)
	}
	if s.readOnly {
		return errReadOnly
	}
	if err := s.writeEnvelope(env); err != nil {
		return err
	}
	if s.j != nil {
		// The file is there, durable or not: readers take the envelope
		// from it from now on, as they do for a message not in the
		// journal (else a failed directory fsync below left them the
		// envelope of the commit, whose delivered recipients are queued).
		s.j.updated(env.ID)
	}
	return s.syncMsgDir(context.Background())
}

// trailerMagic starts the last line of a .msg file.
const trailerMagic = "RGSPOOL1"

// Load reads one envelope: the last update if there is one, else the one
// stored with the message.
func (s *Spool) Load(id string) (*Envelope, error) {
	if !validID(id) {
		return nil, fmt.Errorf("spool: invalid message id %q", id)
	}
	if s.j != nil {
		if e, gone := s.j.get(id); gone {
			return nil, fmt.Errorf("spool: message %s: %w", id, os.ErrNotExist)
		} else if e != nil {
			b := e.json
			if e.hasEnv {
				var err error
				if b, err = os.ReadFile(filepath.Join(s.msgDir, id+".env")); err != nil {
					return nil, fmt.Errorf("spool: message %s: %w", id, err)
				}
			}
			var env Envelope
			if err := json.Unmarshal(b, &env); err != nil {
				return nil, fmt.Errorf("spool: envelope %s: %w", id, err)
			}
			return &env, nil
		}
	}
	// The message file first: an updated envelope without its message is
	// the leftover of a removal (or of `queue delete` in another process).
	f, err := os.Open(filepath.Join(s.msgDir, id+".msg"))
	if err != nil {
		return nil, fmt.Errorf("spool: message %s: %w", id, err)
	}
	defer f.Close()
	b, err := os.ReadFile(filepath.Join(s.msgDir, id+".env"))
	if errors.Is(err, os.ErrNotExist) {
		data, jsonLen, terr := readTrailer(f)
		if terr != nil {
			return nil, fmt.Errorf("spool: message %s: %w", id, terr)
		}
		b = make([]byte, jsonLen)
		if _, err := f.ReadAt(b, data); err != nil {
			return nil, fmt.Errorf("spool: message %s: envelope: %w", id, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("spool: message %s: %w", id, err)
	}
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("spool: envelope %s: %w", id, err)
	}
	return &env, nil
}

// readTrailer returns the size of the message data and of the envelope
// JSON that follows it.
func readTrailer(f *os.File) (dataSize, jsonLen int64, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	tail := int64(64)
	if st.Size() < tail {
		tail = st.Size()
	}
	buf := make([]byte, tail)
	if _, err := f.ReadAt(buf, st.Size()-tail); err != nil && err != io.EOF {
		return 0, 0, err
	}
	line := strings.TrimSuffix(string(buf), "\n")
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if _, err := fmt.Sscanf(line, trailerMagic+" %d %d", &dataSize, &jsonLen); err != nil {
		return 0, 0, fmt.Errorf("bad spool trailer %q", line)
	}
	if dataSize < 0 || jsonLen <= 0 || dataSize+jsonLen+int64(len(line))+1 != st.Size() {
		return 0, 0, fmt.Errorf("spool trailer %q does not match file size %d", line, st.Size())
	}
	return dataSize, jsonLen, nil
}

// Open returns the message bytes, with the envelope's Headers in front.
func (s *Spool) Open(id string) (io.ReadCloser, error) {
	if !validID(id) {
		return nil, fmt.Errorf("spool: invalid message id %q", id)
	}
	if s.j != nil {
		if e, gone := s.j.get(id); gone {
			return nil, fmt.Errorf("spool: message %s: %w", id, os.ErrNotExist)
		} else if e != nil {
			rc, err := e.open()
			if err != nil {
				return nil, fmt.Errorf("spool: envelope %s: %w", id, err)
			}
			return rc, nil
		}
	}
	f, err := os.Open(filepath.Join(s.msgDir, id+".msg"))
	if err != nil {
		return nil, fmt.Errorf("spool: message %s: %w", id, err)
	}
	n, jsonLen, err := readTrailer(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: message %s: %w", id, err)
	}
	var r io.Reader = io.NewSectionReader(f, 0, n)
	// The envelope stored with the message holds the added header fields
	// (they never change after the commit); decoded only when present.
	js := make([]byte, jsonLen)
	if _, err := f.ReadAt(js, n); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: message %s: envelope: %w", id, err)
	}
	if bytes.Contains(js, []byte(`"headers":`)) {
		var h struct {
			Headers string `json:"headers"`
		}
		if err := json.Unmarshal(js, &h); err != nil {
			f.Close()
			return nil, fmt.Errorf("spool: envelope %s: %w", id, err)
		}
		r = io.MultiReader(strings.NewReader(h.Headers), r)
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

// List returns every envelope in the spool, oldest first.
func (s *Spool) List() ([]*Envelope, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	var out []*Envelope
	for _, id := range ids {
		n := id + ".msg"
		env, err := s.Load(id)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed meanwhile
			}
			// One damaged file must not stop the queue: report it and
			// go on with the others.
			s.log.Error("spool: unreadable message skipped", "file", filepath.Join(s.msgDir, n), "err", err)
			continue
		}
		out = append(out, env)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ids lists the messages: the journal's (taken first, so that one moved
// to msg/ meanwhile is still seen) and the msg/ files.
func (s *Spool) ids() ([]string, error) {
	var ids []string
	seen := map[string]bool{}
	if s.j != nil {
		ids = s.j.ids()
		for _, id := range ids {
			seen[id] = true
		}
	}
	ents, err := os.ReadDir(s.msgDir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.msgDir, err)
	}
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".msg"); ok && !seen[id] {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Changed is when the spool last changed: the modification time of its
// message directory, which every change touches (a message or envelope is
// written as a rename into it, a removal unlinks from it). A reader that
// keeps envelopes in memory rescans only when this moved.
func (s *Spool) Changed() (time.Time, error) {
	fi, err := os.Stat(s.msgDir)
	if err != nil {
		return time.Time{}, fmt.Errorf("spool %s: %w", s.msgDir, err)
	}
	t := fi.ModTime()
	if s.j != nil {
		s.j.mu.Lock()
		if s.j.changed.After(t) {
			t = s.j.changed
		}
		s.j.mu.Unlock()
	}
	return t, nil
}

// Entry is a message in the spool and when its delivery state last
// changed: the modification time of its updated envelope, or zero while
// it has none (the envelope stored with the message, which never changes).
type Entry struct {
	ID      string
	Changed time.Time
}

// Entries lists the messages in the spool without reading them, in no
// particular order, so that a reader keeping envelopes in memory (the
// console's queue index) loads again only those that changed. Only the
// updated envelopes are stat'ed: a message file never changes once
// committed.
func (s *Spool) Entries() ([]Entry, error) {
	var jids []string
	if s.j != nil {
		jids = s.j.ids() // before the directory: see ids
	}
	ents, err := os.ReadDir(s.msgDir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", s.msgDir, err)
	}
	type seen struct {
		msg     bool
		changed time.Time
	}
	m := make(map[string]seen, len(ents)+len(jids))
	for _, id := range jids {
		m[id] = seen{msg: true}
	}
	for _, e := range ents {
		n := e.Name()
		if id, ok := strings.CutSuffix(n, ".msg"); ok {
			x := m[id]
			x.msg = true
			m[id] = x
			continue
		}
		id, ok := strings.CutSuffix(n, ".env")
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		x := m[id]
		x.changed = fi.ModTime()
		m[id] = x
	}
	out := make([]Entry, 0, len(m))
	for id, x := range m {
		if x.msg { // an envelope without its message is a removal's leftover
			out = append(out, Entry{ID: id, Changed: x.changed})
		}
	}
	return out, nil
}

// Remove deletes a delivered or deleted message: the .msg first, so that a crash in between
// leaves only an .env without its message (deleted at open) and never a
// message whose delivery state was forgotten (which would be delivered
// again).
func (s *Spool) Remove(id string) error {
	if !validID(id) {
		return fmt.Errorf("spool: invalid message id %q", id)
	}
	if s.readOnly {
		return errReadOnly
	}
	if s.j != nil {
		// A message still in the journal leaves a removal record there
		// (so that a replay does not bring it back) and no file, unless
		// an updated envelope or its retirement wrote one.
		if !s.j.remove(id) {
			return nil
		}
	}
	if err := os.Remove(filepath.Join(s.msgDir, id+".msg")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if err := os.Remove(filepath.Join(s.msgDir, id+".env")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	// No directory fsync: if a crash forgets the unlink, the message is
	// delivered again (at least once), and nothing is ever lost; this
	// is what Postfix does too.
	return nil
}

// SetGate sets a check asked about every message Commit stores, before its
// envelope is written: a non-empty reason stores the message held. The
// message is never visible unheld, so no rescan of the spool can start it
// (a hold decided after the commit left a window in which a rescan could
// deliver the mail of a suspended account).
func (s *Spool) SetGate(fn func(env *Envelope) string) {
	s.mu.Lock()
	s.gate = fn
	s.mu.Unlock()
}

// Subscribe registers fn to be called with the ID of every message stored
// from now on (the scheduler's wake-up).
func (s *Spool) Subscribe(fn func(id string)) {
	s.mu.Lock()
	s.subs = append(s.subs, fn)
	s.mu.Unlock()
}

// Free is the space, in bytes, that an unprivileged writer can still use on
// the spool's file system (statfs f_bavail), for the free-space check the
// SMTP server makes at MAIL.
func (s *Spool) Free() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.tmpDir, &st); err != nil {
		return 0, fmt.Errorf("spool: statfs %s: %w", s.tmpDir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
