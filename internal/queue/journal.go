package queue

// The intake journal: how serve acknowledges a message with one fdatasync
// shared by every session committing at the same moment, instead of one
// file fsync per message.
//
// A committed message is appended, as one record, to the active segment
// file spool/journal/seg-<seq>: the bytes its msg/<id>.msg file would hold
// (data, envelope, trailer), behind a header with its ID, its length, the
// segment's sequence number and a CRC-32C. The committer goroutine answers
// every commit waiting when it starts with one fdatasync of the segment
// (group commit); only then is the message indexed, visible to the
// scheduler and acknowledged. Segments are preallocated, so that fdatasync
// writes the data and no inode size.
//
// The message is kept in memory while its segment lives: the scheduler
// reads and delivers it from there, and a delivered message leaves only a
// removal record (a tombstone, written without fsync) behind. A segment is
// rotated once it is journalAge old or journalSegSize long; a rotated
// segment is retired once its commits are all answered: each message still
// queued becomes an ordinary msg/ file (written, fsynced, renamed, one
// directory fsync for them all), then the segment is deleted. The operator's
// queue commands in another process see a message from then on.
//
// When the spool is opened, the segments left by a crash are replayed in
// order: every message record that no later tombstone removed is written
// to msg/ unless an identical file is there, and a removed message's file is
// deleted. A torn or unsynced tail fails its CRC and ends the segment's
// replay; nothing after it was acknowledged (records are appended in
// order, and a message is acknowledged only after an fdatasync that covers
// its record and every one before it).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relayguard/relayguard/internal/faillog"
)

const (
	// journalMaxMessage is the largest message (with its envelope) kept in
	// memory and committed through the journal; a larger one is written
	// to its own file as it arrives and fsynced alone.
	journalMaxMessage = 256 << 10
	journalSegSize    = 8 << 20
	journalAge        = 500 * time.Millisecond
	journalTick       = 100 * time.Millisecond

	recMagic  = "RGJ1"
	recHdrLen = 24 // magic 4, kind 1, id length 1, reserved 2, segment 8, payload length 4, CRC 4
	recMsg    = 1
	recDel    = 2
	segPrefix = "seg-"
)

// castagnoliTable is the CRC-32C table, made on first use: making it
// builds the SSE 4.2 code's shift tables (~1.2 M instructions), which every
// command paid at start, `relayguard report` and `version` too.
var castagnoliTable = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

type segment struct {
	seq     uint64
	path    string
	f       *os.File
	size    int64 // bytes written
	alloc   int64 // bytes preallocated
	pending int   // records appended whose commit is not answered yet
	created time.Time
	broken  bool // a failed write could not be taken back: append no more
	// synced: the end of the records the last successful fdatasync
	// covered; gen: bumped when a failed fdatasync takes back what was
	// written after synced (rewind), which fails the commits appended
	// before it.
	synced int64
	gen    uint64
}

// jentry is a message committed through the journal whose segment is
// still there.
type jentry struct {
	seg     *segment
	payload []byte // the msg file's bytes: data, envelope JSON, trailer
	dataLen int
	json    []byte // the envelope stored with the message (in payload)
	hasEnv  bool   // an updated envelope was written to msg/<id>.env
	// materialising: being written to msg/ by the retirement; removed:
	// Remove came meanwhile, the retirement deletes the file it wrote;
	// written: msg/<id>.msg was written by the retirement.
	materialising, removed, written bool
}

type syncReq struct {
	seg *segment
	r   chan error
}

type journal struct {
	s   *Spool
	dir string

	mu      sync.Mutex
	segs    []*segment // oldest first; the last is the active one
	nextSeq uint64
	idx     map[string]*jentry
	dels    []byte // tombstones not written yet: length byte, ID
	ndels   int
	changed time.Time

	syncReq chan syncReq
	// retireMu: one retirement at a time (the maintainer, settle).
	retireMu sync.Mutex
	// syncHook, when set (tests), replaces fdatasync.
	syncHook func(f *os.File) error
	// The maintainer's failures, logged without flooding.
	retireLog, rotateLog, delsLog *faillog.Log
}

