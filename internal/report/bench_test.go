package report

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/report/loggen"
)

// BenchmarkAnalyze measures lines per second over generated traffic.
func BenchmarkAnalyze(b *testing.B) {
	unpoisoned(b)
	var buf bytes.Buffer
	const lines = 100000
	loggen.Write(&buf, loggen.Options{Lines: lines, Start: time.Now().AddDate(0, 0, -2), Seed: 1})
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		a := NewAnalyzer(DefaultOptions())
		a.ReadLines(bytes.NewReader(data), &logline.Parser{})
		a.Summary().WriteText(io.Discard, nil)
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkFile reads the file named by env REPORT_BENCH_LOG, as the CLI does.
func BenchmarkFile(b *testing.B) {
	unpoisoned(b)
	name := os.Getenv("REPORT_BENCH_LOG")
	if name == "" {
		b.Skip("REPORT_BENCH_LOG not set")
	}
	for b.Loop() {
		a := NewAnalyzer(DefaultOptions())
		if err := a.ReadFiles(context.Background(), []string{name}, func() *logline.Parser { return &logline.Parser{} }); err != nil {
			b.Fatal(err)
		}
		a.Summary().WriteText(io.Discard, nil)
	}
}

// BenchmarkSummary builds and writes the report of the file named by env
// REPORT_BENCH_LOG, read once: the sorting and writing alone.
func BenchmarkSummary(b *testing.B) {
	unpoisoned(b)
	name := os.Getenv("REPORT_BENCH_LOG")
	if name == "" {
		b.Skip("REPORT_BENCH_LOG not set")
	}
	a := NewAnalyzer(DefaultOptions())
	if err := a.ReadFiles(context.Background(), []string{name}, func() *logline.Parser { return &logline.Parser{} }); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		a.Summary().WriteText(io.Discard, nil)
	}
}

// unpoisoned measures reading as the CLI reads: the tests' poisoning of
// recycled chunks (golden_test.go) costs a memset per MiB read.
func unpoisoned(b *testing.B) {
	poisonRecycled = false
	b.Cleanup(func() { poisonRecycled = true })
}
