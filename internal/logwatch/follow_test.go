package logwatch

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/store"
)

// syncBuffer is a log destination read while goroutines write.
type syncBuffer = hosttest.LogBuffer

// collector records lines handed out by a follower.
type collector struct {
	mu    sync.Mutex
	lines []string
}

func (c *collector) add(l string) {
	c.mu.Lock()
	c.lines = append(c.lines, l)
	c.mu.Unlock()
}

func (c *collector) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// waitFor waits (generously; this is not a speed assertion) until the
// collector has at least n lines.
func (c *collector) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(c.snapshot()) < n {
		if time.Now().After(deadline) {
			checkSequence(t, c.snapshot(), 0, n, true)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSequence asserts that got is exactly line(from) ... line(to-1). With
// anyOrder, the lines of files rotated between two polls may come in another
// order (their modification times can be equal), but each exactly once.
func checkSequence(t *testing.T, got []string, from, to int, anyOrder ...bool) {
	t.Helper()
	if len(anyOrder) > 0 && anyOrder[0] {
		got = append([]string(nil), got...)
		sort.Strings(got) // the numbers are zero-padded
	}
	if len(got) != to-from {
		seen := map[string]int{}
		for _, l := range got {
			seen[l]++
		}
		var dup, missing []string
		for i := from; i < to; i++ {
			l := testLine(i)
			switch seen[l] {
			case 0:
				missing = append(missing, l)
			case 1:
			default:
				dup = append(dup, l)
			}
		}
		t.Fatalf("got %d lines, want %d; missing %d %s, doubled %d %s", len(got), to-from, len(missing), firstLast(missing), len(dup), firstLast(dup))
	}
	for i, l := range got {
		if want := testLine(from + i); l != want {
			t.Fatalf("line %d = %q, want %q", i, l, want)
		}
	}
}

// firstLast abbreviates a list of test lines to their numbers.
func firstLast(ls []string) string {
	if len(ls) == 0 {
		return "[]"
	}
	num := func(l string) string { return l[len(l)-7:] }
	return "[" + num(ls[0]) + " .. " + num(ls[len(ls)-1]) + "]"
}

func testLine(i int) string {
	return fmt.Sprintf("Nov 23 10:00:00 mx1 postfix/smtpd[%07d]: warning: unknown[192.0.2.%d]: SASL LOGIN authentication failed: line %07d", i, i%250+1, i)
}

// writer appends numbered lines to a log file and rotates it on request.
type writer struct {
	mu   sync.Mutex
	path string
	f    *os.File
	n    int
	k    int // rotated files written so far
}

func newWriter(t *testing.T, path string) *writer {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return &writer{path: path, f: f}
}

func (w *writer) write(t *testing.T, count int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for range count {
		if _, err := io.WriteString(w.f, testLine(w.n)+"\n"); err != nil {
			t.Error(err)
			return
		}
		w.n++
	}
}

// rotateRename is logrotate's default: rename, and the daemon reopens.
func (w *writer) rotateRename(t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.k++
	if err := os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, w.k)); err != nil {
		t.Error(err)
	}
	w.f.Close()
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	w.f = f
}

// rotateCopyTruncate is logrotate's copytruncate. Lines written between the
// copy and the truncation are lost by copytruncate itself, for every reader;
// holding the writer's lock here models a copy and truncation with no write
// in between, so that any lost line is the follower's fault.
func (w *writer) rotateCopyTruncate(t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.k++
	b, err := os.ReadFile(w.path)
	if err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(fmt.Sprintf("%s.%d", w.path, w.k), b, 0o644); err != nil {
		t.Error(err)
	}
	if err := os.Truncate(w.path, 0); err != nil {
		t.Error(err)
	}
}

func TestFollowRotationWhileAppending(t *testing.T) {
	for _, mode := range []string{"rename", "copytruncate"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			w := newWriter(t, path)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var c collector
			var logBuf syncBuffer
			fl := &Follower{Path: path, Poll: 5 * time.Millisecond, FromStart: true, Log: slog.New(slog.NewTextHandler(&logBuf, nil))}
			defer func() {
				if t.Failed() {
					t.Log(logBuf.String())
					out, _ := exec.Command("ls", "-li", "--full-time", dir).CombinedOutput()
					t.Log(string(out))
				}
			}()
			done := make(chan error, 1)
			go func() { done <- fl.Run(ctx, c.add) }()

			// The writer appends continuously; rotations come every 25ms
			// (several poll intervals apart, as real rotations are; two
			// rotations within one poll are covered for rename but not for
			// a mix with copytruncate, see Follower).
			const batches, perBatch = 400, 25
			stop := make(chan struct{})
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				for range batches {
					w.write(t, perBatch)
					time.Sleep(200 * time.Microsecond)
				}
				close(stop)
			}()
			for k := 0; ; k++ {
				select {
				case <-stop:
				case <-time.After(25 * time.Millisecond):
					switch {
					case mode == "rename", mode == "mixed" && k%2 == 0:
						w.rotateRename(t)
					default:
						w.rotateCopyTruncate(t)
					}
					continue
				}
				break
			}
			<-wrote
			c.waitFor(t, batches*perBatch)
			time.Sleep(50 * time.Millisecond) // would a line come twice?
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			checkSequence(t, c.snapshot(), 0, batches*perBatch, true)
			if w.k == 0 {
				t.Fatal("no rotation happened")
			}
		})
	}
}

