package logwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/relayguard/relayguard/internal/faillog"
	"github.com/relayguard/relayguard/internal/logline"
)

// Position is where a follower stopped in a file: the file's inode, the
// offset just past the last complete line handed out, and the bytes before
// that offset (a fingerprint that tells a file truncated and rewritten past
// the offset from the file that was read).
type Position struct {
	Inode       uint64
	Offset      int64
	Fingerprint []byte
	Cursor      string // journal cursor, for the journal source
}

// PositionStore remembers positions across restarts (see SQLiteState).
type PositionStore interface {
	LoadPosition(ctx context.Context, key string) (Position, bool, error)
	SavePosition(ctx context.Context, key string, p Position) error
}

const fingerprintLen = 64

// Follower follows one log file like `tail -F`: it survives rotation by
// rename (it drains the old file, then opens the new one) and by copytruncate
// (it notices the truncation, reads what it had not yet read from the copy,
// and starts the truncated file from its beginning), and with a
// PositionStore it never re-reads old lines after a restart.
//
// Rotation is detected by polling (a stat every Poll) rather than inotify: it
// is one system call per interval, works on every filesystem, and keeps the
// latency from append to event under Poll. Truncation is detected both by
// size and by a fingerprint of the bytes before the read offset, checked
// after every read, so a file truncated and rewritten past the old offset
// between two polls is not mistaken for new lines.
type Follower struct {
	Path      string
	State     PositionStore // nil: no memory across restarts
	Poll      time.Duration // default 50ms
	FromStart bool          // without a saved position, start at the beginning instead of the end
	Log       *slog.Logger

	cur      *cursor
	ino      uint64
	old      *cursor
	oldUntil time.Time
	seen     map[uint64]bool // inodes of rotated files read to their end
	lastMod  time.Time       // modification time of the followed file at the last poll
	// waitCopy is a copy made by copytruncate whose original was not yet
	// truncated when we found it.
	waitCopy  *sibling
	waitUntil time.Time
	dirty     bool
	lastSave  time.Time
	saveLog   *faillog.Log
	buf       []byte
}

