package deliver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// The first message to a new mailbox: every directory created on the way
// (domain, mailbox, tmp/new/cur) has its parent fsynced, and new/ and tmp/
// after the link, so the message survives a crash once it counts as
// delivered.
func TestMaildirNewMailboxIsDurable(t *testing.T) {
	root := t.TempDir()
	var mu sync.Mutex
	var synced []string
	defer deliver.SetSyncDir(func(dir string) error {
		mu.Lock()
		synced = append(synced, dir)
		mu.Unlock()
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	})()
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"new.test": "maildir:" + root + "/{domain}/{local}"}
	r := s.deliverer(t).Deliver(context.Background(), "new.test", request("carol@new.test"))[0]
	if !r.OK {
		t.Fatalf("delivery: %+v", r)
	}
	box := filepath.Join(root, "new.test", "carol")
	for _, want := range []string{root, filepath.Join(root, "new.test"), box, filepath.Join(box, "new"), filepath.Join(box, "tmp")} {
		if !slices.Contains(synced, want) {
			t.Errorf("%s not fsynced (fsynced: %v)", want, synced)
		}
	}
}

// Maildir names are unique: many deliveries at once into one mailbox make
// as many files in new/.
func TestMaildirUniqueNames(t *testing.T) {
	root := t.TempDir()
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"busy.test": "maildir:" + root}
	d := s.deliverer(t)
	const n = 64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := d.Deliver(context.Background(), "busy.test", request("dave@busy.test"))[0]; !r.OK {
				t.Errorf("delivery: %+v", r)
			}
		}()
	}
	wg.Wait()
	ents, err := os.ReadDir(filepath.Join(root, "dave", "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n {
		t.Fatalf("new/ has %d files after %d deliveries", len(ents), n)
	}
}

// A failed directory fsync after the link into new/: the recipient is
// deferred only if the message left new/ again (else its retry would put
// a second copy in the mailbox); a failed fsync of tmp/ (the removal of
// the temporary name) does not defer a message that is durable in new/.
func TestMaildirFsyncFailureLeavesOneCopy(t *testing.T) {
	for _, failing := range []string{"new", "tmp"} {
		t.Run(failing, func(t *testing.T) {
			root := t.TempDir()
			s := newSetup(t)
			s.cfg.Transports = map[string]string{"box.test": "maildir:" + root}
			d := s.deliverer(t)
			// The mailbox exists before the fsync fails (its creation
			// fsyncs parents too).
			if r := d.Deliver(context.Background(), "box.test", request("erin@box.test"))[0]; !r.OK {
				t.Fatalf("first delivery: %+v", r)
			}
			restore := deliver.SetSyncDir(func(dir string) error {
				if filepath.Base(dir) == failing {
					return errors.New("injected: input/output error")
				}
				return nil
			})
			r := d.Deliver(context.Background(), "box.test", request("erin@box.test"))[0]
			restore()
			n := len(delivertest.ReadMaildir(t, filepath.Join(root, "erin")))
			switch {
			case failing == "new" && (!r.Temp || n != 1):
				t.Fatalf("new/ not fsynced: result %+v with %d messages in the mailbox, want deferred with only the first", r, n)
			case failing == "tmp" && (!r.OK || n != 2):
				t.Fatalf("tmp/ not fsynced: result %+v with %d messages in the mailbox, want delivered with 2", r, n)
			}
		})
	}
}
