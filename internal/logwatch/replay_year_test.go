package logwatch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
)

// The year of a traditional syslog timestamp is inferred per chunk, from
// the clock (ReplayFile's contract), not from the chunks the worker that
// parses it happened to take before: which those are depends on the
// scheduling, and a log whose months go back and forth ("Nov 30", "Jan 1",
// "Jul 1", then "Dec 4") gave the same "Dec 4" lines this year on one run
// and next year on another, so that watch --replay banned 15 addresses or
// 20 from the same file (review10). With one worker every chunk follows
// the first one on the same Parser: the "Dec 4" lines, chunks after it,
// must still get the year a fresh Parser gives them.
func TestReplayYearPerChunk(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var b strings.Builder
	b.WriteString("Nov 30 23:59:59 mx1 postfix/smtpd[1]: connect from unknown[198.51.100.1]\n")
	b.WriteString("Jan  1 00:00:00 mx1 postfix/smtpd[1]: connect from unknown[198.51.100.1]\n")
	b.WriteString("Jul  1 00:00:00 mx1 postfix/smtpd[1]: connect from unknown[198.51.100.1]\n")
	for b.Len() < 3*chunkSize/2 { // (the failures start in a later chunk)
		b.WriteString("Jul  1 00:00:01 mx1 postfix/smtpd[1]: connect from unknown[198.51.100.2]\n")
	}
	const dec4 = "Dec  4 %02d:%02d:%02d mx1 postfix/smtpd[1]: warning: unknown[203.0.113.%d]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n"
	for i := range 40000 {
		fmt.Fprintf(&b, dec4, i/3600%24, i/60%60, i%60, i/200+1)
	}
	path := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var fresh logline.Parser
	l, ok := fresh.Parse(fmt.Sprintf(strings.TrimSuffix(dec4, "\n"), 0, 0, 0, 1))
	if !ok {
		t.Fatal("the Dec 4 line does not parse")
	}
	want := l.Time.Year()
	for name, replay := range map[string]func(context.Context, string, func([]event.Event)) (int64, error){
		"ReplayFile": ReplayFile,
		"ReplayFileTransient": func(ctx context.Context, p string, s func([]event.Event)) (int64, error) {
			return ReplayFileTransient(ctx, p, nil, s)
		},
	} {
		years := map[int]int{}
		if _, err := replay(t.Context(), path, func(evs []event.Event) {
			for _, e := range evs {
				if e.Kind == event.AuthFailure {
					years[e.Time.Year()]++
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		if len(years) != 1 || years[want] != 40000 {
			t.Errorf("%s: the 40,000 Dec 4 failures by year %v, want all in %d", name, years, want)
		}
	}
}
