package report

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/report/loggen"
)

// BenchmarkAnalyze measures lines per second over generated traffic.
func BenchmarkAnalyze(b *testing.B) {
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
