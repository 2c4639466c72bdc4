package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// TestServeKilledDuringReplay SIGKILLs serve under load (so its journal
// holds messages not yet retired to msg/), starts it again and SIGKILLs it
// while it replays those segments (some messages written to msg/, the
// segments not yet deleted), then starts it a third time: every
// acknowledged message is in the spool byte for byte, each once (no two
// files hold the same message), and no segment of the first run is left.
func TestServeKilledDuringReplay(t *testing.T) {
	sink := delivertest.StartSink(t, "-r", ".") // 450 to every message: all stay queued
	c := newCrashServe(t, sink.Addr)
	first := c.start()
	// 30 to 200 KB each, under the journal's in-memory limit: a replay
	// of a few segments of them takes long enough to be interrupted.
	load := startCrashLoad(c.mx, 40, func(w, i int) string {
		lines := 1000 + (w*131+i*71)%5500
		return crashMessage("replay", w, i, lines)
	})
	load.waitAcked(400)
	first.kill(t)
	acked := map[string]string{} // queue id -> message
	for body, id := range load.finish() {
		acked[id] = body
	}
	segs := c.journalSegments()
	if len(acked) == 0 || len(segs) == 0 {
		t.Fatalf("%d acknowledged, %d journal segments left by the kill: nothing to replay", len(acked), len(segs))
	}
	msgDir := filepath.Join(c.data, "spool", "msg")
	msgs := func() int {
		m, _ := filepath.Glob(filepath.Join(msgDir, "*.msg"))
		return len(m)
	}
	before := msgs()

	// Killed as soon as the replay has written its first message.
	second := c.launch()
	for deadline := time.Now().Add(30 * time.Second); msgs() == before; time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatal("the replay wrote no message in 30 s")
		}
	}
	second.kill(t)
	during := msgs()
	left := c.journalSegments()
	if len(left) == 0 {
		t.Fatalf("the replay finished before the kill (%d messages written): it was not interrupted", during-before)
	}
	t.Logf("%d acknowledged; %d segments; msg/ files: %d before the replay, %d when it was killed, %d segments left",
		len(acked), len(segs), before, during, len(left))

	third := c.start()
	sp := c.checkSpooled(acked)
	for _, s := range left {
		if _, err := os.Stat(s); err == nil {
			t.Errorf("segment %s left after the replay", s)
		}
	}
	// No message twice: every Message-ID in one file only.
	files, _ := filepath.Glob(filepath.Join(msgDir, "*.msg"))
	seen := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // delivered or removed meanwhile
		}
		for l := range bytes.SplitSeq(b, []byte("\n")) {
			if mid, ok := bytes.CutPrefix(l, []byte("Message-ID: <replay-")); ok {
				if other, dup := seen[string(mid)]; dup {
					t.Errorf("message <replay-%s in two files: %s and %s", bytes.TrimSpace(mid), other, f)
				}
				seen[string(mid)] = f
			}
		}
	}
	list, err := sp.List()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(list))
	for _, e := range list {
		ids = append(ids, e.ID)
	}
	for id := range acked {
		if !slices.Contains(ids, id) {
			t.Errorf("acknowledged message %s not listed", id)
		}
	}
	if t.Failed() {
		t.Logf("third start:\n%s", third.logs.String())
	}
	t.Logf("after the third start: %d messages listed, %d files hold a test message", len(ids), len(seen))
}
