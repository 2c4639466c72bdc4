package hosttest

import (
	"bytes"
	"strings"
	"sync"
)

// LogBuffer is a log destination a test reads while other goroutines
// (timers, background tasks) write to it.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the lines that contain every one of words.
func (l *LogBuffer) Lines(words ...string) []string {
	var out []string
	for s := range strings.SplitSeq(l.String(), "\n") {
		ok := s != ""
		for _, w := range words {
			ok = ok && strings.Contains(s, w)
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}
