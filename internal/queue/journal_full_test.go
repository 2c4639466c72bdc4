package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"
)

// tmpCounter counts the message files created in the spool's tmp/ (each
// retirement's try makes one), on the real file system.
type tmpCounter struct {
	osFS
	n *atomic.Int32
}

func (c tmpCounter) Create(p string) (File, error) {
	if filepath.Base(filepath.Dir(p)) == "tmp" {
		c.n.Add(1)
	}
	return c.osFS.Create(p)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// On a full disk (a real one: a small tmpfs) the journal's retirement,
// tried every 100 ms, logs its failure once, not at every try, and one
// line when it works again; commits that fail for want of space give
// back what they wrote instead of each opening a new segment file; once
// there is room, commits go on in the same segment, and a replay brings
// back exactly the acknowledged messages.
func TestJournalFullDisk(t *testing.T) {
	hosttest.OnSmallTmpfs(t, "16m", func(t *testing.T, mnt string) {
		var logs hosttest.LogBuffer
		dir := filepath.Join(mnt, "spool")
		var tries atomic.Int32
		s, err := openSpoolJournal(dir, 0, slog.New(slog.NewTextHandler(&logs, nil)), tmpCounter{n: &tries}, true)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		acked := putJournal(t, s, 3) // in the first segment, preallocated
		filler := hosttest.FillUp(t, mnt)

		// Rotated after 500 ms, the first segment cannot be retired: its
		// messages cannot be written to msg/. Let it fail 10 times.
		tries.Store(0)
		waitUntil(t, "10 failed retirements", func() bool { return tries.Load() >= 10 })
		if got := logs.Lines("journal retirement"); len(got) != 1 || !strings.Contains(got[0], "no space left on device") {
			t.Errorf("%d failed retirements logged in %d lines, want 1 naming the full disk: %q", tries.Load(), len(got), got)
		}

		// Commits fail (no 250) and leave no segment file behind.
		before := journalSegs(dir)
		for i := range 20 {
			if _, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader(journalBody(100+i))); err == nil {
				t.Fatalf("commit %d succeeded on a full disk", i)
			}
		}
		if after := journalSegs(dir); !slices.Equal(after, before) {
			t.Errorf("20 failed commits changed the segment files from %v to %v", before, after)
		}
		if got := logs.Lines("journal tombstones"); len(got) > 1 {
			t.Errorf("the failed commits' tombstones logged %d times: %q", len(got), got)
		}

		// Room again: the retirement writes the messages, says so once.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the retirement to write the messages to msg/", func() bool {
			for _, id := range acked {
				if _, err := os.Stat(filepath.Join(dir, "msg", id+".msg")); err != nil {
					return false
				}
			}
			return len(logs.Lines("journal retirement works again")) > 0
		})
		var failures int
		if got := logs.Lines("journal retirement"); len(got) != 2 || !strings.Contains(got[1], "works again") {
			t.Errorf("want the failure and one line when it works again, got %q", got)
		} else if _, err := fmt.Sscanf(got[1][strings.Index(got[1], "failures="):], "failures=%d", &failures); err != nil || failures < 10 {
			t.Errorf("the line saying it works again counts %d failures (%v), want the 10 or more: %s", failures, err, got[1])
		}
		segs := len(journalSegs(dir))
		more := putJournal(t, s, 3)
		if n := len(journalSegs(dir)); n > segs {
			t.Errorf("commits after the full disk opened %d new segment files", n-segs)
		}

		// A crash now: the replay brings back what was acknowledged, and
		// nothing of the failed commits.
		got, want := replayedIDs(t, dir), sorted(append(acked, more...))
		if !slices.Equal(got, want) {
			t.Errorf("after a replay: %v, want the acknowledged %v", got, want)
		}
		t.Logf("log:\n%s", logs.String())
	})
}

// A failed fdatasync fails every commit whose record it may have lost —
// the ones in its batch and the ones appended while it ran, even if the
// next fdatasync succeeds — and takes their records back: the next commit
// is written in their place in the same segment, and a replay brings back
// exactly the acknowledged messages.
func TestJournalSyncFailureTakesBack(t *testing.T) {
	dir, s := newJournalSpool(t)
	first := putJournal(t, s, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	s.j.syncHook = func(f *os.File) error {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
			return errors.New("injected fdatasync failure")
		}
		return syscall.Fdatasync(int(f.Fd()))
	}
	put := func(i int, res chan<- error) {
		_, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}, strings.NewReader(journalBody(i)))
		res <- err
	}
	inBatch, during := make(chan error, 1), make(chan error, 1)
	go put(10, inBatch)
	<-entered // its fdatasync has started
	s.j.mu.Lock()
	size := s.j.segs[len(s.j.segs)-1].size
	s.j.mu.Unlock()
	go put(11, during)
	waitUntil(t, "the second record to be written", func() bool {
		s.j.mu.Lock()
		defer s.j.mu.Unlock()
		return s.j.segs[len(s.j.segs)-1].size > size
	})
	close(release)
	if err := <-inBatch; err == nil || !strings.Contains(err.Error(), "injected fdatasync failure") {
		t.Errorf("the commit whose fdatasync failed: %v", err)
	}
	if err := <-during; err == nil {
		t.Error("a commit written while the failing fdatasync ran was acknowledged by the next one")
	}
	last := putJournal(t, s, 1)
	if segs := journalSegs(dir); len(segs) != 1 {
		t.Errorf("segments after a failed fdatasync: %v, want the one", segs)
	}
	got, want := replayedIDs(t, dir), sorted([]string{first[0], last[0]})
	if !slices.Equal(got, want) {
		t.Errorf("after a replay: %v, want the acknowledged %v", got, want)
	}
}