// cursor is a read position in one open file.
type cursor struct {
	f       *os.File
	off     int64  // offset of the first byte not yet handed out
	partial []byte // an incomplete last line, starting at off
	fp      []byte // the (up to) fingerprintLen bytes before off
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// Run follows the file until ctx is done, calling emit for every complete
// line (without its newline). It returns nil when ctx is cancelled.
func (t *Follower) Run(ctx context.Context, emit func(string)) error {
	if t.Poll <= 0 {
		t.Poll = 50 * time.Millisecond
	}
	if t.Log == nil {
		t.Log = slog.New(slog.DiscardHandler)
	}
	t.buf = make([]byte, 256<<10)
	defer func() {
		t.save(context.WithoutCancel(ctx), true)
		if t.cur != nil {
			t.cur.f.Close()
		}
		if t.old != nil {
			t.old.f.Close()
		}
	}()
	if err := t.start(ctx, emit); err != nil || t.cur == nil {
		return err
	}
	tick := time.NewTicker(t.Poll)
	defer tick.Stop()
	for {
		t.step(emit)
		t.save(ctx, false)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// start opens the file (waiting for it to exist) and positions it.
func (t *Follower) start(ctx context.Context, emit func(string)) error {
	var saved Position
	var have bool
	if t.State != nil {
		var err error
		saved, have, err = t.State.LoadPosition(ctx, t.key())
		if err != nil {
			return fmt.Errorf("logwatch: %s: load position: %w", t.Path, err)
		}
	}
	waiting, unreadable := false, false
	for {
		// Only a regular file can be followed by offset. A directory
		// opens and reads as an empty file that never grows; a named
		// pipe (rsyslog's ompipe) opens, but every ReadAt of it fails
		// (ESPIPE): either source said "following" and saw nothing.
		// (Checked before the open: a pipe's open waits for a writer.)
		if fi, err := os.Stat(t.Path); err == nil && !fi.Mode().IsRegular() {
			if fi.IsDir() {
				return fmt.Errorf("logwatch: %s: is a directory, not a log file", t.Path)
			}
			kind := fi.Mode().Type().String()
			switch {
			case fi.Mode()&os.ModeNamedPipe != 0:
				kind = "a named pipe"
			case fi.Mode()&os.ModeSocket != 0:
				kind = "a socket"
			case fi.Mode()&os.ModeDevice != 0:
				kind = "a device"
			}
			return fmt.Errorf("logwatch: %s: %s, not a regular file: it cannot be followed (give a pipe's lines to watch --stdin)", t.Path, kind)
		}
		f, err := os.Open(t.Path)
		if err == nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return fmt.Errorf("logwatch: %w", err)
			}
			t.cur, t.ino, t.lastMod = &cursor{f: f}, inode(fi), fi.ModTime()
			switch {
			case have && saved.Inode == t.ino && fi.Size() >= saved.Offset && matchesAt(f, saved.Offset, saved.Fingerprint):
				t.cur.off, t.cur.fp = saved.Offset, saved.Fingerprint
			case have && saved.Inode != t.ino:
				// Rotated by rename while we were not running: finish the
				// old file if it is still next to this one, then read this
				// one from its start.
				if mod, ok := t.drainRotated(saved, func(fi os.FileInfo) bool { return inode(fi) == saved.Inode }, emit); ok {
					t.drainNewer(mod, emit)
				}
			case have:
				// Truncated while we were not running (copytruncate).
				if mod, ok := t.drainRotated(saved, nil, emit); ok {
					t.drainNewer(mod, emit)
				}
			case t.FromStart:
			default:
				t.cur.off = fi.Size()
				t.cur.fp = readFingerprint(f, t.cur.off)
			}
			t.markAllSeen()
			t.dirty = true
			t.Log.Info("logwatch: following", "file", t.Path, "offset", t.cur.off)
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			// A file that is there and cannot be opened (permission
			// denied: a rotation made it with the wrong owner; a loop of
			// symbolic links) is the operator's to mend. It is said once,
			// as an error, and tried again: a source that stopped here for
			// good was a guard that banned nobody for this log until it
			// was restarted.
			if !unreadable {
				t.Log.Error("logwatch: cannot open the file; trying again until it can be read", "file", t.Path, "err", err)
				unreadable = true
			}
		} else if !waiting {
			// Said once: a misspelt path is otherwise a source that
			// silently watches nothing (a log that does not exist yet,
			// before the first rotation or the MTA's first start, is fine).
			t.Log.Warn("logwatch: waiting for the file to appear", "file", t.Path, "err", err)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(t.Poll):
		}
	}
}

func (t *Follower) key() string { return "file:" + t.Path }

func readFingerprint(f *os.File, off int64) []byte {
	start := max(off-fingerprintLen, 0)
	b := make([]byte, off-start)
	n, _ := f.ReadAt(b, start)
	return b[:n]
}

// matchesAt reports whether the bytes before off in f are fp.
func matchesAt(f *os.File, off int64, fp []byte) bool {
	if int64(len(fp)) > off {
		return false
	}
	if len(fp) == 0 {
		return true
	}
	var a [fingerprintLen]byte
	b := a[:len(fp)]
	n, _ := f.ReadAt(b, off-int64(len(fp)))
	return n == len(fp) && bytes.Equal(b, fp)
}

// samePrefix reports whether two files start with the same bytes (up to
// fingerprintLen); two empty files do not count.
func samePrefix(a, b *os.File) bool {
	var x, y [fingerprintLen]byte
	n, _ := a.ReadAt(x[:], 0)
	m, _ := b.ReadAt(y[:], 0)
	k := min(n, m)
	return k > 0 && bytes.Equal(x[:k], y[:k])
}

// tailBytes returns the last fingerprintLen bytes of the concatenation of parts.
func tailBytes(parts ...[]byte) []byte {
	out := make([]byte, 0, fingerprintLen)
	need := fingerprintLen
	for i := len(parts) - 1; i >= 0 && need > 0; i-- {
		p := parts[i]
		if len(p) > need {
			p = p[len(p)-need:]
		}
		out = append(append(make([]byte, 0, fingerprintLen), p...), out...)
		need -= len(p)
	}
	return out
}

// drainRotated looks next to the file for the rotated copy of what we were
// reading (name.1, name-20261123, ...) and hands out its lines after pos. A
// copy is recognised by the fingerprint, and with match also by its inode.
// A copytruncate'd copy that logrotate compressed at once (compress without
// delaycompress: name.1.gz) is read by content (see drainCompressed).
func (t *Follower) drainRotated(pos Position, match func(os.FileInfo) bool, emit func(string)) (time.Time, bool) {
	cands := t.siblings(func(fi os.FileInfo) bool {
		return fi.Size() >= pos.Offset && (match == nil || match(fi))
	})
	if mod, ok := t.drainPlain(cands, pos, emit); ok {
		return mod, true
	}
	if pos.Offset > 0 { // (without a fingerprint any file would match)
		return t.drainCompressed(pos, emit)
	}
	return time.Time{}, false
}

// drainPlain hands out the lines after pos of the first of cands (newest
// first) that holds pos's fingerprint.
func (t *Follower) drainPlain(cands []sibling, pos Position, emit func(string)) (time.Time, bool) {
	for i := len(cands) - 1; i >= 0; i-- { // newest first
		c := cands[i]
		f, err := os.Open(c.path)
		if err != nil {
			continue
		}
		if !matchesAt(f, pos.Offset, pos.Fingerprint) {
			f.Close()
			continue
		}
		t.Log.Info("logwatch: reading the rest of the rotated file", "file", c.path, "offset", pos.Offset)
		rc := &cursor{f: f, off: pos.Offset, fp: pos.Fingerprint}
		t.read(rc, emit)
		if len(rc.partial) > 0 {
			emit(string(rc.partial))
		}
		f.Close()
		t.markSeen(c.ino)
		return c.mod, true
	}
	return time.Time{}, false
}

// drainNewer reads, oldest first, every rotated sibling not read yet that
// was written at or after since: the files of rotations that happened
// between two polls (or while we were not running), after the one whose
// rest drainRotated read.
func (t *Follower) drainNewer(since time.Time, emit func(string)) {
	for _, c := range t.siblings(func(fi os.FileInfo) bool {
		return !fi.ModTime().Before(since) && !t.seen[inode(fi)] && inode(fi) != t.ino
	}) {
		f, err := os.Open(c.path)
		if err != nil {
			continue
		}
		if t.cur != nil && samePrefix(f, t.cur.f) {
			// A copy whose original is not truncated yet (copytruncate
			// copies, then truncates): wait for the truncation, then
			// read the copy (see step).
			f.Close()
			c := c
			t.waitCopy, t.waitUntil = &c, time.Now().Add(2*time.Second)
			return
		}
		t.Log.Info("logwatch: reading a file rotated between two polls", "file", c.path)
		rc := &cursor{f: f}
		t.read(rc, emit)
		if len(rc.partial) > 0 {
			emit(string(rc.partial))
		}
		f.Close()
		t.markSeen(c.ino)
	}
}

func (t *Follower) markSeen(ino uint64) {
	if t.seen == nil {
		t.seen = map[uint64]bool{}
	}
	t.seen[ino] = true
}

// markAllSeen marks every rotated file now next to ours as read, and forgets
// the inodes of files that are gone.
func (t *Follower) markAllSeen() {
	seen := map[uint64]bool{}
	for _, c := range t.siblings(func(os.FileInfo) bool { return true }) {
		seen[c.ino] = true
	}
	t.seen = seen
}

type sibling struct {
	path string
	mod  time.Time
	ino  uint64
}

// maxCompressedTries bounds how many compressed siblings (newest first) are
// decompressed looking for the rest of a copytruncate'd file.
const maxCompressedTries = 3

// drainCompressed looks for the rest of the file after pos in a compressed
// sibling (name.1.gz, name.1.xz; logline.Open reads them by content): with
// copytruncate and compress but no delaycompress, logrotate copies the file,
// truncates it and compresses the copy at once, so that the lines written
// just before the rotation are, by the time the truncation is noticed, only
// in the compressed copy. The copy is recognised by pos's fingerprint, the
// bytes before pos.Offset of its decompressed content.
func (t *Follower) drainCompressed(pos Position, emit func(string)) (time.Time, bool) {
	cands := t.siblingsOf(true, func(os.FileInfo) bool { return true })
	for i, tries := len(cands)-1, 0; i >= 0 && tries < maxCompressedTries; i, tries = i-1, tries+1 {
		c := cands[i]
		r, err := logline.Open(context.Background(), c.path)
		if err != nil {
			continue
		}
		skip := pos.Offset - int64(len(pos.Fingerprint))
		fp := make([]byte, len(pos.Fingerprint))
		if _, err := io.CopyN(io.Discard, r, skip); err != nil {
			r.Close()
			continue
		}
		if _, err := io.ReadFull(r, fp); err != nil || !bytes.Equal(fp, pos.Fingerprint) {
			r.Close()
			continue
		}
		t.Log.Info("logwatch: reading the rest of the rotated file", "file", c.path, "offset", pos.Offset)
		err = ReadLines(context.Background(), r, emit)
		r.Close()
		if err != nil {
			t.Log.Warn("logwatch: reading the rest of the rotated file", "file", c.path, "err", err)
		}
		t.markSeen(c.ino)
		return c.mod, true
	}
	return time.Time{}, false
}

// siblings lists the rotated files next to the followed one (name.1,
// name-20261123, ...; not compressed ones, see drainCompressed), oldest
// first.
func (t *Follower) siblings(keep func(os.FileInfo) bool) []sibling {
	return t.siblingsOf(false, keep)
}

// siblingsOf lists the rotated files next to the followed one that are
// compressed (by their names) or not, oldest first.
func (t *Follower) siblingsOf(compressed bool, keep func(os.FileInfo) bool) []sibling {
	dir, base := filepath.Split(t.Path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []sibling
	for _, e := range ents {
		n := e.Name()
		if n == base || !strings.HasPrefix(n, base) || (n[len(base)] != '.' && n[len(base)] != '-') {
			continue
		}
		// (bzip2 and zstd are left out: logline.Open does not read them)
		if z := strings.HasSuffix(n, ".gz") || strings.HasSuffix(n, ".xz"); z != compressed ||
			strings.HasSuffix(n, ".bz2") || strings.HasSuffix(n, ".zst") {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !keep(fi) {
			continue
		}
		out = append(out, sibling{filepath.Join(dir, n), fi.ModTime(), inode(fi)})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].mod.Equal(out[j].mod) {
			return out[i].mod.Before(out[j].mod)
		}
		return out[i].ino < out[j].ino // same clock tick: usually creation order
	})
	return out
}

// read reads c from its offset to the end of the file, emitting complete
// lines. It reports whether it handed anything out, and truncated when the
// bytes before the offset are no longer the ones read (the file was
// truncated and rewritten); then nothing of the new read is handed out.
func (t *Follower) read(c *cursor, emit func(string)) (got, truncated bool) {
	for {
		n, err := c.f.ReadAt(t.buf, c.off+int64(len(c.partial)))
		if n > 0 {
			// Checked after the read: if the file was truncated before
			// the read, the bytes before off have changed now.
			if !matchesAt(c.f, c.off, c.fp) {
				return got, true
			}
			got = true
			data := t.buf[:n]
			last := bytes.LastIndexByte(data, '\n')
			if last < 0 {
				c.partial = append(c.partial, data...)
			} else {
				c.fp = tailBytes(c.fp, c.partial, data[:last+1])
				for {
					i := bytes.IndexByte(data, '\n')
					if i < 0 {
						break
					}
					var line string
					if len(c.partial) > 0 {
						line = string(append(c.partial, data[:i]...))
						c.partial = c.partial[:0]
					} else {
						line = string(data[:i])
					}
					c.off += int64(len(line)) + 1
					emit(line)
					data = data[i+1:]
				}
				c.partial = append(c.partial, data...)
			}
		}
		if err != nil || n < len(t.buf) {
			return got, false
		}
	}
}

// step reads new lines and handles rotation.
func (t *Follower) step(emit func(string)) {
	if t.old != nil {
		t.read(t.old, emit)
		if time.Now().After(t.oldUntil) {
			if len(t.old.partial) > 0 {
				emit(string(t.old.partial))
			}
			t.old.f.Close()
			t.old = nil
		}
	}
	fi, statErr := os.Stat(t.Path)
	if statErr == nil && inode(fi) != t.ino {
		// Rotation by rename: drain the old file now and for a short while
		// longer (a writer may not have reopened yet), then follow the new.
		nf, err := os.Open(t.Path)
		if err == nil {
			if _, truncated := t.read(t.cur, emit); truncated {
				// Truncated by copytruncate, then rotated by rename,
				// between two polls.
				if _, ok := t.drainRotated(Position{Inode: t.ino, Offset: t.cur.off, Fingerprint: t.cur.fp}, nil, emit); ok {
					t.drainNewer(time.Time{}, emit)
				}
				t.cur.off, t.cur.partial, t.cur.fp = 0, t.cur.partial[:0], nil
				t.read(t.cur, emit)
			}
			t.Log.Info("logwatch: file rotated (rename)", "file", t.Path)
			if t.old != nil {
				t.old.f.Close()
			}
			t.old, t.oldUntil = t.cur, time.Now().Add(2*time.Second)
			t.markSeen(t.ino)
			nfi, err := nf.Stat()
			if err == nil {
				t.ino, t.lastMod = inode(nfi), nfi.ModTime()
			}
			t.drainNewer(time.Time{}, emit)
			t.cur = &cursor{f: nf}
			t.dirty = true
		}
	}
	if t.waitCopy != nil {
		f, err := os.Open(t.waitCopy.path)
		if err != nil {
			t.waitCopy = nil
		} else {
			same := samePrefix(f, t.cur.f)
			switch {
			case same && time.Now().Before(t.waitUntil):
				f.Close()
				return // truncation still to come
			case same:
				// Never truncated: the original still holds the lines.
				t.markSeen(t.waitCopy.ino)
			default:
				t.Log.Info("logwatch: reading a file rotated between two polls", "file", t.waitCopy.path)
				rc := &cursor{f: f}
				t.read(rc, emit)
				if len(rc.partial) > 0 {
					emit(string(rc.partial))
				}
				t.markSeen(t.waitCopy.ino)
				t.cur.off, t.cur.partial, t.cur.fp = 0, t.cur.partial[:0], nil
			}
			f.Close()
			t.waitCopy = nil
		}
	}
	got, truncated := t.read(t.cur, emit)
	if got {
		t.dirty = true
	}
	// Size from our own descriptor, after the read: the path may already
	// name another file, and a size taken before the read is stale.
	cfi, err := t.cur.f.Stat()
	if err != nil {
		return
	}
	if !truncated && cfi.Size() < t.cur.off+int64(len(t.cur.partial)) {
		truncated = true
	}
	if !truncated && t.cur.off == 0 && len(t.cur.partial) == 0 && !cfi.ModTime().Equal(t.lastMod) {
		// Empty, yet modified since the last poll: lines were written,
		// copied and truncated away between two polls.
		t.drainNewer(time.Time{}, emit)
	}
	if truncated {
		// copytruncate: the copy holds what we have not read yet.
		t.Log.Info("logwatch: file truncated (copytruncate)", "file", t.Path)
		if _, ok := t.drainRotated(Position{Inode: t.ino, Offset: t.cur.off, Fingerprint: t.cur.fp}, nil, emit); ok || t.cur.off == 0 {
			t.drainNewer(time.Time{}, emit)
		}
		t.cur.off, t.cur.partial, t.cur.fp = 0, t.cur.partial[:0], nil
		if t.waitCopy == nil {
			t.read(t.cur, emit)
		}
		t.dirty = true
		if cfi, err = t.cur.f.Stat(); err != nil {
			return
		}
	}
	t.lastMod = cfi.ModTime()
}

func (t *Follower) save(ctx context.Context, force bool) {
	if t.State == nil || t.cur == nil || !t.dirty {
		return
	}
	if !force && time.Since(t.lastSave) < time.Second {
		return
	}
	p := Position{Inode: t.ino, Offset: t.cur.off, Fingerprint: t.cur.fp}
	if t.saveLog == nil {
		t.saveLog = faillog.New(t.Log, "logwatch: save position of "+t.Path, "tried again every second")
	}
	// A failure waits its second too, and is logged through faillog: on
	// a full disk the position was tried, and a line logged, at every
	// 50 ms poll (20 lines a second into a disk already full).
	t.lastSave = time.Now()
	if err := t.State.SavePosition(ctx, t.key(), p); err != nil {
		t.saveLog.Fail(err, "file", t.Path)
		return
	}
	t.saveLog.OK()
	t.dirty = false
}

// ReadLines hands out every line of r (for stdin and replay); it returns at
// EOF or when ctx is done.
func ReadLines(ctx context.Context, r io.Reader, emit func(string)) error {
	br := newLineReader(r)
	for {
		if ctx.Err() != nil {
			return nil
		}
		line, err := br.next()
		if line != "" || err == nil {
			emit(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