func encodeRecord(dst []byte, kind byte, seq uint64, id string, payload []byte) []byte {
	var h [recHdrLen]byte
	copy(h[:], recMagic)
	h[4] = kind
	h[5] = byte(len(id))
	binary.LittleEndian.PutUint64(h[8:], seq)
	binary.LittleEndian.PutUint32(h[16:], uint32(len(payload)))
	castagnoli := castagnoliTable()
	c := crc32.Update(0, castagnoli, h[4:20])
	c = crc32.Update(c, castagnoli, []byte(id))
	c = crc32.Update(c, castagnoli, payload)
	binary.LittleEndian.PutUint32(h[20:], c)
	dst = append(dst, h[:]...)
	dst = append(dst, id...)
	return append(dst, payload...)
}

// decodeRecord reads the record at the start of b; ok is false at the end
// of the segment's valid records (zeros, a torn write, another segment's
// stale bytes).
func decodeRecord(b []byte, seq uint64) (kind byte, id string, payload []byte, n int, ok bool) {
	if len(b) < recHdrLen || string(b[:4]) != recMagic {
		return 0, "", nil, 0, false
	}
	kind = b[4]
	idLen := int(b[5])
	plen := int(binary.LittleEndian.Uint32(b[16:]))
	if binary.LittleEndian.Uint64(b[8:]) != seq || (kind != recMsg && kind != recDel) || idLen == 0 ||
		plen < 0 || recHdrLen+idLen+plen > len(b) {
		return 0, "", nil, 0, false
	}
	castagnoli := castagnoliTable()
	c := crc32.Update(0, castagnoli, b[4:20])
	c = crc32.Update(c, castagnoli, b[recHdrLen:recHdrLen+idLen+plen])
	if c != binary.LittleEndian.Uint32(b[20:]) {
		return 0, "", nil, 0, false
	}
	id = string(b[recHdrLen : recHdrLen+idLen])
	if !validID(id) {
		return 0, "", nil, 0, false
	}
	return kind, id, b[recHdrLen+idLen : recHdrLen+idLen+plen], recHdrLen + idLen + plen, true
}

// openJournal replays what a previous run left in dir and starts an empty
// journal; without create, a missing dir is no journal to replay.
func openJournal(s *Spool, dir string, create bool) (*journal, error) {
	j := &journal{s: s, dir: dir, idx: map[string]*jentry{}, syncReq: make(chan syncReq, 1024),
		retireLog: faillog.New(s.log, "spool: journal retirement", "tried again every 100ms"),
		rotateLog: faillog.New(s.log, "spool: journal rotation", "tried again every 100ms"),
		delsLog:   faillog.New(s.log, "spool: journal tombstones", "tried again every 100ms")}
	created := false
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if !create {
			return j, nil
		}
		created = true
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool journal %s: %w", dir, err)
	}
	if created {
		if err := s.fs.SyncDir(filepath.Dir(dir)); err != nil {
			return nil, fmt.Errorf("spool: fsync %s: %w", filepath.Dir(dir), err)
		}
	}
	if err := j.replay(create); err != nil {
		return nil, err
	}
	return j, nil
}

