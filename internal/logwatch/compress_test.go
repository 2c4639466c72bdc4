package logwatch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// logrotate runs the real logrotate(8) once (forced) on path with
// copytruncate and compress but no delaycompress: it copies the file to
// path.1, truncates it and compresses the copy to path.1.gz at once
// (older copies move to path.2.gz ...).
func logrotate(t *testing.T, path string) {
	t.Helper()
	bin, err := exec.LookPath("logrotate")
	if err != nil {
		bin = "/usr/sbin/logrotate"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("CI: logrotate not installed (package logrotate)")
			}
			t.Skip("logrotate not installed")
		}
	}
	dir := filepath.Dir(path)
	conf := filepath.Join(dir, "logrotate.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("%s {\n\tcopytruncate\n\tcompress\n\trotate 5\n\tmissingok\n}\n", path)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--force", "--state", filepath.Join(dir, "logrotate.state"), conf).CombinedOutput(); err != nil {
		t.Fatalf("logrotate: %v\n%s", err, out)
	}
	if _, err := os.Stat(path + ".1.gz"); err != nil {
		out, _ := exec.Command("ls", "-l", dir).CombinedOutput()
		t.Fatalf("logrotate made no %s.1.gz:\n%s", filepath.Base(path), out)
	}
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Fatalf("logrotate left %s.1 uncompressed", filepath.Base(path))
	}
}

// TestFollowCopyTruncateCompressed (issue 12 item 13): with copytruncate
// and compress but no delaycompress, the lines written just before a
// rotation that the follower had not read yet are, when it next looks,
// only in mail.log.1.gz. They are read from there, once, before the lines
// written after the truncation — by a running follower (twice in a row)
// and by one started after the rotation.
func TestFollowCopyTruncateCompressed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	w := newWriter(t, path)
	var c collector
	var logBuf syncBuffer
	defer func() {
		if t.Failed() {
			t.Log(logBuf.String())
		}
	}()
	fl := &Follower{Path: path, FromStart: true, Log: slog.New(slog.NewTextHandler(&logBuf, nil)), buf: make([]byte, 4096)}
	if err := fl.start(t.Context(), c.add); err != nil {
		t.Fatal(err)
	}
	defer fl.cur.f.Close()
	w.write(t, 100)
	fl.step(c.add) // reads 0..99
	checkSequence(t, c.snapshot(), 0, 100)

	for round := range 2 {
		from := w.n
		w.write(t, 50) // not read before the rotation
		logrotate(t, path)
		w.write(t, 20) // the daemon goes on writing into the truncated file
		fl.step(c.add)
		checkSequence(t, c.snapshot()[from:], from, from+70)
		if round == 0 {
			w.write(t, 200) // the next truncation is found by the fingerprint, not the size
			fl.step(c.add)
			checkSequence(t, c.snapshot()[from+70:], from+70, from+270)
		}
	}

	// A follower that was not running during the rotation (positions in
	// the database) reads the rest from the compressed copy too.
	db, err := store.OpenSQLite(t.Context(), filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	state, err := NewSQLiteState(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var c2 collector
	f2 := &Follower{Path: path, State: state, Log: slog.New(slog.NewTextHandler(&logBuf, nil))}
	done := make(chan error, 1)
	go func() { done <- f2.Run(ctx, c2.add) }()
	for {
		if _, ok, _ := state.LoadPosition(t.Context(), f2.key()); ok {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	from := w.n
	w.write(t, 30)
	c2.waitFor(t, 30)
	cancel()
	<-done
	w.write(t, 40) // written while stopped, then rotated
	logrotate(t, path)
	w.write(t, 10)
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	go func() { done <- f2.Run(ctx, c2.add) }()
	c2.waitFor(t, 80)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkSequence(t, c2.snapshot(), from, from+80)
}
