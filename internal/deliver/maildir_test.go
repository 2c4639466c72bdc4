package deliver_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/relayguard/relayguard/internal/deliver"
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
