package queue_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// saveFailFS fails, while armed, the writes of a delivery round's
// envelope: the creation of msg/<id>.env's temporary file (a full disk),
// or the fsync of msg/ after its rename (an I/O error).
type saveFailFS struct {
	queue.OSFS
	syncFails bool // fail the directory fsync, not the creation
	armed     atomic.Bool
	failed    atomic.Int64
}

func (f *saveFailFS) Create(p string) (queue.File, error) {
	if !f.syncFails && f.armed.Load() && strings.Contains(filepath.Base(p), ".env.") {
		f.failed.Add(1)
		return nil, errors.New("injected: no space left on device")
	}
	return f.OSFS.Create(p)
}

func (f *saveFailFS) SyncDir(dir string) error {
	if f.syncFails && f.armed.Load() && filepath.Base(dir) == "msg" {
		f.failed.Add(1)
		return errors.New("injected: input/output error")
	}
	return f.OSFS.SyncDir(dir)
}

// A delivery round whose outcome cannot be written (the disk full, as when
// TestSchedulerDeliversEverything's maildir once got 11 of 10 messages):
// the recipient delivered in it must not be delivered again by the next
// round, which starts from the spool, where it is still queued. The
// message stays in flight and its round is written once the disk allows.
func TestUnsavedRoundNotDeliveredAgain(t *testing.T) {
	for _, tc := range []struct {
		name             string
		journal, syncErr bool
	}{
		{"journal/envelope-not-written", true, false},
		{"journal/dir-fsync-fails", true, true},
		{"files/envelope-not-written", false, false},
		{"files/dir-fsync-fails", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := &saveFailFS{syncFails: tc.syncErr}
			open := queue.OpenSpoolFS
			if tc.journal {
				open = queue.OpenSpoolJournalFS
			}
			sp, err := open(t.TempDir(), time.Millisecond, testLog(), fs)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sp.Close() })
			mbox := t.TempDir()
			// b.test's Maildir cannot be made (its parent is a file):
			// a real local delivery error, deferred every round.
			notDir := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(notDir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(map[string]string{"local.test": "maildir:" + mbox, "b.test": "maildir:" + notDir})
			id := put(t, sp, &queue.Envelope{From: "alice@sender.test", Recipients: rcpts("bob@local.test", "y@b.test")}, 1)
			fs.armed.Store(true)

			stop := startScheduler(t, sp, cfg)

			// Three failed writes: three rounds (retry_schedule 100ms),
			// each delivering bob again, or one round written three times.
			waitFor(t, "three failed writes of the round", func() bool { return fs.failed.Load() >= 3 })
			fs.armed.Store(false)
			waitFor(t, "a round after the written one", func() bool {
				env, err := sp.Load(id)
				return err == nil && env.Recipients[0].Status == queue.StatusDelivered && env.Recipients[1].Attempts >= 2
			})
			stop()
			if n := len(delivertest.ReadMaildir(t, filepath.Join(mbox, "bob"))); n != 1 {
				t.Errorf("bob's Maildir holds %d messages, want 1", n)
			}
			env, err := sp.Load(id)
			if err != nil {
				t.Fatal(err)
			}
			if r := env.Recipients[0]; r.Attempts != 1 {
				t.Errorf("bob@local.test: %d attempts recorded, want 1", r.Attempts)
			}
		})
	}
}

// Ten messages whose rounds cannot be saved (a full disk), each tried again
// 100 ms doubling: one log line for all their failures, not one per message
// and try; and a line once saving works again.
func TestUnsavedRoundsLoggedOnce(t *testing.T) {
	t.Parallel()
	fs := &saveFailFS{}
	sp, err := queue.OpenSpoolJournalFS(t.TempDir(), time.Millisecond, testLog(), fs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	mbox := t.TempDir()
	notDir := filepath.Join(t.TempDir(), "file") // b.test: deferred every round
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(map[string]string{"local.test": "maildir:" + mbox, "b.test": "maildir:" + notDir})
	var ids []string
	for i := range 10 {
		ids = append(ids, put(t, sp, &queue.Envelope{From: "alice@sender.test", Recipients: rcpts("bob@local.test", "y@b.test")}, i))
	}
	var logs hosttest.LogBuffer
	fs.armed.Store(true)
	startSchedulerLog(t, sp, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	waitFor(t, "40 failed saves", func() bool { return fs.failed.Load() >= 40 })
	if got := logs.Lines("saving a delivery round"); len(got) != 1 || !strings.Contains(got[0], "no space left on device") {
		t.Errorf("%d failed saves of 10 messages' rounds logged in %d lines, want 1: %q", fs.failed.Load(), len(got), got)
	}
	fs.armed.Store(false)
	waitFor(t, "every round saved", func() bool {
		for _, id := range ids {
			if env, err := sp.Load(id); err != nil || env.Recipients[0].Status != queue.StatusDelivered {
				return false
			}
		}
		return true
	})
	if got := logs.Lines("saving a delivery round"); len(got) < 2 || !strings.Contains(got[len(got)-1], "works again") {
		t.Errorf("no line says saving works again: %q", got)
	}
}

// An envelope update whose file was written but whose directory fsync
// failed is what every reader sees, journal or not, as a file's readers
// always did: the journal kept serving the envelope of the commit, so a
// hold that failed this way was not seen by the scheduler (and a round
// written this way showed its delivered recipients queued).
func TestUpdateSeenOnceWritten(t *testing.T) {
	t.Parallel()
	for _, journal := range []bool{true, false} {
		fs := &saveFailFS{syncFails: true}
		open := queue.OpenSpoolFS
		if journal {
			open = queue.OpenSpoolJournalFS
		}
		sp, err := open(t.TempDir(), time.Millisecond, testLog(), fs)
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		id := put(t, sp, &queue.Envelope{From: "alice@sender.test", Recipients: rcpts("bob@local.test")}, 1)
		fs.armed.Store(true)
		if _, err := queue.Hold(sp, id, "suspended"); err == nil {
			t.Fatalf("journal %v: the hold's failed fsync was not reported", journal)
		}
		env, err := sp.Load(id)
		if err != nil {
			t.Fatal(err)
		}
		if !env.Held || env.Recipients[0].Status != queue.StatusHeld {
			t.Errorf("journal %v: after an update written but not fsynced, Load gives held %v, recipient %s; want the update", journal, env.Held, env.Recipients[0].Status)
		}
	}
}
