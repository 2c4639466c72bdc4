package queue

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSpoolPutLoadList(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var notified []string
	var mu sync.Mutex
	s.Subscribe(func(id string) { mu.Lock(); notified = append(notified, id); mu.Unlock() })

	var wg sync.WaitGroup
	ids := make([]string, 20)
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			env := &Envelope{From: "a@example.org", Recipients: []Recipient{{Addr: "b@example.net"}}}
			id, err := s.Put(context.Background(), env, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		}(i)
	}
	wg.Wait()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 20 || len(notified) != 20 {
		t.Fatalf("listed %d, notified %d, want 20", len(list), len(notified))
	}
	env, err := s.Load(ids[3])
	if err != nil {
		t.Fatal(err)
	}
	if env.Size != int64(len("Subject: x\r\n\r\nbody\r\n")) || env.Recipients[0].Status != StatusQueued {
		t.Fatalf("envelope %+v", env)
	}
	env.Recipients[0].Status = StatusDelivered
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	env2, _ := s.Load(ids[3])
	if env2.Recipients[0].Status != StatusDelivered {
		t.Fatalf("update lost: %+v", env2)
	}
	rc, err := s.Open(ids[3])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("data %q", b)
	}
	if err := s.Remove(ids[3]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ids[3]); err == nil {
		t.Fatal("removed message still loads")
	}
	if _, err := s.Load("../etc/passwd"); err == nil {
		t.Fatal("path traversal id accepted")
	}
}

func TestSpoolRecoverRemovesHalfMessages(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y"}}}, strings.NewReader("m\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Leftovers of a crash: an .env without .msg, a half-written tmp file.
	os.WriteFile(filepath.Join(dir, "msg", "bbbb.env"), []byte("{}"), 0o640)
	os.WriteFile(filepath.Join(dir, "tmp", "cccc.msg"), []byte("x"), 0o640)
	s2, err := OpenSpool(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	list, _ := s2.List()
	if len(list) != 1 || list[0].ID != id {
		t.Fatalf("after recovery: %v", list)
	}
	for _, p := range []string{"msg/bbbb.env", "tmp/cccc.msg"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s survived recovery", p)
		}
	}
}

// failFS fails the chosen operation, as a full disk or an I/O error would.
type failFS struct {
	osFS
	failSync, failDir bool
}

type failFile struct {
	*os.File
	fail bool
}

func (f failFile) Sync() error {
	if f.fail {
		return errors.New("injected fsync failure")
	}
	return f.File.Sync()
}

func (f failFS) Create(p string) (File, error) {
	fl, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, err
	}
	return failFile{fl, f.failSync}, nil
}

func (f failFS) SyncDir(dir string) error {
	if f.failDir {
		return errors.New("injected directory fsync failure")
	}
	return f.osFS.SyncDir(dir)
}

func TestSpoolPutFailsWhenNotDurable(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   failFS
	}{{"file fsync", failFS{failSync: true}}, {"dir fsync", failFS{failDir: true}}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "msg"), 0o750)
			os.MkdirAll(filepath.Join(dir, "tmp"), 0o750)
			s, err := openSpool(dir, 0, nil, tc.fs)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Put(context.Background(), &Envelope{Recipients: []Recipient{{Addr: "x@y"}}}, strings.NewReader("m\r\n"))
			if err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("Put = %v, want the injected failure", err)
			}
			list, _ := s.List()
			if len(list) != 0 {
				t.Fatalf("a message whose storage failed is listed: %v", list)
			}
		})
	}
}

func TestSpoolLoadRefusesEnvelopeWithoutMessage(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	env := &Envelope{Recipients: []Recipient{{Addr: "x@y.test"}}}
	id, err := s.Put(context.Background(), env, strings.NewReader("m\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	SettleJournal(s)
	if err := os.Remove(filepath.Join(dir, "msg", id+".msg")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(id); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a removed message = %v, want not-exist", err)
	}
}

// Entries names every message with the time its envelope was last updated
// (zero until it is), leaving out an envelope whose message is gone;
// Changed moves with every message stored, updated or removed.
func TestEntriesAndChanged(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func() string {
		id, err := s.Put(context.Background(), &Envelope{From: "a@example.org", Recipients: []Recipient{{Addr: "b@example.net", Status: StatusQueued}}},
			strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a, b := put(), put()
	c0, err := s.Changed()
	if err != nil {
		t.Fatal(err)
	}
	entries := func() map[string]time.Time {
		es, err := s.Entries()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]time.Time{}
		for _, e := range es {
			m[e.ID] = e.Changed
		}
		return m
	}
	if m := entries(); len(m) != 2 || !m[a].IsZero() || !m[b].IsZero() {
		t.Fatalf("fresh messages: %v", m)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := Hold(s, a, "test"); err != nil {
		t.Fatal(err)
	}
	c1, _ := s.Changed()
	if m := entries(); m[a].IsZero() || !m[b].IsZero() || !c1.After(c0) {
		t.Fatalf("after a hold: %v, changed %v -> %v", m, c0, c1)
	}
	time.Sleep(20 * time.Millisecond)
	if err := Delete(s, a); err != nil {
		t.Fatal(err)
	}
	// A leftover envelope without its message is no message.
	os.WriteFile(filepath.Join(dir, "msg", a+".env"), []byte("{}"), 0o640)
	c2, _ := s.Changed()
	if m := entries(); len(m) != 1 || !m[b].IsZero() || !c2.After(c1) {
		t.Fatalf("after a delete: %v, changed %v -> %v", m, c1, c2)
	}
}
