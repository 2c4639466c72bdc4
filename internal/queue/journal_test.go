package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func journalBody(i int) string {
	return fmt.Sprintf("Subject: j %d\r\n\r\n%s", i, strings.Repeat(fmt.Sprintf("line of message %d\r\n", i), 1+i%50))
}

// newJournalSpool opens a spool (with its intake journal) in a new
// temporary directory; the test's cleanup closes it.
func newJournalSpool(t *testing.T) (string, *Spool) {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenSpool(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return dir, s
}

// putJournal commits messages journalBody(0) to journalBody(n-1), one
// recipient each, and returns their queue ids in that order.
func putJournal(t *testing.T, s *Spool, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		id, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader(journalBody(i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

// journalSegs lists the segment files of the spool in dir, oldest first.
func journalSegs(dir string) []string {
	segs, _ := filepath.Glob(filepath.Join(dir, "journal", "seg-*"))
	return segs
}

// overwrite writes b at offset off of the file at path, as damage would.
func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// listIDs lists the spool's messages' IDs, sorted.
func listIDs(t *testing.T, s *Spool) []string {
	t.Helper()
	envs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range envs {
		ids = append(ids, e.ID)
	}
	return ids
}

func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// replayedIDs replays a crash copy of the spool in dir and lists what it
// holds then.
func replayedIDs(t *testing.T, dir string) []string {
	t.Helper()
	r, err := OpenSpool(crashCopy(t, dir), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return listIDs(t, r)
}

// crashCopy copies the spool directory as a crash would leave it: what the
// running spool wrote so far, without anything Close would do.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "spool")
	if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(filepath.Join(dst, "lock"))
	return dst
}

func readAll(t *testing.T, s *Spool, id string) string {
	t.Helper()
	rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Messages committed by concurrent sessions go to the journal, not to
// files; a crash copy replays every one of them byte for byte, minus the
// removed ones, and leaves no segment behind.
func TestJournalReplay(t *testing.T) {
	dir, s := newJournalSpool(t)
	ids := make([]string, 40)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			env := &Envelope{From: "a@example.org", Recipients: []Recipient{{Addr: fmt.Sprintf("r%d@example.net", i)}},
				Headers: "X-Tag: " + fmt.Sprint(i) + "\r\n"}
			id, err := s.Put(context.Background(), env, strings.NewReader(journalBody(i)))
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	if files, _ := filepath.Glob(filepath.Join(dir, "msg", "*.msg")); len(files) != 0 {
		t.Fatalf("%d message files written at commit; want them in the journal", len(files))
	}
	if segs := journalSegs(dir); len(segs) == 0 {
		t.Fatal("no journal segment")
	}
	for i, id := range ids {
		if got, want := readAll(t, s, id), "X-Tag: "+fmt.Sprint(i)+"\r\n"+journalBody(i); got != want {
			t.Fatalf("message %d from the journal: %q, want %q", i, got, want)
		}
	}
	// Delivered ones are removed; one is updated (a deferred recipient).
	for _, id := range ids[:10] {
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	env, err := s.Load(ids[10])
	if err != nil {
		t.Fatal(err)
	}
	env.Recipients[0].Attempts = 3
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(); len(list) != 30 {
		t.Fatalf("listed %d, want 30", len(list))
	}
	s.j.mu.Lock() // the tombstones a tick would write
	if _, err := s.j.appendLocked(0, func(uint64) []byte { return nil }); err != nil {
		t.Fatal(err)
	}
	s.j.mu.Unlock()

	crashed := crashCopy(t, dir)
	r, err := OpenSpool(crashed, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	list, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 30 {
		t.Fatalf("after replay: %d messages, want 30", len(list))
	}
	for i, id := range ids {
		_, err := r.Load(id)
		if i < 10 {
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("removed message %d back after replay: %v", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got, want := readAll(t, r, id), "X-Tag: "+fmt.Sprint(i)+"\r\n"+journalBody(i); got != want {
			t.Fatalf("message %d after replay: %q, want %q", i, got, want)
		}
	}
	if e, _ := r.Load(ids[10]); e.Recipients[0].Attempts != 3 {
		t.Errorf("updated envelope lost in the replay: %+v", e)
	}
	if segs := journalSegs(crashed); len(segs) != 0 {
		t.Errorf("segments left after replay: %v", segs)
	}
}

// A torn tail (a record half written when the power went) ends the
// segment's replay; the records before it are whole.
func TestJournalTornTail(t *testing.T) {
	dir, s := newJournalSpool(t)
	ids := putJournal(t, s, 5)
	crashed := crashCopy(t, dir)
	segs := journalSegs(crashed)
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	// Cut the last record in half, as an unsynced write would be.
	s.j.mu.Lock()
	end := s.j.segs[0].size
	last := int64(recHdrLen + len(ids[4]) + len(s.j.idx[ids[4]].payload))
	s.j.mu.Unlock()
	overwrite(t, segs[0], end-last/2, make([]byte, last/2))
	r, err := OpenSpool(crashed, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, id := range ids[:4] {
		if got := readAll(t, r, id); !strings.HasSuffix(got, journalBody(i)) {
			t.Errorf("message %d: %q", i, got)
		}
	}
	if _, err := r.Load(ids[4]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("torn record replayed: %v", err)
	}
}

// A failed fdatasync fails the commit (no 250), and the message is neither
// listed nor brought back by a replay.
func TestJournalSyncFailure(t *testing.T) {
	dir, s := newJournalSpool(t)
	s.j.syncHook = func(*os.File) error { return errors.New("injected fdatasync failure") }
	_, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader("lost\r\n"))
	if err == nil || !strings.Contains(err.Error(), "injected fdatasync failure") {
		t.Fatalf("Put = %v, want the fdatasync failure", err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("listed %d after a failed commit", len(list))
	}
	s.j.syncHook = nil
	ok, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader("kept\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenSpool(crashCopy(t, dir), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	list, _ := r.List()
	if len(list) != 1 || list[0].ID != ok {
		t.Fatalf("after replay: %v, want only %s", list, ok)
	}
}

// Rotation and retirement make a message still queued an ordinary msg/
// file (what another process's queue commands read) and delete the
// segment; a large message is its own file from the start.
func TestJournalRetirement(t *testing.T) {
	dir, s := newJournalSpool(t)
	kept, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader(journalBody(1)))
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader(journalBody(2)))
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef012345678901234\r\n", journalMaxMessage/64+10)
	bigID, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", bigID+".msg")); err != nil {
		t.Fatalf("large message not in its own file: %v", err)
	}
	if err := s.Remove(gone); err != nil {
		t.Fatal(err)
	}
	SettleJournal(s)
	admin, err := OpenForAdmin(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	list, err := admin.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || readAll(t, admin, kept) != journalBody(1) || readAll(t, admin, bigID) != big {
		t.Fatalf("another process lists %d messages after the retirement, want %s and %s", len(list), kept, bigID)
	}
	if segs := journalSegs(dir); len(segs) != 1 {
		t.Errorf("segments after retirement: %v, want only the new active one", segs)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg", gone+".msg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed message written by the retirement: %v", err)
	}
}

// With no server running, the operator's queue commands replay what a
// killed server left in its journal; with one running, they leave the
// journal to it.
func TestJournalReplayedByAdminWhenIdle(t *testing.T) {
	dir, s := newJournalSpool(t)
	putJournal(t, s, 3)
	busy, err := OpenForAdmin(dir, nil) // the server holds the lock
	if err != nil {
		t.Fatal(err)
	}
	busy.Close()
	if segs := journalSegs(dir); len(segs) == 0 {
		t.Fatal("the queue commands replayed the journal of a running server")
	}
	crashed := crashCopy(t, dir)
	admin, err := OpenForAdmin(crashed, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if list, _ := admin.List(); len(list) != 3 {
		t.Fatalf("the queue commands list %d of the killed server's 3 messages", len(list))
	}
	if segs := journalSegs(crashed); len(segs) != 0 {
		t.Errorf("segments left: %v", segs)
	}
}

// Garbage written after a segment's last record (a torn write, a damaged
// disk block) is named in one warning line with the segment and offset;
// every record before it is replayed whole, and the spool opens.
func TestJournalDamagedTailNamed(t *testing.T) {
	dir, s := newJournalSpool(t)
	ids := putJournal(t, s, 3)
	s.j.mu.Lock()
	end := s.j.segs[0].size
	s.j.mu.Unlock()
	crashed := crashCopy(t, dir)
	segs := journalSegs(crashed)
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	// A header cut short, then garbage.
	overwrite(t, segs[0], end, append([]byte(recMagic+"\x01\x10"), bytes.Repeat([]byte{0xa5, 0x17}, 500)...))
	var logs bytes.Buffer
	r, err := OpenSpool(crashed, 0, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("a damaged journal tail stopped the spool from opening: %v", err)
	}
	defer r.Close()
	for i, id := range ids {
		if got := readAll(t, r, id); !strings.HasSuffix(got, journalBody(i)) {
			t.Errorf("message %d: %q", i, got)
		}
	}
	var damage []string
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, "damaged") {
			damage = append(damage, l)
		}
	}
	if len(damage) != 1 || !strings.Contains(damage[0], filepath.Base(segs[0])) || !strings.Contains(damage[0], fmt.Sprintf("offset=%d", end)) {
		t.Errorf("want one line naming the damage in %s at offset %d, got %q\n%s", segs[0], end, damage, logs.String())
	}
	if list, err := r.List(); err != nil || len(list) != 3 {
		t.Errorf("List after replay: %d messages, %v", len(list), err)
	}
}

// fullFS refuses new message files while full is set, as a full disk.
type fullFS struct {
	osFS
	full *atomic.Bool
}

func (f fullFS) Create(p string) (File, error) {
	if f.full.Load() && strings.HasSuffix(p, ".msg") {
		return nil, errors.New("injected: no space left on device")
	}
	return f.osFS.Create(p)
}

// A server killed with messages in its journal restarts on a full disk:
// the replay cannot write them to msg/, so it keeps their segments and
// the spool opens with every message listed and readable from memory
// (it refused to open: serve did not start). Once there is room, the
// retirement writes them to msg/ and deletes the segments.
func TestJournalReplayOnFullDisk(t *testing.T) {
	dir, s := newJournalSpool(t)
	ids := putJournal(t, s, 4)
	// One message was tried and deferred: its updated envelope is a file.
	env, err := s.Load(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	env.Recipients[0].Attempts = 3
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	crashed := crashCopy(t, dir)
	var full atomic.Bool
	full.Store(true)
	var logs bytes.Buffer
	r, err := openSpoolJournal(crashed, 0, slog.New(slog.NewTextHandler(&logs, nil)), fullFS{full: &full}, true)
	if err != nil {
		t.Fatalf("the spool did not open on a full disk with a journal to replay: %v", err)
	}
	defer r.Close()
	if !strings.Contains(logs.String(), "journal replay cannot write") {
		t.Errorf("the full disk is not logged:\n%s", logs.String())
	}
	check := func(when string) {
		t.Helper()
		list, err := r.List()
		if err != nil || len(list) != len(ids) {
			t.Fatalf("%s: List = %d messages, %v", when, len(list), err)
		}
		for i, id := range ids {
			if got := readAll(t, r, id); !strings.HasSuffix(got, journalBody(i)) {
				t.Errorf("%s: message %d: %q", when, i, got)
			}
		}
		if env, err := r.Load(ids[1]); err != nil || env.Recipients[0].Attempts != 3 {
			t.Errorf("%s: the updated envelope is lost: %+v %v", when, env, err)
		}
	}
	check("full disk")
	full.Store(false)
	r.j.settle(false)
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(crashed, "msg", id+".msg")); err != nil {
			t.Errorf("message %s not written to msg/ once there is room: %v", id, err)
		}
	}
	check("room again")
	if err := r.Remove(ids[0]); err != nil {
		t.Fatal(err)
	}
	r.Close()
	again, err := OpenSpool(crashed, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if list, err := again.List(); err != nil || len(list) != len(ids)-1 {
		t.Errorf("after a clean restart: %d messages, %v", len(list), err)
	}
}