// replay makes every message of the segments in dir an msg/ file (or
// deletes the file of one removed later), then deletes the segments.
//
// When a message cannot be written to msg/ (a full disk), keep (the server
// opening its spool) makes the segments the journal's: their messages are
// delivered from memory and written to msg/ by the retirement once it can,
// and the server starts; else (the queue commands) it is an error.
func (j *journal) replay(keep bool) error {
	segs, err := segFiles(j.dir)
	if err != nil {
		return err
	}
	sc, err := j.scan(segs, false)
	if err != nil {
		return err
	}
	live, order, removed, segOf := sc.live, sc.order, sc.removed, sc.segOf
	if len(segs) > 0 {
		j.nextSeq = segs[len(segs)-1].seq + 1
	}
	dirty := false
	for id := range removed {
		for _, ext := range []string{".msg", ".env"} {
			if err := os.Remove(filepath.Join(j.s.msgDir, id+ext)); err == nil {
				dirty = true
			}
		}
	}
	restored := 0
	for _, id := range order {
		payload, ok := live[id]
		if !ok {
			continue
		}
		if have, err := os.ReadFile(filepath.Join(j.s.msgDir, id+".msg")); err == nil && bytes.Equal(have, payload) {
			continue
		}
		if err := j.writeMsg(id, payload); err != nil {
			if !keep {
				return err
			}
			j.s.log.Error("spool: journal replay cannot write its messages to msg/: they stay in the journal, delivered from memory, and are written when the retirement can",
				"segments", len(segs), "err", err)
			paths := make([]string, len(segs))
			seqs := make([]uint64, len(segs))
			for i, sg := range segs {
				paths[i], seqs[i] = filepath.Join(j.dir, sg.name), sg.seq
			}
			return j.adopt(paths, seqs, live, segOf)
		}
		restored++
		dirty = true
	}
	if dirty {
		if err := j.s.fs.SyncDir(j.s.msgDir); err != nil {
			return fmt.Errorf("spool: fsync %s: %w", j.s.msgDir, err)
		}
	}
	for _, sg := range segs {
		if err := os.Remove(filepath.Join(j.dir, sg.name)); err != nil {
			return fmt.Errorf("spool journal: %w", err)
		}
	}
	if len(segs) > 0 {
		if err := j.s.fs.SyncDir(j.dir); err != nil {
			return fmt.Errorf("spool: fsync %s: %w", j.dir, err)
		}
		j.s.log.Info("spool: journal replayed", "segments", len(segs), "messages", len(order), "restored", restored, "removed", len(removed))
	}
	return nil
}

// adopt makes the replayed segments (paths, seqs: oldest first) the
// journal's, appended to no more, and indexes every live message of them
// whose msg/ file is not written yet, as if just committed.
func (j *journal) adopt(paths []string, seqs []uint64, live map[string][]byte, segOf map[string]int) error {
	segs := make([]*segment, len(paths))
	for i, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			for _, sg := range segs[:i] {
				sg.f.Close()
			}
			return fmt.Errorf("spool journal: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			for _, sg := range segs[:i] {
				sg.f.Close()
			}
			return fmt.Errorf("spool journal: %w", err)
		}
		segs[i] = &segment{seq: seqs[i], path: p, f: f, size: fi.Size(), alloc: fi.Size(), created: time.Now(), broken: true}
	}
	j.segs = segs
	for id, payload := range live {
		if have, err := os.ReadFile(filepath.Join(j.s.msgDir, id+".msg")); err == nil && bytes.Equal(have, payload) {
			continue
		}
		dataLen, js, ok := splitPayload(payload)
		if !ok {
			j.s.log.Error("spool: journal record without a valid trailer", "id", id)
			continue
		}
		_, err := os.Stat(filepath.Join(j.s.msgDir, id+".env"))
		j.idx[id] = &jentry{seg: segs[segOf[id]], payload: payload, dataLen: dataLen, json: js, hasEnv: err == nil}
	}
	j.changed = time.Now()
	return nil
}

// splitPayload finds the data's length and the envelope in the bytes of a
// msg file: data, envelope JSON and newline, trailer line.
func splitPayload(p []byte) (dataLen int, js []byte, ok bool) {
	if len(p) < 2 || p[len(p)-1] != '\n' {
		return 0, nil, false
	}
	i := bytes.LastIndexByte(p[:len(p)-1], '\n')
	var jsonLen int
	if _, err := fmt.Sscanf(string(p[i+1:]), trailerMagic+" %d %d\n", &dataLen, &jsonLen); err != nil ||
		dataLen < 0 || jsonLen < 1 || dataLen+jsonLen != i+1 {
		return 0, nil, false
	}
	return dataLen, p[dataLen:i], true
}

