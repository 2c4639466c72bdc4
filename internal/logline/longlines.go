package logline

import (
	"bufio"
	"bytes"
)

// SkipLongLines is bufio.ScanLines for a Scanner whose buffer is max
// bytes, except that a line longer than max is skipped to its end and
// handed out as an empty token with *long set, instead of stopping the
// scan (bufio.ErrTooLong): anyone may log through /dev/log, and one such
// line in a syslog file or a journal export made a whole egress report,
// or audit's reading of the logs, stop there. The caller names the line.
func SkipLongLines(max int, long *bool) bufio.SplitFunc {
	skipping := false
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if skipping {
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				skipping, *long = false, true
				return i + 1, data[:0], nil
			}
			if atEOF {
				skipping, *long = false, true
				return len(data), data[:0], nil
			}
			return len(data), nil, nil
		}
		adv, tok, err := bufio.ScanLines(data, atEOF)
		if adv == 0 && tok == nil && err == nil && len(data) >= max {
			skipping = true
			return len(data), nil, nil
		}
		return adv, tok, err
	}
}
