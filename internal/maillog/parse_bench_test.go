package maillog

import (
	"os"
	"strings"
	"testing"
)

// BenchmarkParseToUnless reads relayguard's records of the log named by
// REPORT_SAME_LOG (the messages after "relayguard[pid]: "), or the
// corpus's records, as the report's reader does (one Parser: its time
// cache hits on a log's records, which come in order).
func BenchmarkParseToUnless(b *testing.B) {
	var lines []string
	if name := os.Getenv("REPORT_SAME_LOG"); name != "" {
		data, err := os.ReadFile(name)
		if err != nil {
			b.Fatal(err)
		}
		for l := range strings.Lines(string(data)) {
			if i := strings.Index(l, "]: time="); i >= 0 {
				lines = append(lines, l[i+len("]: "):])
			}
		}
	} else {
		lines = sameCorpus(b)
	}
	skip := func(k Kind) bool { return k == KindConnected || k == KindDisconnected }
	var r Record
	var p Parser
	b.ResetTimer()
	for i := range b.N {
		p.ParseToUnless(&r, lines[i%len(lines)], skip)
	}
}