// writeMsg writes msg/<id>.msg durably but for the directory fsync.
func (j *journal) writeMsg(id string, payload []byte) error {
	_, err := j.s.writeFile(id+".msg", filepath.Join(j.s.msgDir, id+".msg"), func(w io.Writer) (int64, error) {
		n, err := w.Write(payload)
		return int64(n), err
	})
	return err
}

// newSegment creates, preallocates and makes durable the next segment.
// Called with j.mu held.
func (j *journal) newSegment(min int64) (*segment, error) {
	seq := j.nextSeq
	j.nextSeq++
	p := filepath.Join(j.dir, fmt.Sprintf(segPrefix+"%016x", seq))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool journal: %w", err)
	}
	size := max(int64(journalSegSize), min)
	// Preallocated, an fdatasync of the segment writes no inode size;
	// where the file system cannot (tmpfs), it grows as it is written.
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		size = 0
	}
	err = f.Sync()
	if err == nil {
		err = j.s.fs.SyncDir(j.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(p)
		return nil, fmt.Errorf("spool journal %s: %w", p, err)
	}
	sg := &segment{seq: seq, path: p, f: f, alloc: size, created: time.Now()}
	j.segs = append(j.segs, sg)
	return sg, nil
}

// active returns the segment to append n bytes to. Called with j.mu held.
func (j *journal) active(n int) (*segment, error) {
	if len(j.segs) > 0 {
		sg := j.segs[len(j.segs)-1]
		if !sg.broken && (sg.size == 0 || sg.size+int64(n) <= max(sg.alloc, journalSegSize)) {
			return sg, nil
		}
	}
	return j.newSegment(int64(n))
}

// appendLocked writes the record build makes (n bytes long), with the
// tombstones waiting, at the end of the active segment. Called with j.mu
// held.
func (j *journal) appendLocked(n int, build func(seq uint64) []byte) (*segment, error) {
	sg, err := j.active(n + len(j.dels) + j.ndels*(recHdrLen-1))
	if err != nil {
		return nil, err
	}
	rec := build(sg.seq)
	buf := rec
	if len(j.dels) > 0 {
		buf = j.flushDels(sg, rec)
	}
	if n, err := sg.f.WriteAt(buf, sg.size); err != nil {
		// A partial record would end the segment's replay before the
		// records after it: it is taken back, and the next record is
		// written in its place (or, if that fails, in a new segment).
		j.takeBack(sg, sg.size, sg.size+int64(max(n, len(buf))))
		return nil, fmt.Errorf("spool journal %s: %w", sg.path, err)
	}
	sg.size += int64(len(buf))
	j.dels, j.ndels = j.dels[:0], 0
	return sg, nil
}

// flushDels re-encodes the waiting tombstones for segment sg in front of rec.
func (j *journal) flushDels(sg *segment, rec []byte) []byte {
	var out []byte
	for b := j.dels; len(b) > 0; {
		n := int(b[0])
		out = encodeRecord(out, recDel, sg.seq, string(b[1:1+n]), nil)
		b = b[1+n:]
	}
	return append(out, rec...)
}

// commit appends a message and returns once it is on stable storage and
// indexed.
func (j *journal) commit(ctx context.Context, id string, payload []byte, dataLen int, js []byte) error {
	j.mu.Lock()
	sg, err := j.appendLocked(recHdrLen+len(id)+len(payload), func(seq uint64) []byte {
		return encodeRecord(make([]byte, 0, recHdrLen+len(id)+len(payload)), recMsg, seq, id, payload)
	})
	if err != nil {
		j.mu.Unlock()
		return err
	}
	gen, end := sg.gen, sg.size
	sg.pending++
	j.mu.Unlock()

	err = j.sync(ctx, sg)

	j.mu.Lock()
	defer j.mu.Unlock()
	sg.pending--
	if err == nil && (sg.gen != gen || sg.synced < end) {
		// A failed fdatasync took the record back before this one
		// synced (it may not be on disk).
		err = fmt.Errorf("spool journal %s: an fdatasync failed before the record was synced", sg.path)
	}
	if err != nil {
		// Not acknowledged: make sure a replay does not bring it back.
		j.tombstone(id)
		return err
	}
	j.idx[id] = &jentry{seg: sg, payload: payload, dataLen: dataLen, json: js}
	j.changed = time.Now()
	return nil
}