// After a restart the follower continues where it stopped: it neither
// re-reads old lines nor misses the ones written (and rotated) meanwhile.
func TestFollowRestart(t *testing.T) {
	dir := t.TempDir()
	db, err := store.OpenSQLite(t.Context(), filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	state, err := NewSQLiteState(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mail.log")
	w := newWriter(t, path)
	w.write(t, 100) // old lines, before the first start: never read

	run := func(t *testing.T, wantFrom, wantTo int, between func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(t.Context())
		var c collector
		fl := &Follower{Path: path, State: state, Poll: 5 * time.Millisecond}
		done := make(chan error, 1)
		go func() { done <- fl.Run(ctx, c.add) }()
		// Wait until the follower has positioned itself.
		for {
			if _, ok, _ := state.LoadPosition(t.Context(), fl.key()); ok {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		between()
		c.waitFor(t, wantTo-wantFrom)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		checkSequence(t, c.snapshot(), wantFrom, wantTo)
	}
	// First run: starts at the end, sees 100..299.
	run(t, 100, 300, func() { w.write(t, 200) })
	// Stopped: lines written, the file rotated by rename, more lines.
	w.write(t, 50)
	w.rotateRename(t)
	w.write(t, 50)
	run(t, 300, 450, func() { w.write(t, 50) })
	// Stopped: lines written, copytruncate, more lines.
	w.write(t, 30)
	w.rotateCopyTruncate(t)
	w.write(t, 20)
	run(t, 450, 520, func() { w.write(t, 20) })
	// Stopped with nothing new: nothing is re-read.
	run(t, 520, 530, func() { w.write(t, 10) })
}

func TestReadFileGzip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log.2.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	for i := range 1000 {
		fmt.Fprintln(zw, testLine(i))
	}
	zw.Close()
	f.Close()
	var c collector
	if err := ReadFile(t.Context(), path, c.add); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, c.snapshot(), 0, 1000)

	// Plain file, last line without a newline.
	plain := filepath.Join(dir, "mail.log.1")
	os.WriteFile(plain, []byte(testLine(0)+"\n"+testLine(1)), 0o644)
	var c2 collector
	if err := ReadFile(t.Context(), plain, c2.add); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, c2.snapshot(), 0, 2)

	if err := ReadFile(t.Context(), filepath.Join(dir, "missing.log"), c2.add); err == nil || !strings.Contains(err.Error(), "missing.log") {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestParseJournalJSON(t *testing.T) {
	// As printed by journalctl -o json (trimmed of some fields).
	line := `{"__CURSOR":"s=7f1c;i=2a1;b=9e;m=12;t=5f2;x=aa","__REALTIME_TIMESTAMP":"1795428901000000","_HOSTNAME":"mx1","SYSLOG_IDENTIFIER":"postfix/smtpd","_PID":"2231","MESSAGE":"warning: unknown[2001:db8::25]: SASL PLAIN authentication failed: ","PRIORITY":"4"}`
	e, cur, ok := ParseJournalJSON([]byte(line))
	if !ok || e.IP.String() != "2001:db8::25" || e.Mechanism != "PLAIN" || cur != "s=7f1c;i=2a1;b=9e;m=12;t=5f2;x=aa" {
		t.Fatalf("got %+v %q %v", e, cur, ok)
	}
	if !e.Time.Equal(time.UnixMicro(1795428901000000)) {
		t.Errorf("time = %s", e.Time)
	}
	// A MESSAGE that is not UTF-8 comes as an array of bytes.
	var nums []string
	for _, b := range []byte("lost connection after AUTH from unknown[192.0.2.7]") {
		nums = append(nums, fmt.Sprint(b))
	}
	line2 := `{"__CURSOR":"c2","SYSLOG_IDENTIFIER":"postfix/smtpd","MESSAGE":[` + strings.Join(nums, ",") + `]}`
	e, cur, ok = ParseJournalJSON([]byte(line2))
	if !ok || e.IP.String() != "192.0.2.7" || cur != "c2" {
		t.Fatalf("byte-array message: %+v %q %v", e, cur, ok)
	}
	// Other programs' lines give the cursor but no event.
	_, cur, ok = ParseJournalJSON([]byte(`{"__CURSOR":"c3","SYSLOG_IDENTIFIER":"cron","MESSAGE":"hello"}`))
	if ok || cur != "c3" {
		t.Fatalf("cron line: ok=%v cursor=%q", ok, cur)
	}
}

// ReplayFile (parallel, in place) and ReplayFileTransient (buffers reused,
// or the file mapped) find the same events in the same order as reading line by line, whatever
// the chunking, also around lines longer than a chunk.
func TestReplayFileMatchesSequential(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	var b strings.Builder
	for i := range 30000 {
		b.WriteString(testLine(i))
		b.WriteString("\n")
		if i%3 == 0 {
			b.WriteString("Nov 23 10:00:01 mx1 postfix/smtpd[9]: connect from unknown[192.0.2.1]\n")
		}
		if i%10000 == 5000 { // longer than a chunk (1 MiB)
			b.WriteString("Nov 23 10:00:01 mx1 postfix/smtpd[9]: warning: unknown[192.0.2.9]: SASL LOGIN authentication failed: " + strings.Repeat("x", 3<<20) + "\n")
		}
	}
	b.WriteString(testLine(30000)) // no final newline
	os.WriteFile(path, []byte(b.String()), 0o644)
	var seq []string
	p := &Parser{}
	if err := ReadFile(t.Context(), path, func(l string) {
		if e, ok := p.Parse(l); ok {
			seq = append(seq, e.IP.String()+" "+e.Detail[:min(len(e.Detail), 40)])
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The same lines gzipped: read through buffers (a plain file is mapped
	// by ReplayFileTransient).
	gz := filepath.Join(dir, "mail.log.1")
	var zb strings.Builder
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte(b.String()))
	zw.Close()
	os.WriteFile(gz, []byte(zb.String()), 0o644)
	for name, replay := range map[string]func(context.Context, string, func([]event.Event)) (int64, error){
		"ReplayFile": ReplayFile,
		"ReplayFileTransient": func(ctx context.Context, p string, s func([]event.Event)) (int64, error) {
			return ReplayFileTransient(ctx, p, func(k event.Kind) bool { return k == event.AuthFailure }, s)
		},
		"ReplayFile gzip": func(ctx context.Context, _ string, s func([]event.Event)) (int64, error) {
			return ReplayFile(ctx, gz, s)
		},
		"ReplayFileTransient gzip": func(ctx context.Context, _ string, s func([]event.Event)) (int64, error) {
			return ReplayFileTransient(ctx, gz, nil, s)
		},
	} {
		var par []string
		n, err := replay(t.Context(), path, func(evs []event.Event) {
			for _, e := range evs {
				// (copied: with ReplayFileTransient the strings are
				// valid only until the sink returns)
				par = append(par, e.IP.String()+" "+e.Detail[:min(len(e.Detail), 40)])
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != 40004 || len(seq) != 30004 || strings.Join(par, "\n") != strings.Join(seq, "\n") {
			t.Fatalf("%s: lines %d; sequential %d events, parallel %d", name, n, len(seq), len(par))
		}
	}
	// Events the sink does not want never reach it.
	n, err := ReplayFileTransient(t.Context(), path, func(k event.Kind) bool { return k == event.RelayDenied }, func(evs []event.Event) {
		t.Errorf("%d unwanted events sunk, first %+v", len(evs), evs[0])
	})
	if n != 40004 || err != nil {
		t.Fatalf("nothing kept: %d lines, %v", n, err)
	}
}

// A log that is there but cannot be opened at start (here a loop of
// symbolic links; permission denied for a guard not run as root) is said
// once, as an error, and tried again: once it can be read, its lines come.
// The source used to stop for good at the first failed open.
func TestFollowUnreadableAtStartRetried(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	if err := os.Symlink(path, path); err != nil { // opens with ELOOP
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	c := &collector{}
	f := &Follower{Path: path, Poll: 20 * time.Millisecond, FromStart: true, Log: slog.New(slog.NewTextHandler(logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	done := make(chan struct{})
	go func() { runErr = f.Run(ctx, c.add); close(done) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "cannot open the file") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged for the unreadable file:\n%s", logs)
		}
		select {
		case <-done:
			t.Fatalf("the follower stopped at an unreadable file (%v):\n%s", runErr, logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	time.Sleep(200 * time.Millisecond) // ~10 more tries
	if n := strings.Count(logs.String(), "cannot open the file"); n != 1 {
		t.Fatalf("said %d times, want once:\n%s", n, logs)
	}
	select {
	case <-done:
		t.Fatalf("the follower stopped at an unreadable file (%v):\n%s", runErr, logs)
	default:
	}
	// The operator mends it: the file's lines are read.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(testLine(0)+"\n"+testLine(1)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 2)
	checkSequence(t, c.snapshot(), 0, 2)
}
