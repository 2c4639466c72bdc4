package report

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/report/loggen"
)

// Every test of the package reads with recycled chunks poisoned: a string
// kept into a read chunk (instead of a copy) shows as garbage in a report.
func init() { poisonRecycled = true }

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden/*.txt.gz from the current code")

// TestGoldenShapes pins the whole text and JSON report, byte for byte, on
// a small log of every generator shape (internal/report/loggen) under a
// few option sets: the speed work on the counting and sorting (issue 19)
// must not change a single row or the order of equal rows, which the
// comparison with pflogsumm (TestAgreesWithPflogsumm) checks only as sets.
// The expected reports were written by the code before that work
// (go test -run TestGoldenShapes -update-golden ./internal/report/); a
// difference is written to $TEST_ARTIFACTS (or the test's temp dir) for
// diffing.
func TestGoldenShapes(t *testing.T) {
	t.Parallel()
	variants := []struct {
		name string
		set  func(*Options)
	}{
		{"default", nil},
		{"limits", func(o *Options) {
			o.HostLimit, o.UserLimit, o.AbuseLimit = 5, 7, 3
			o.RejectDetail, o.WarningDetail, o.DeferralDetail, o.BounceDetail, o.SMTPDetail = 4, 4, 2, 2, 2
		}},
		{"zero", func(o *Options) {
			o.HostLimit, o.UserLimit, o.AbuseLimit = 0, 0, 0
			o.RejectDetail, o.WarningDetail, o.DeferralDetail, o.BounceDetail, o.SMTPDetail = 0, 0, 0, 0, 0
		}},
		{"options", func(o *Options) {
			o.IgnoreCase, o.VerboseMsgDetail, o.SMTPDStats, o.RejAddFrom = true, true, true, true
			o.AbuseLimit = -1
		}},
	}
	start := time.Date(2026, time.March, 30, 22, 0, 0, 0, time.UTC)
	for _, shape := range loggen.Shapes {
		var log bytes.Buffer
		if err := loggen.Write(&log, loggen.Options{Lines: 8000, Start: start, Seed: 19, Shape: shape, Abuse: true}); err != nil {
			t.Fatal(err)
		}
		for _, v := range variants {
			name := shape + "-" + v.name
			t.Run(name, func(t *testing.T) {
				o := DefaultOptions()
				if v.set != nil {
					v.set(&o)
				}
				// (the options' text lists every row already: no JSON)
				checkGolden(t, name, goldenReport(t, NewAnalyzer(o), log.Bytes(), v.name != "options"))
			})
		}
	}
}

// goldenReport reads log with a and returns its text report, followed by
// the JSON one when withJSON.
func goldenReport(t *testing.T, a *Analyzer, log []byte, withJSON bool) []byte {
	t.Helper()
	if err := a.ReadLines(bytes.NewReader(log), &logline.Parser{Year: 2026, Loc: time.UTC}); err != nil {
		t.Fatal(err)
	}
	s := a.Summary()
	var got bytes.Buffer
	if err := s.WriteText(&got, nil); err != nil {
		t.Fatal(err)
	}
	if withJSON {
		got.WriteString("\n==== JSON ====\n")
		if err := s.WriteJSON(&got); err != nil {
			t.Fatal(err)
		}
	}
	return got.Bytes()
}

// checkGolden compares got with testdata/golden/NAME.txt.gz (or rewrites
// it with -update-golden).
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".txt.gz")
	if *updateGolden {
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		zw.Write(got)
		zw.Close()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, z.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (write it with -update-golden)", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	want, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if bytes.Equal(got, want) {
		return
	}
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	out := filepath.Join(dir, "golden-"+name+".txt")
	os.WriteFile(out, got, 0o644)
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("%s: report differs from %s from line %d:\nwant %q\ngot  %q\n(whole report: %s)", name, path, i+1, w, g, out)
		}
	}
	t.Fatal(fmt.Sprintf("%s: report differs from %s", name, path))
}
