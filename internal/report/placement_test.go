package report

import (
	"bytes"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/report/loggen"
)

// TestParsePlacementSame reads every generator shape with logwatch's
// events parsed by the reader for every line, by the client stage for
// every line, and by whichever is not the slowest (the default): the
// three reports must be the same, byte for byte, and the golden one
// (ReadLines moves the parse between its goroutines as they keep up).
func TestParsePlacementSame(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, time.March, 30, 22, 0, 0, 0, time.UTC)
	for _, shape := range loggen.Shapes {
		var log bytes.Buffer
		if err := loggen.Write(&log, loggen.Options{Lines: 8000, Start: start, Seed: 19, Shape: shape, Abuse: true}); err != nil {
			t.Fatal(err)
		}
		var want []byte
		for _, ahead := range []int8{1, -1, 0} {
			a := NewAnalyzer(DefaultOptions())
			a.parseAhead = ahead
			got := goldenReport(t, a, log.Bytes(), true)
			if want == nil {
				want = got
				checkGolden(t, shape+"-default", want)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: the report with parseAhead=%d differs from the one with every event parsed by the reader", shape, ahead)
			}
		}
	}
}