// sync waits for an fdatasync of sg that started after the caller's write.
func (j *journal) sync(ctx context.Context, sg *segment) error {
	r := syncReq{sg, make(chan error, 1)}
	select {
	case j.syncReq <- r:
	case <-j.s.done:
		return errors.New("spool: closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.r:
		return err
	case <-j.s.done:
		return errors.New("spool: closed")
	}
}

// committer answers every sync request waiting when it starts with one
// fdatasync per segment.
func (j *journal) committer() {
	for {
		batch, ok := gather(j.syncReq, j.s.done, j.s.groupWait)
		if !ok {
			return
		}
		done := map[*segment]error{}
		for _, r := range batch {
			err, ok := done[r.seg]
			if !ok {
				// Every request of the batch was sent after its record
				// was written: the fdatasync covers them all.
				j.mu.Lock()
				end := r.seg.size
				j.mu.Unlock()
				err = j.fdatasync(r.seg.f)
				j.mu.Lock()
				if err == nil {
					r.seg.synced = max(r.seg.synced, end)
				} else {
					err = fmt.Errorf("spool journal: fdatasync %s: %w", r.seg.path, err)
					j.rewind(r.seg)
				}
				j.mu.Unlock()
				done[r.seg] = err
			}
			r.r <- err
		}
	}
}

func (j *journal) fdatasync(f *os.File) error {
	if j.syncHook != nil {
		return j.syncHook(f)
	}
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// remove forgets a journal message; unlink is true when its files (if
// any) are the caller's to delete: always when id is not in the journal,
// else when an updated envelope or the retirement wrote some.
func (j *journal) remove(id string) (unlink bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := j.idx[id]
	if e == nil {
		return true
	}
	if e.removed {
		return false
	}
	j.tombstone(id)
	j.changed = time.Now()
	if e.materialising {
		e.removed = true // the retirement deletes what it wrote
		return false
	}
	delete(j.idx, id)
	return e.hasEnv || e.written
}

// tombstone queues a removal record for id. Called with j.mu held.
func (j *journal) tombstone(id string) {
	j.dels = append(append(j.dels, byte(len(id))), id...)
	j.ndels++
}

// get returns the journal message id, nil if it is not (or no longer) one.
func (j *journal) get(id string) (e *jentry, gone bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e = j.idx[id]
	if e == nil {
		return nil, false
	}
	if e.removed {
		return nil, true
	}
	c := *e
	return &c, false
}

// updated records that msg/<id>.env now holds the envelope.
func (j *journal) updated(id string) {
	j.mu.Lock()
	if e := j.idx[id]; e != nil {
		e.hasEnv = true
		j.changed = time.Now()
	}
	j.mu.Unlock()
}

// ids lists the journal's messages.
func (j *journal) ids() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]string, 0, len(j.idx))
	for id, e := range j.idx {
		if !e.removed {
			out = append(out, id)
		}
	}
	return out
}

// maintain rotates the active segment when it is old or long enough,
// writes waiting tombstones, and retires old segments.
func (j *journal) maintain() {
	t := time.NewTicker(journalTick)
	defer t.Stop()
	for {
		select {
		case <-j.s.done:
			return
		case <-t.C:
		}
		j.mu.Lock()
		if n := len(j.segs); n > 0 {
			a := j.segs[n-1]
			if a.size > 0 && (time.Since(a.created) >= journalAge || a.size >= journalSegSize) {
				if _, err := j.newSegment(0); err != nil {
					j.rotateLog.Fail(err)
				} else {
					j.rotateLog.OK()
				}
			}
		}
		if len(j.dels) > 0 && len(j.segs) > 0 {
			if _, err := j.appendLocked(0, func(uint64) []byte { return nil }); err != nil {
				j.delsLog.Fail(err)
			} else {
				j.delsLog.OK()
			}
		}
		j.mu.Unlock()
		for j.retireOldest(false) {
		}
	}
}

