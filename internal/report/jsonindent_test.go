package report

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// encoderJSON is WriteJSON as it was (the reference): json.Encoder
// indenting by two spaces.
func encoderJSON(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestWriteJSONSameAsEncoder: the summary's JSON is the Encoder's, byte
// for byte, with keys holding what JSON escapes (quotes, backslashes, <>&,
// control bytes, invalid UTF-8, U+2028) and empty and nil tables.
func TestWriteJSONSameAsEncoder(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 12))
	pieces := []string{"a", "\"", "\\", "\\\"", "<", ">", "&", "\n", "\t", "\x00", "\x1f", "\xff", "é", "\u2028", "{", "}", "[", "]", ",", ":", " ", "1"}
	key := func() string {
		var b []byte
		for range r.IntN(8) {
			b = append(b, pieces[r.IntN(len(pieces))]...)
		}
		return string(b)
	}
	var node func(depth int) Node
	node = func(depth int) Node {
		n := Node{Key: key(), Count: r.Int64N(1 << 40)}
		if depth > 0 {
			n.Children = []Node{}
			for range r.IntN(4) {
				n.Children = append(n.Children, node(depth-1))
			}
		}
		return n
	}
	for trial := range 300 {
		s := &Summary{DateLabel: key(), Lines: r.Int64N(1000)}
		for range r.IntN(5) {
			s.Rejects = append(s.Rejects, node(r.IntN(3)))
			s.Master = append(s.Master, CountRow{key(), r.Int64N(9)})
		}
		if trial%3 == 0 {
			s.Warnings = []Node{}
			s.SMTPD = &SMTPDReport{PerDay: []ConnRow{{Key: key()}}}
		}
		var got bytes.Buffer
		if err := s.WriteJSON(&got); err != nil {
			t.Fatal(err)
		}
		if want := encoderJSON(t, s); !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("trial %d:\n%s\nwant\n%s", trial, got.Bytes(), want)
		}
	}
}

// TestAppendIndentedStrings: a string is copied to its closing quote, past
// escaped quotes and backslashes, whatever brackets it holds.
func TestAppendIndentedStrings(t *testing.T) {
	for _, src := range []string{`["a\"],{"]`, `{"k\\":"v\\\"[,"}`, `[[],{},[{}],""]`, `{"a":{"b":[1,2]}}`} {
		var want bytes.Buffer
		if err := json.Indent(&want, []byte(src), "", "  "); err != nil {
			t.Fatal(err)
		}
		if got := appendIndented(nil, []byte(src), "  "); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s: got\n%s\nwant\n%s", src, got, want.Bytes())
		}
	}
}
