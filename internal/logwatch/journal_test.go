package logwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/store"
)

type eventList struct {
	mu sync.Mutex
	ev []event.Event
}

func (l *eventList) Publish(_ context.Context, e event.Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventList) get() []event.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]event.Event(nil), l.ev...)
}

// A real journal file (written by systemd-journal-remote from the export
// format) read by real journalctl: the source resumes after the saved
// cursor and turns entries into events.
func TestJournalResumesAfterCursor(t *testing.T) {
	remote := "/lib/systemd/systemd-journal-remote"
	_, err1 := os.Stat(remote)
	_, err2 := exec.LookPath("journalctl")
	if err1 != nil || err2 != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-journal-remote or journalctl missing")
		}
		t.Skip("systemd-journal-remote or journalctl missing")
	}
	dir := t.TempDir()
	var export bytes.Buffer
	ips := []string{"192.0.2.1", "2001:db8::25", "198.51.100.9"}
	for i, ip := range ips {
		fmt.Fprintf(&export, "__CURSOR=c%d\n__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=mx1\nSYSLOG_IDENTIFIER=postfix/smtpd\n_PID=22\nMESSAGE=warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n\n",
			i, 1795428901000000+i*1000000, 1000+i, ip)
	}
	jf := filepath.Join(dir, "test.journal")
	cmd := exec.Command(remote, "-o", jf, "-")
	cmd.Stdin = &export
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
	// The cursor of the first entry, as a previous run would have saved it.
	all, err := exec.Command("journalctl", "--file="+jf, "-o", "json", "--no-pager").Output()
	if err != nil {
		t.Fatal(err)
	}
	var first map[string]any
	json.Unmarshal(bytes.SplitN(all, []byte("\n"), 2)[0], &first)
	db, err := store.OpenSQLite(t.Context(), filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	state, err := NewSQLiteState(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	state.SavePosition(t.Context(), "journal", Position{Cursor: first["__CURSOR"].(string)})

	ctx, cancel := context.WithCancel(t.Context())
	var got eventList
	j := &Journal{Files: []string{jf}, State: state}
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx, &got) }()
	deadline := time.Now().Add(30 * time.Second)
	for len(got.get()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // would the first entry come too?
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ev := got.get()
	var seen []string
	for _, e := range ev {
		seen = append(seen, e.IP.String())
	}
	if strings.Join(seen, " ") != "2001:db8::25 198.51.100.9" {
		t.Fatalf("events from %v, want the two entries after the cursor", seen)
	}
	if !ev[0].Time.Equal(time.UnixMicro(1795428902000000)) || ev[0].Kind != event.AuthFailure {
		t.Fatalf("event %+v", ev[0])
	}
	// The cursor of the last entry was saved.
	p, ok, _ := state.LoadPosition(t.Context(), "journal")
	if !ok || p.Cursor == first["__CURSOR"] || p.Cursor == "" {
		t.Fatalf("saved cursor %q", p.Cursor)
	}
}