// retireOldest retires the oldest segment if no commit into it is waiting
// and it is not the active one (unless active too: the spool is closing);
// true if it did.
func (j *journal) retireOldest(active bool) bool {
	j.retireMu.Lock()
	defer j.retireMu.Unlock()
	j.mu.Lock()
	if len(j.segs) == 0 || len(j.segs) == 1 && !active || j.segs[0].pending > 0 {
		j.mu.Unlock()
		return false
	}
	sg := j.segs[0]
	var ids []string
	var ents []*jentry
	for id, e := range j.idx {
		if e.seg == sg && !e.removed {
			e.materialising = true
			ids = append(ids, id)
			ents = append(ents, e)
		}
	}
	j.mu.Unlock()

	var failed error
	for i, id := range ids {
		if err := j.writeMsg(id, ents[i].payload); err != nil {
			failed = err
			break
		}
	}
	if failed == nil && len(ids) > 0 {
		if err := j.s.fs.SyncDir(j.s.msgDir); err != nil {
			failed = fmt.Errorf("spool: fsync %s: %w", j.s.msgDir, err)
		}
	}
	// A message removed meanwhile: its files go before its entry, which
	// makes readers see it gone until then (were the entry dropped first,
	// a rescan in between would find the file and deliver it again).
	j.mu.Lock()
	var gone []string
	for i, id := range ids {
		e := ents[i]
		e.materialising = false
		e.written = true // perhaps partly: Remove unlinks whatever is there
		if e.removed {
			gone = append(gone, id)
		}
	}
	j.mu.Unlock()
	for _, id := range gone {
		os.Remove(filepath.Join(j.s.msgDir, id+".msg"))
		os.Remove(filepath.Join(j.s.msgDir, id+".env"))
	}
	j.mu.Lock()
	for _, id := range gone {
		delete(j.idx, id)
	}
	j.mu.Unlock()
	if failed != nil {
		// The segment stays: its messages are served from memory and
		// replayed after a crash. Tried again at the next tick.
		j.retireLog.Fail(failed, "segment", sg.path)
		return false
	}
	// Tombstones that may name this segment's messages are written first.
	j.mu.Lock()
	if len(j.dels) > 0 {
		if _, err := j.appendLocked(0, func(uint64) []byte { return nil }); err != nil {
			j.mu.Unlock()
			j.delsLog.Fail(err)
			return false
		}
	}
	j.mu.Unlock()
	err := os.Remove(sg.path)
	if err == nil {
		err = j.s.fs.SyncDir(j.dir)
	}
	if err != nil {
		j.retireLog.Fail(err, "segment", sg.path)
		return false
	}
	j.retireLog.OK()
	j.mu.Lock()
	for id, e := range j.idx {
		if e.seg == sg {
			delete(j.idx, id) // an ordinary msg/ file from now on
		}
	}
	j.segs = j.segs[1:]
	j.changed = time.Now()
	j.mu.Unlock()
	sg.f.Close()
	return true
}

// settle retires every segment whose commits are answered (closing: the
// active one too, else it rotates first): afterwards every message
// committed before is an ordinary msg/ file, as the queue commands of
// another process see them.
func (j *journal) settle(closing bool) {
	if !closing {
		j.mu.Lock()
		if n := len(j.segs); n > 0 && j.segs[n-1].size > 0 {
			if _, err := j.newSegment(0); err != nil {
				j.rotateLog.Fail(err)
			}
		}
		j.mu.Unlock()
	}
	for j.retireOldest(closing) {
	}
}

// open returns a reader of a journal message's bytes with its added
// header fields in front.
func (e *jentry) open() (io.ReadCloser, error) {
	var r io.Reader = bytes.NewReader(e.payload[:e.dataLen])
	if bytes.Contains(e.json, []byte(`"headers":`)) {
		var h struct {
			Headers string `json:"headers"`
		}
		if err := json.Unmarshal(e.json, &h); err != nil {
			return nil, err
		}
		r = io.MultiReader(strings.NewReader(h.Headers), r)
	}
	return io.NopCloser(r), nil
}
