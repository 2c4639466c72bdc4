package report

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/report/loggen"
)

// TestMappedFileSameReport reads a log of every shape as a plain file
// (ReadFiles maps it into memory, readMapped) and as a stream (ReadLines),
// and wants the same text and JSON report. The mapping is removed before
// ReadFiles returns, so a string the analyzer kept into a line instead of
// copying it would crash the Summary below, not pass.
func TestMappedFileSameReport(t *testing.T) {
	dropMapped = 64 << 10 // give pages back every 64 KiB counted (not parallel: a package variable)
	defer func() { dropMapped = 8 << 20 }()
	start := time.Date(2026, time.March, 30, 22, 0, 0, 0, time.UTC)
	newParser := func() *logline.Parser { return &logline.Parser{Year: 2026, Loc: time.UTC} }
	report := func(a *Analyzer) string {
		var out bytes.Buffer
		s := a.Summary()
		if err := s.WriteText(&out, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteJSON(&out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	for _, shape := range loggen.Shapes {
		var log bytes.Buffer
		if err := loggen.Write(&log, loggen.Options{Lines: 20000, Start: start, Seed: 7, Shape: shape, Abuse: true}); err != nil {
			t.Fatal(err)
		}
		// The last line without its newline.
		data := bytes.TrimSuffix(log.Bytes(), []byte("\n"))
		name := filepath.Join(t.TempDir(), shape+".log")
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		streamed := NewAnalyzer(DefaultOptions())
		if err := streamed.ReadLines(bytes.NewReader(data), newParser()); err != nil {
			t.Fatal(err)
		}
		mapped := NewAnalyzer(DefaultOptions())
		if err := mapped.ReadFiles(context.Background(), []string{name}, newParser); err != nil {
			t.Fatal(err)
		}
		if mapped.lines != streamed.lines || mapped.lines == 0 {
			t.Fatalf("%s: %d lines mapped, %d streamed", shape, mapped.lines, streamed.lines)
		}
		if got, want := report(mapped), report(streamed); got != want {
			t.Errorf("%s: the mapped file's report differs from the streamed one's", shape)
		}
	}
	// An empty file: nothing read, no error.
	empty := filepath.Join(t.TempDir(), "empty.log")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadFiles(context.Background(), []string{empty}, newParser); err != nil || a.lines != 0 {
		t.Fatalf("empty file: %d lines, %v", a.lines, err)
	}
}
