package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// TestServeCrashUnderLoadLosesNothing SIGKILLs the real `relayguard serve`
// while 50 sessions send to it (messages committed through the intake
// journal, several sessions' messages per fdatasync), restarts it on the
// same data directory, and checks that every message that got 250 is in
// the spool, byte for byte, and is then delivered. The next hop tempfails
// until the restart, so the acknowledged messages are in every state at the
// kill: in the journal only, retried (updated envelope), moved to msg/.
func TestServeCrashUnderLoadLosesNothing(t *testing.T) {
	sink := delivertest.StartSink(t, "-r", ".") // 450 to every message
	c := newCrashServe(t, sink.Addr)
	first := c.start()
	start := time.Now()

	load := startCrashLoad(c.mx, 50, func(w, i int) string {
		// Sizes from a few hundred bytes to past the journal's in-memory
		// limit (those are committed as their own file).
		lines := 5 + (w*31+i*17)%400
		if i%97 == 0 {
			lines = 10000
		}
		return crashMessage("crash", w, i, lines)
	})
	load.waitAcked(800)
	segs := c.journalSegments()
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	acked := map[string]string{} // queue id -> body
	for body, id := range load.finish() {
		acked[id] = body
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged before the kill")
	}
	if len(segs) == 0 {
		t.Fatal("no journal segment in the spool: the messages were not committed through the journal")
	}

	logs := c.start().logs // replays the journal before it listens
	sp := c.checkSpooled(acked)
	if t.Failed() {
		return
	}
	replayed := ""
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, "journal replayed") {
			replayed = l
		}
	}
	t.Logf("%d messages acknowledged before SIGKILL (%v), %d journal segments; after restart: %s", len(acked), time.Since(start).Round(time.Millisecond), len(segs), replayed)

	// The next hop accepts now: every acknowledged message arrives.
	sink.Restart(t)
	want := map[string]bool{}
	for _, body := range acked {
		want[strings.SplitN(body, "\r\n", 2)[0]] = true
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := map[string]bool{}
		for _, m := range sink.Messages(t) {
			for l := range strings.SplitSeq(m.Data, "\n") {
				if strings.HasPrefix(l, "Message-ID: <crash-") {
					got[l] = true
				}
			}
		}
		missing := 0
		for k := range want {
			if !got[k] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			for id, body := range acked {
				if k := strings.SplitN(body, "\r\n", 2)[0]; !got[k] {
					env, err := sp.Load(id)
					t.Errorf("not delivered: %s %s (%d bytes): %+v %v", id, k, len(body), env, err)
				}
			}
			t.Fatalf("%d of %d acknowledged messages not delivered after the restart", missing, len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("all delivered (%v)", time.Since(start).Round(time.Millisecond))
}
