package queue

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// While a server runs, the queue commands' read-only spool lists and shows
// the messages still in its journal (the ordinary admin spool sees them
// only once retired to msg/), refuses every change, stops listing one the
// server removed once its tombstone is written, and lists a retired one
// once, from its file.
func TestReadOnlySeesJournal(t *testing.T) {
	dir, s := newJournalSpool(t)
	var ids []string
	for try := 0; ; try++ {
		ids = putJournal(t, s, 3)
		ro, err := OpenReadOnly(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := listIDs(t, ro)
		files, _ := filepath.Glob(filepath.Join(dir, "msg", "*.msg"))
		if len(files) > 0 {
			// Retired already (a slow machine): the view was not needed.
			ro.Close()
			SettleJournal(s)
			for _, id := range ids {
				s.Remove(id)
			}
			if try == 5 {
				t.Fatal("every try was retired before the read-only spool opened")
			}
			continue
		}
		if !slices.Equal(got, sorted(ids)) {
			t.Fatalf("read-only spool lists %v, want the journal's %v", got, ids)
		}
		if admin, err := OpenForAdmin(dir, nil); err == nil {
			t.Logf("the admin spool (no view) lists %d of them", len(listIDs(t, admin)))
			admin.Close()
		}
		for i, id := range ids {
			if got := readAll(t, ro, id); got != journalBody(i) {
				t.Errorf("message %d read from the journal: %q", i, got)
			}
			if _, err := Hold(ro, id, "operator"); !errors.Is(err, errReadOnly) {
				t.Errorf("hold through the read-only spool: %v, want it refused", err)
			}
		}
		if err := ro.Remove(ids[0]); !errors.Is(err, errReadOnly) {
			t.Errorf("remove through the read-only spool: %v", err)
		}
		ro.Close()
		break
	}
	if err := s.Remove(ids[0]); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the tombstone to hide the removed message", func() bool {
		ro, err := OpenReadOnly(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		return slices.Equal(listIDs(t, ro), sorted(ids[1:]))
	})
	SettleJournal(s)
	ro, err := OpenReadOnly(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := listIDs(t, ro); !slices.Equal(got, sorted(ids[1:])) {
		t.Errorf("after the retirement: %v, want %v once each", got, ids[1:])
	}
	ro.Close()
	if _, err := os.Stat(filepath.Join(dir, "msg", ids[1]+".msg")); err != nil {
		t.Fatal(err)
	}
	// No server: the read-only spool replays nothing it should not.
	s.Close()
	ro, err = OpenReadOnly(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := listIDs(t, ro); !slices.Equal(got, sorted(ids[1:])) {
		t.Errorf("with no server: %v, want %v", got, ids[1:])
	}
}
